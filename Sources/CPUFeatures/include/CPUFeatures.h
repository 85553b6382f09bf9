#ifndef HYPERATTN_CPUFEATURES_H
#define HYPERATTN_CPUFEATURES_H
/// 1 when the CPU supports AVX2 and FMA (what the kernels are compiled for), else 0.
int hyperattn_cpu_has_avx2_fma(void);
#endif
