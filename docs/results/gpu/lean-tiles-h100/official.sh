#!/usr/bin/env bash
# Official figures of a clean static build (.device/rel/hyperattn.xz) on one GPU.
set -u
cd "$(dirname "$0")/../.."
O=${OUT:-/tmp/out}; mkdir -p "$O"
xz -dc .device/rel/hyperattn.xz > /tmp/hr && chmod +x /tmp/hr
{ grep -m1 'model name' /proc/cpuinfo; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; sha256sum /tmp/hr; } > "$O/env.txt"
timeout 300 scripts/test-gpu.sh /tmp/hr > "$O/test-gpu.log" 2>&1; echo "test-gpu: $(tail -1 "$O/test-gpu.log")"
python3 scripts/gpu-compare.py --bin /tmp/hr --repeats 10 --json "$O/gpu-compare.json" > "$O/gpu-compare.log" 2>&1
python3 - "$O/gpu-compare.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
for r in j['results']:
    print(r['n'], 'causal' if r['causal'] else 'non-causal', 'sdpa %.3f' % r['sdpa']['median_ms'], 'hyper %.4f' % r['gpu_hyper']['median_ms'],
          '%.2fx' % r['gpu_hyper']['speedup_vs_sdpa'], 'exact %.1f%%' % (100 * r['gpu_exact']['fraction_of_sdpa_tflops']))
PY
HYPERATTN_GPU_PROFILE=1 /tmp/hr bench --backend cuda --n 131072 --heads 24 --modes hyper --causal both --repeats 10 > "$O/bench-profile.log" 2>&1; grep -E " hyper |phases" "$O/bench-profile.log"
