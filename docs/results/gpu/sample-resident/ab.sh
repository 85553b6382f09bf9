#!/usr/bin/env bash
# LAB (not yet run): the sample-resident persistent HyperAttention tile kernel
# (HYPERATTN_GPU_TILES=hwr, sample-resident.patch) against the committed `_hw` kernel, same
# binary (.device/carry/hyperattn-new.xz built with the patch applied), on one GPU: test-gpu.sh
# with hwr, the two kernels' outputs compared bit for bit (n = 65536, h = 24), then alternating
# bench rounds at n = 131072 (ROUNDS, default 3) non-causal, and one causal round each.
set -u
cd "$(dirname "$0")/../../../.."
O=${OUT:-/tmp/out}; mkdir -p "$O"
{ grep -m1 'model name' /proc/cpuinfo; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } | tee "$O/gpu-env.txt"
[ -x /tmp/hn ] || { xz -dc .device/carry/hyperattn-new.xz > /tmp/hn; chmod +x /tmp/hn; }
HYPERATTN_GPU_TILES=hwr timeout 200 scripts/test-gpu.sh /tmp/hn > "$O/test-gpu-hwr.log" 2>&1; echo "test-gpu hwr: $(tail -1 "$O/test-gpu-hwr.log")"
python3 - <<'PY'
import numpy as np
rng = np.random.default_rng(5)
for name in ("q", "k", "v"):
    x = rng.standard_normal((1, 24, 65536, 64), dtype=np.float32)
    np.save(f"/tmp/{name}.npy", (x.view(np.uint32) & 0xffff0000).view(np.float32))  # bf16-representable
PY
for c in no yes; do
  f=""; [ $c = yes ] && f="--causal"
  for v in hw hwr; do
    HYPERATTN_GPU_TILES=$v timeout 120 /tmp/hn run --q /tmp/q.npy --k /tmp/k.npy --v /tmp/v.npy --out /tmp/o-$v-$c.npy --backend cuda $f > /dev/null 2>&1 || echo "run $v causal=$c failed"
  done
  cmp /tmp/o-hw-$c.npy /tmp/o-hwr-$c.npy && echo "causal=$c: hwr output = hw output, bit for bit"
done
for r in $(seq 1 ${ROUNDS:-3}); do
  for v in hw hwr; do
    echo "== $v round $r" | tee -a "$O/ab.log"
    HYPERATTN_GPU_TILES=$v HYPERATTN_GPU_PROFILE=1 timeout 120 /tmp/hn bench --backend cuda --n 131072 --heads 24 --modes hyper --causal no --repeats 20 2>&1 | tee -a "$O/ab.log" | grep -E " hyper |phases" | tail -3
  done
done
for v in hw hwr; do
  echo "== $v causal" | tee -a "$O/ab.log"
  HYPERATTN_GPU_TILES=$v HYPERATTN_GPU_PROFILE=1 timeout 120 /tmp/hn bench --backend cuda --n 131072 --heads 24 --modes hyper --causal yes --repeats 10 2>&1 | tee -a "$O/ab.log" | grep -E " hyper |phases" | tail -3
done
