#!/usr/bin/env bash
# usage: cmp.sh "A B ..."  — hyperattn run with each variant source on the same bf16-exact inputs
# (n = 65536, h = 24), causal and not; every output compared bit for bit with the first's.
set -u
cd "$(dirname "$0")/../.."
R=$PWD
[ -x /tmp/h ] || { xz -dc .device/lab/hyperattn.xz > /tmp/h; chmod +x /tmp/h; }
python3 - <<'PY'
import numpy as np
rng = np.random.default_rng(5)
for name in ("q", "k", "v"):
    x = rng.standard_normal((1, 24, 65536, 64), dtype=np.float32)
    np.save(f"/tmp/{name}.npy", (x.view(np.uint32) & 0xffff0000).view(np.float32))
PY
set -- $1
for c in no yes; do
  f=""; [ $c = yes ] && f="--causal"
  for v in "$@"; do
    HYPERATTN_LAB_KERNEL_SOURCE=$R/.device/lab/src/$v.cu timeout 120 /tmp/h run --q /tmp/q.npy --k /tmp/k.npy --v /tmp/v.npy --out /tmp/o-$v-$c.npy --backend cuda $f > /dev/null 2>&1 || echo "run $v causal=$c failed"
  done
  for v in "${@:2}"; do cmp -s /tmp/o-$1-$c.npy /tmp/o-$v-$c.npy && echo "causal=$c: $v = $1 bit for bit" || echo "causal=$c: $v DIFFERS from $1"; done
done
