#!/usr/bin/env bash
# Idempotent set-up: system packages, onnxruntime headers, .venv with edgeconv installed editable.
# Called by `make setup`; safe to rerun (each step skips what is already there).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: Eigen (GEMM in the onnxruntime kernels), the aarch64 cross toolchain and
# qemu-user (ARM builds and emulated runs).
APT_PACKAGES=(cmake libeigen3-dev g++-aarch64-linux-gnu gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu qemu-user)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# onnxruntime's C/C++ API headers (not shipped in its wheel).
bash scripts/fetch_ort_headers.sh

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The constraints file pins torch to the CPU build on this machine (a bare `torch` would pull CUDA).
.venv/bin/python -m pip install -q -c constraints.txt -e '.[test]'
# pytorchcv (third-party models of `python -m edgeconv.bench models`): --no-deps, since its
# torchvision requirement (one model only) cannot load next to the CPU torch build.
.venv/bin/python -m pip install -q --no-deps "pytorchcv==$(sed -n 's/^pytorchcv==//p' constraints.txt)"

# aarch64 runtime libraries (onnxruntime, TVM) for the emulated ARM checks; needs the venv's pip.
PYTHON=.venv/bin/python bash scripts/fetch_arm_runtime.sh

# A second venv with onnxruntime 1.20 proves the kernel library loads into old releases too.
bash scripts/ort120_venv.sh
