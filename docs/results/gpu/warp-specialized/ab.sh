#!/usr/bin/env bash
# The warp-specialised HyperAttention tile kernel (HYPERATTN_GPU_TILES=ws) against the committed
# `_hw` kernel, and its persistent form (wsp), same binary (.device/carry/hyperattn-new.xz), on one GPU: test-gpu.sh with each,
# the two kernels' outputs compared bit for bit (n = 65536), then alternating bench rounds at n = 131072
# (ROUNDS, default 3) non-causal, and one causal round each.
set -u
cd "$(dirname "$0")/../../../.."
O=${OUT:-/tmp/out}; mkdir -p "$O"
{ grep -m1 'model name' /proc/cpuinfo; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } | tee "$O/gpu-env.txt"
[ -x /tmp/hn ] || { xz -dc .device/carry/hyperattn-new.xz > /tmp/hn; chmod +x /tmp/hn; }
for v in ws wsp; do HYPERATTN_GPU_TILES=$v timeout 200 scripts/test-gpu.sh /tmp/hn > "$O/test-gpu-$v.log" 2>&1; echo "test-gpu $v: $(tail -1 "$O/test-gpu-$v.log")"; grep -i fail "$O/test-gpu-$v.log" | head -5; done
python3 - <<'PY'
import numpy as np
rng = np.random.default_rng(5)
for name, shape in (("q", (1, 24, 65536, 64)), ("k", (1, 24, 65536, 64)), ("v", (1, 24, 65536, 64))):
    x = rng.standard_normal(shape, dtype=np.float32)
    x = (x.view(np.uint32) & 0xffff0000).view(np.float32)  # bf16-representable
    np.save(f"/tmp/{name}.npy", x)
PY
for c in no yes; do
  for v in hw ws wsp; do
    f=""; [ $c = yes ] && f="--causal"
    HYPERATTN_GPU_TILES=$v timeout 120 /tmp/hn run --q /tmp/q.npy --k /tmp/k.npy --v /tmp/v.npy --out /tmp/o-$v-$c.npy --backend cuda $f > /dev/null 2>&1 || echo "run $v causal=$c failed"
  done
  for v in ws wsp; do cmp /tmp/o-hw-$c.npy /tmp/o-$v-$c.npy && echo "causal=$c: $v output = hw output, bit for bit"; done
done
for r in $(seq 1 ${ROUNDS:-3}); do
  for v in hw ws wsp; do
    echo "== $v round $r" | tee -a "$O/ab.log"
    HYPERATTN_GPU_TILES=$v HYPERATTN_GPU_PROFILE=1 timeout 120 /tmp/hn bench --backend cuda --n 131072 --heads 24 --modes hyper --causal no --repeats 20 2>&1 | tee -a "$O/ab.log" | grep -E " hyper |phases" | tail -3
  done
done
for v in hw ws wsp; do
  echo "== $v causal" | tee -a "$O/ab.log"
  HYPERATTN_GPU_TILES=$v HYPERATTN_GPU_PROFILE=1 timeout 120 /tmp/hn bench --backend cuda --n 131072 --heads 24 --modes hyper --causal yes --repeats 10 2>&1 | tee -a "$O/ab.log" | grep -E " hyper |phases" | tail -3
done
