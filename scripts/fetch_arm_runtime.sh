#!/usr/bin/env bash
# Fetch the aarch64 (Linux, glibc) runtimes that the ARM runners link against, from the PyPI
# aarch64 wheels (pip download, no install):
#   onnxruntime     -> lib/libonnxruntime.so.<ver> (+ libonnxruntime.so, libonnxruntime.so.1)
#   apache-tvm      -> lib/libtvm_runtime.so
#   apache-tvm-ffi  -> lib/libtvm_ffi.so, include/ (tvm/ffi/c_api.h, dlpack/dlpack.h)
# into ${EDGECONV_CACHE:-$HOME/.cache/edgeconv}/aarch64/. Idempotent: a fast no-op when the
# stamp file matches the requested versions.
#
# Env: EDGECONV_ARM_ORT_VERSION (default 1.32.0), EDGECONV_ARM_TVM_VERSION (0.27.0.post1),
#      EDGECONV_ARM_TVM_FFI_VERSION (0.1.14.post0), PYTHON (a python with pip).
# Usage: scripts/fetch_arm_runtime.sh [--force]    Prints the runtime directory (last line).
set -euo pipefail

CACHE="${EDGECONV_CACHE:-$HOME/.cache/edgeconv}"
DEST="$CACHE/aarch64"
ORT_VERSION="${EDGECONV_ARM_ORT_VERSION:-1.32.0}"
TVM_VERSION="${EDGECONV_ARM_TVM_VERSION:-0.27.0.post1}"
TVM_FFI_VERSION="${EDGECONV_ARM_TVM_FFI_VERSION:-0.1.14.post0}"
STAMP_TEXT="onnxruntime==$ORT_VERSION apache-tvm==$TVM_VERSION apache-tvm-ffi==$TVM_FFI_VERSION"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

log() { echo "fetch_arm_runtime: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

complete() {
    [[ -f "$1/STAMP" && "$(cat "$1/STAMP")" == "$STAMP_TEXT" && \
       -f "$1/lib/libonnxruntime.so" && -f "$1/lib/libtvm_runtime.so" && \
       -f "$1/lib/libtvm_ffi.so" && -f "$1/include/tvm/ffi/c_api.h" && \
       -f "$1/include/dlpack/dlpack.h" ]]
}

if [[ $FORCE -eq 0 ]] && complete "$DEST"; then
    echo "$DEST"
    exit 0
fi

# A python with pip: $PYTHON, else the project's venv, else python3.
HERE="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x "$HERE/.venv/bin/python" ]]; then PY="$HERE/.venv/bin/python"
else PY="$(command -v python3 || true)"; fi
[[ -n "$PY" ]] || die "no python found (set PYTHON)"
"$PY" -m pip --version >/dev/null 2>&1 || die "$PY has no pip"
command -v unzip >/dev/null || "$PY" -c 'import zipfile' || die "need unzip or python's zipfile"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/edgeconv-arm-rt.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

log "pip download (manylinux_2_28_aarch64, cp311): $STAMP_TEXT"
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux_2_28_aarch64 --python-version 311 --implementation cp --abi cp311 \
    "onnxruntime==$ORT_VERSION" "apache-tvm==$TVM_VERSION" "apache-tvm-ffi==$TVM_FFI_VERSION" \
    -d "$WORK/wheels" >&2 || die "pip download of the aarch64 wheels failed"

# extract WHEEL DEST MEMBER... (members are glob patterns)
extract() {
    local whl="$1" out="$2"; shift 2
    "$PY" - "$whl" "$out" "$@" <<'EOF'
import fnmatch, sys, zipfile
whl, out, pats = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if any(fnmatch.fnmatch(n, p) for p in pats)]
    if not names:
        sys.exit(f"nothing matching {pats} in {whl}")
    for n in names:
        z.extract(n, out)
EOF
}

shopt -s nullglob
ort_whl=("$WORK"/wheels/onnxruntime-*.whl)
tvm_whl=("$WORK"/wheels/apache_tvm-*.whl)
ffi_whl=("$WORK"/wheels/apache_tvm_ffi-*.whl)
shopt -u nullglob
[[ ${#ort_whl[@]} -eq 1 && ${#tvm_whl[@]} -eq 1 && ${#ffi_whl[@]} -eq 1 ]] || \
    die "unexpected wheel set: $(ls "$WORK/wheels")"

X="$WORK/x"
extract "${ort_whl[0]}" "$X" 'onnxruntime/capi/libonnxruntime.so*'
extract "${tvm_whl[0]}" "$X" 'tvm/lib/libtvm_runtime.so'
extract "${ffi_whl[0]}" "$X" 'tvm_ffi/lib/libtvm_ffi.so' 'tvm_ffi/include/*'

ort_lib="$(ls "$X"/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -1)"
[[ -n "$ort_lib" ]] || die "libonnxruntime.so.* not in ${ort_whl[0]} (the wheel layout changed)"

tmpdest="$CACHE/.aarch64.tmp.$$"
rm -rf "$tmpdest"
mkdir -p "$tmpdest/lib" "$tmpdest/include"
cp "$ort_lib" "$tmpdest/lib/"
ort_name="$(basename "$ort_lib")"
ln -s "$ort_name" "$tmpdest/lib/libonnxruntime.so.1"
ln -s "$ort_name" "$tmpdest/lib/libonnxruntime.so"
cp "$X/tvm/lib/libtvm_runtime.so" "$X/tvm_ffi/lib/libtvm_ffi.so" "$tmpdest/lib/"
cp -a "$X/tvm_ffi/include/." "$tmpdest/include/"
[[ -f "$tmpdest/include/dlpack/dlpack.h" ]] || die "dlpack/dlpack.h missing in ${ffi_whl[0]}"
for f in "$tmpdest"/lib/*.so*; do
    [[ -L "$f" ]] && continue
    magic="$(od -An -tx1 -N20 "$f" | tr -d ' \n')"
    # ELF, 64-bit, little endian, e_machine (bytes 18-19) = 0xb7 (EM_AARCH64)
    [[ "${magic:0:12}" == "7f454c460201" && "${magic:36:4}" == "b700" ]] || die "$f is not an aarch64 ELF"
done
echo "$STAMP_TEXT" > "$tmpdest/STAMP"
rm -rf "$DEST"
mv "$tmpdest" "$DEST"
log "installed aarch64 runtimes into $DEST"
echo "$DEST"
