#!/usr/bin/env bash
# Fetch the onnxruntime C/C++ API headers (the pip wheel ships none) from the Debian package
# libonnxruntime-dev (Debian 13 "trixie": onnxruntime 1.21, ORT_API_VERSION 21) into
#   ${EDGECONV_CACHE:-$HOME/.cache/edgeconv}/onnxruntime-include
# Idempotent: a fast no-op when the headers are already there.
#
# On Debian 13+ the package comes from the system's own apt sources. On Debian 12 a temporary
# sources list is derived from the system's sources (suite "bookworm" -> "trixie") and used with
# private apt state directories; the system's apt configuration is not modified. No package host
# name is hard-coded here: the archive URIs are read from /etc/apt/sources.list{,.d/}.
#
# Usage: scripts/fetch_ort_headers.sh [--force]
# Prints the include directory on stdout (last line).
set -euo pipefail

CACHE="${EDGECONV_CACHE:-$HOME/.cache/edgeconv}"
DEST="$CACHE/onnxruntime-include"
PKG="libonnxruntime-dev"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

have_headers() {
    [[ -f "$1/onnxruntime_c_api.h" && -f "$1/onnxruntime_cxx_api.h" && \
       -f "$1/onnxruntime_cxx_inline.h" && -f "$1/onnxruntime_lite_custom_op.h" ]]
}

if [[ $FORCE -eq 0 ]] && have_headers "$DEST"; then
    echo "$DEST"
    exit 0
fi

log() { echo "fetch_ort_headers: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v apt-get >/dev/null || die "apt-get not found. Obtain the onnxruntime headers (>= 1.20: onnxruntime_c_api.h, onnxruntime_cxx_api.h, onnxruntime_cxx_inline.h, onnxruntime_lite_custom_op.h) yourself and set ONNXRUNTIME_INCLUDE_DIR."
command -v dpkg >/dev/null || die "dpkg not found"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/edgeconv-ort-headers.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

debian_major=0
if [[ -r /etc/debian_version ]]; then
    debian_major="$(sed -E 's/^([0-9]+).*/\1/;t;s/.*/0/' /etc/debian_version)"
fi

APT_OPTS=()
# As root, apt drops privileges to _apt for downloads, which cannot write into our private dirs.
[[ "$(id -u)" -eq 0 ]] && APT_OPTS+=(-o APT::Sandbox::User=root)
if [[ "$debian_major" -ge 13 ]] || apt-cache show "$PKG" >/dev/null 2>&1; then
    log "using the system apt sources"
else
    # Build a private sources list from the system's own sources, with bookworm -> trixie.
    SRC="$WORK/sources.list"
    : > "$SRC"
    files=()
    [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
    shopt -s nullglob
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do files+=("$f"); done
    shopt -u nullglob
    for f in "${files[@]}"; do
        case "$f" in
        *.sources)
            # deb822: emit one-line entries for stanzas of Types: deb that mention bookworm.
            awk -v out="$SRC" '
                function flush() {
                    if (types ~ /(^| )deb( |$)/ && uris != "" && suites ~ /bookworm/) {
                        n = split(uris, U, " "); m = split(suites, S, " ")
                        for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) {
                            s = S[j]; if (s !~ /bookworm/) continue
                            gsub(/bookworm/, "trixie", s)
                            opt = (signed != "") ? "[signed-by=" signed "] " : ""
                            print "deb " opt U[i] " " s " " comps >> out
                        }
                    }
                    types = uris = suites = comps = signed = ""
                }
                /^[ \t]*#/ { next }
                /^[ \t]*$/ { flush(); next }
                {
                    key = $1; sub(/:$/, "", key); $1 = ""; sub(/^ +/, "")
                    if (key == "Types") types = $0
                    else if (key == "URIs") uris = $0
                    else if (key == "Suites") suites = $0
                    else if (key == "Components") comps = $0
                    else if (key == "Signed-By") signed = $0
                }
                END { flush() }' "$f"
            ;;
        *.list)
            grep -E '^[[:space:]]*deb[[:space:]]' "$f" | grep 'bookworm' | sed 's/bookworm/trixie/g' >> "$SRC" || true
            ;;
        esac
    done
    [[ -s "$SRC" ]] || die "no Debian bookworm entries found in /etc/apt/sources.list{,.d}; cannot derive a trixie source. Set ONNXRUNTIME_INCLUDE_DIR to a directory with the onnxruntime headers instead."
    log "temporary sources:"; sed 's/^/  /' "$SRC" >&2
    mkdir -p "$WORK/lists/partial" "$WORK/archives/partial"
    APT_OPTS+=(-o "Dir::Etc::sourcelist=$SRC" -o "Dir::Etc::sourceparts=-"
              -o "Dir::State::Lists=$WORK/lists" -o "Dir::Cache::Archives=$WORK/archives"
              -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
              -o "APT::Get::List-Cleanup=0")
    log "apt-get update (private state in $WORK)"
    apt-get "${APT_OPTS[@]}" update >&2 || die "apt-get update with the trixie sources failed"
fi

mkdir -p "$WORK/deb" "$WORK/x"
log "apt-get download $PKG"
(cd "$WORK/deb" && apt-get "${APT_OPTS[@]}" download "$PKG" >&2) || die "apt-get download $PKG failed"
deb="$(ls "$WORK"/deb/*.deb | head -1)"
dpkg -x "$deb" "$WORK/x"
hdr="$(dirname "$(find "$WORK/x" -name onnxruntime_c_api.h | head -1)")"
[[ -n "$hdr" && "$hdr" != "." ]] || die "onnxruntime_c_api.h not found in $deb"

mkdir -p "$CACHE"
tmpdest="$CACHE/.onnxruntime-include.tmp.$$"
rm -rf "$tmpdest"
mkdir -p "$tmpdest"
cp -a "$hdr"/. "$tmpdest"/
basename "$deb" > "$tmpdest/SOURCE_PACKAGE"
have_headers "$tmpdest" || die "headers incomplete in $deb"
rm -rf "$DEST"
mv "$tmpdest" "$DEST"
log "installed headers from $(basename "$deb") into $DEST"
echo "$DEST"
