#!/usr/bin/env bash
# Build a debug copy of libedgeconv_ort with AddressSanitizer + UndefinedBehaviorSanitizer into
# build/asan and run the kernel tests (tests/custom_ops) against it, or the fuzz campaign.
#   scripts/sanitize.sh [extra pytest args]
#   scripts/sanitize.sh --fuzz [fuzz_kernels.py args, e.g. --cases 2000 --seed 0]
# Env: PYTHON (default: .venv/bin/python if present, else python3), EDGECONV_SANITIZE
# (default address,undefined), BUILD_DIR (default build/asan).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
SAN="${EDGECONV_SANITIZE:-address,undefined}"
BUILD="${BUILD_DIR:-build/asan}"
CXX="${CXX:-g++}"

scripts/fetch_ort_headers.sh >/dev/null
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S custom_ops -B "$BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Debug -DEDGECONV_SANITIZE="$SAN" \
      -DCMAKE_CXX_COMPILER="$CXX" >/dev/null
cmake --build "$BUILD" -j2
LIB="$ROOT/$BUILD/libedgeconv_ort.so"
[[ -f "$LIB" ]] || { echo "sanitize: $LIB not built" >&2; exit 1; }

# Python itself is not instrumented: the ASan runtime must come first in the process.
preload=""
if [[ "$SAN" == *address* ]]; then
    preload="$("$CXX" -print-file-name=libasan.so)"
fi
if [[ "$SAN" == *undefined* ]]; then
    preload="${preload:+$preload:}$("$CXX" -print-file-name=libubsan.so)"
fi

export EDGECONV_ORT_LIBRARY="$LIB"
export LD_PRELOAD="${preload}${LD_PRELOAD:+:$LD_PRELOAD}"
# Python and numpy "leak" by design; new/delete mismatches across onnxruntime are not ours.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:symbolize=1:alloc_dealloc_mismatch=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
if [[ "${1:-}" == "--fuzz" ]]; then
    shift
    echo "sanitize: fuzzing $LIB (LD_PRELOAD=$LD_PRELOAD)"
    # Debug build under ASan: much slower per case than the release build.
    exec "$PY" tests/custom_ops/fuzz_kernels.py --lib "$LIB" --timeout 300 "$@"
fi
echo "sanitize: running tests/custom_ops with $LIB (LD_PRELOAD=$LD_PRELOAD)"
# The 1.20-venv and benchmark tests run other interpreters / are slow under ASan: deselected.
exec "$PY" -m pytest -p no:cacheprovider -q tests/custom_ops \
    -k "not onnxruntime_1_20 and not bench_kernels" "$@"
