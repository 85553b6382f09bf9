import CPUFeatures
import HyperAttention
print("hyperattn: CLI under construction")
