#!/usr/bin/env bash
# Builds hyperattn in release mode for x86-64-v3 (AVX2 + FMA), installing missing system packages
# first on Debian/Ubuntu.
#
#   scripts/build.sh [extra swift build args...]   e.g. --scratch-path /tmp/build
#   scripts/build.sh --deps-only                   only install the system packages, plus those the
#                                                  tests use (qemu-user: the old-CPU refusal test;
#                                                  NVRTC from PyPI: the CUDA source compile check)
#
# Swift emits no FMA instructions unless a target CPU is named, so the flags below are required
# for speed (kernels run 60-140x slower without them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SWIFT_FLAGS=(-c release -Xswiftc -target-cpu -Xswiftc haswell)
APT_PACKAGES=(libopenmpi-dev openmpi-bin pkg-config python3-numpy)
if [[ ${1:-} == --deps-only ]]; then
    APT_PACKAGES+=(qemu-user)
fi

install_dependencies() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "build.sh: not a Debian system; make sure these are installed: ${APT_PACKAGES[*]}" >&2
        return 0
    fi
    local missing=() package
    for package in "${APT_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$package")
        fi
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo)
        else
            echo "build.sh: missing packages (${missing[*]}) and no root or sudo to install them" >&2
            return 0
        fi
    fi
    echo "build.sh: installing ${missing[*]}" >&2
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
}

# NVRTC from PyPI (no GPU needed) for the tests' compile check of the CUDA kernel source, into
# .build-deps/nvrtc (git-ignored); skipped quietly when pip or the network is missing.
install_nvrtc() {
    ls .build-deps/nvrtc/nvidia/*/lib/libnvrtc.so* >/dev/null 2>&1 && return 0
    command -v python3 >/dev/null 2>&1 || return 0
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --target .build-deps/nvrtc \
        nvidia-cuda-nvrtc >/dev/null 2>&1 \
        || echo "build.sh: note: could not pip-install nvidia-cuda-nvrtc; the CUDA compile-check test will be skipped" >&2
}

install_dependencies
if [[ ${1:-} == --deps-only ]]; then
    install_nvrtc
    exit 0
fi

if ! command -v swift >/dev/null 2>&1; then
    echo "build.sh: error: swift not found; install Swift 6 from https://www.swift.org/install/" >&2
    exit 1
fi

swift build "${SWIFT_FLAGS[@]}" "$@"
echo "built: $(swift build "${SWIFT_FLAGS[@]}" "$@" --show-bin-path)/hyperattn"
