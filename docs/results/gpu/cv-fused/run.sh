#!/usr/bin/env bash
# cv_fused (default) against HYPERATTN_GPU_CV=split on one binary: test-gpu, bit-for-bit outputs,
# alternating bench rounds; then the official gpu-compare with the default.
set -u
cd "$(dirname "$0")/../../../.."
O=${OUT:-/tmp/out}; mkdir -p "$O"
xz -dc ${HYPERATTN_XZ:-.device/rel/hyperattn.xz} > /tmp/hr && chmod +x /tmp/hr
{ grep -m1 'model name' /proc/cpuinfo; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; sha256sum /tmp/hr; } > "$O/env.txt"
timeout 200 scripts/test-gpu.sh /tmp/hr > "$O/test-gpu.log" 2>&1; echo "test-gpu: $(tail -1 "$O/test-gpu.log")"
python3 - <<'PY'
import numpy as np
rng = np.random.default_rng(5)
for name in ("q", "k", "v"):
    x = rng.standard_normal((1, 24, 65536, 64), dtype=np.float32)
    np.save(f"/tmp/{name}.npy", (x.view(np.uint32) & 0xffff0000).view(np.float32))
PY
for c in no yes; do
  f=""; [ $c = yes ] && f="--causal"
  HYPERATTN_GPU_CV=split timeout 120 /tmp/hr run --q /tmp/q.npy --k /tmp/k.npy --v /tmp/v.npy --out /tmp/o-split-$c.npy --backend cuda $f > /dev/null 2>&1 || echo "split causal=$c failed"
  timeout 120 /tmp/hr run --q /tmp/q.npy --k /tmp/k.npy --v /tmp/v.npy --out /tmp/o-fused-$c.npy --backend cuda $f > /dev/null 2>&1 || echo "fused causal=$c failed"
  cmp -s /tmp/o-split-$c.npy /tmp/o-fused-$c.npy && echo "causal=$c: fused = split bit for bit" || echo "causal=$c: fused DIFFERS from split"
done | tee "$O/cmp.log"
for r in 1 2 3; do for v in split fused; do
  echo "== $v round $r"; e=""; [ $v = split ] && e=split
  HYPERATTN_GPU_CV=$e /tmp/hr bench --backend cuda --n 131072 --heads 24 --modes hyper --causal no --repeats 20 2>&1 | grep " hyper "
done; done | tee "$O/ab.log"
for v in split fused; do e=""; [ $v = split ] && e=split; echo "== $v profile"; HYPERATTN_GPU_CV=$e HYPERATTN_GPU_PROFILE=1 /tmp/hr bench --backend cuda --n 131072 --heads 24 --modes hyper --causal both --repeats 10 2>&1 | grep -E " hyper |phases"; done | tee "$O/bench-profile.log"
python3 scripts/gpu-compare.py --bin /tmp/hr --repeats 10 --json "$O/gpu-compare.json" > "$O/gpu-compare.log" 2>&1
python3 - "$O/gpu-compare.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
for r in j['results']:
    print(r['n'], 'causal' if r['causal'] else 'non-causal', 'sdpa %.3f (min %.3f)' % (r['sdpa']['median_ms'], r['sdpa']['min_ms']), 'hyper %.4f' % r['gpu_hyper']['median_ms'],
          '%.2fx' % r['gpu_hyper']['speedup_vs_sdpa'], 'exact %.1f%%' % (100 * r['gpu_exact']['fraction_of_sdpa_tflops']))
PY
