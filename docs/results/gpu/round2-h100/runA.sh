#!/bin/bash
set -u
xz -dc .device/gpu/hyperattn.xz > /tmp/h && chmod +x /tmp/h
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/env.txt 2>&1
timeout 120 /tmp/h bench --backend cuda --n 4096 --heads 2 --modes hyper --repeats 1 > $OUT/warm.log 2>&1
echo "warm rc=$? $(( $(date +%s) - t0 ))s" >> $OUT/times.txt
for v in base t128 t256 t256m2 t128m2; do
  HYPERATTN_GPU_HYPER_KERNEL=$v HYPERATTN_GPU_PROFILE=1 timeout 60 /tmp/h bench --backend cuda --n 131072 --heads 24 --modes hyper --causal both --repeats 10 > $OUT/bench-$v.log 2>&1
  echo "$v rc=$? $(( $(date +%s) - t0 ))s" >> $OUT/times.txt
done
HYPERATTN_GPU_CV_SPLIT=1 HYPERATTN_GPU_PROFILE=1 timeout 60 /tmp/h bench --backend cuda --n 131072 --heads 24 --modes hyper --causal both --repeats 10 > $OUT/bench-split1.log 2>&1
echo "split1 $(( $(date +%s) - t0 ))s" >> $OUT/times.txt
python3 - <<'PY'
import numpy as np
r = np.random.default_rng(5)
def bf(a):
    b = a.astype(np.float32).view(np.uint32); b = ((b + 0x7fff + ((b >> 16) & 1)) & 0xffff0000).astype(np.uint32); return b.view(np.float32)
np.save('/tmp/q.npy', bf(r.standard_normal((4, 5003, 64))))
for x in 'kv': np.save(f'/tmp/{x}.npy', bf(r.standard_normal((2, 5003, 64))))
PY
for v in base t128 t256 t256m2 t128m2; do
  for c in "" "--causal"; do
    HYPERATTN_GPU_HYPER_KERNEL=$v timeout 60 /tmp/h run --q /tmp/q.npy --k /tmp/k.npy --v /tmp/v.npy --out /tmp/o-$v$c.npy $c --backend cuda > /dev/null 2>>$OUT/run-err.log
  done
done
python3 - > $OUT/bitwise.txt 2>&1 <<'PY'
import numpy as np
for c in ["", "--causal"]:
    b = np.load(f"/tmp/o-base{c}.npy")
    for v in ["t128", "t256", "t256m2", "t128m2"]:
        try:
            o = np.load(f"/tmp/o-{v}{c}.npy"); print(v, c or "non-causal", "identical" if np.array_equal(o, b) else f"max diff {np.abs(o-b).max()}")
        except Exception as e: print(v, c, "failed", e)
PY
echo "bitwise $(( $(date +%s) - t0 ))s" >> $OUT/times.txt
timeout 150 scripts/test-gpu.sh /tmp/h > $OUT/test-gpu.log 2>&1
echo "test rc=$? $(( $(date +%s) - t0 ))s" >> $OUT/times.txt
