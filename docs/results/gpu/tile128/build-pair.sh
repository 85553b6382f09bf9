#!/usr/bin/env bash
# Builds the two static binaries that ab-and-compare.sh alternates, into .device/carry/:
#   hyperattn.xz        the committed code (HEAD)
#   hyperattn-clean.xz  HEAD + tile128.patch (128-key HyperAttention tiles)
# Run from the repository root on the development machine; leaves the work tree as it was.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
P=docs/results/gpu/tile128/tile128.patch
git diff --quiet -- Sources || { echo "build-pair.sh: Sources/ has uncommitted changes" >&2; exit 1; }
mkdir -p .device/carry
build() {
  swift build -c release --static-swift-stdlib -Xswiftc -target-cpu -Xswiftc haswell \
    --scratch-path .build-static --product hyperattn >/dev/null
  strip -o /tmp/hyperattn.stripped .build-static/release/hyperattn
  xz -T2 -6 -c /tmp/hyperattn.stripped > ".device/carry/$1"
}
build hyperattn.xz
git apply "$P"
trap 'git checkout -- Sources' EXIT
build hyperattn-clean.xz
ls -la .device/carry
