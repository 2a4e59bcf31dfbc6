#!/usr/bin/env bash
# Create (once) a small venv with onnxruntime 1.20.1 to prove that libedgeconv_ort.so loads into
# older runtimes (ORT API 20; onnxruntime 1.20 has no built-in DeformConv).
#   ${EDGECONV_CACHE:-$HOME/.cache/edgeconv}/ort120-venv
# Idempotent; prints the venv's python on stdout.
set -euo pipefail
CACHE="${EDGECONV_CACHE:-$HOME/.cache/edgeconv}"
VENV="$CACHE/ort120-venv"
PY="${PYTHON:-python3}"
if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import onnxruntime, onnx, numpy; assert onnxruntime.__version__.startswith("1.20.")' 2>/dev/null; then
    echo "$VENV/bin/python"; exit 0
fi
mkdir -p "$CACHE"
rm -rf "$VENV.tmp"
"$PY" -m venv "$VENV.tmp" >&2
"$VENV.tmp/bin/python" -m pip install -q --disable-pip-version-check "onnxruntime==1.20.1" "numpy<2.3" "onnx>=1.16,<1.24" >&2
rm -rf "$VENV"
mv "$VENV.tmp" "$VENV"
# venv scripts hard-code the creation path; python itself works after the move, pip is not needed.
echo "$VENV/bin/python"
