"""Host tools and aarch64 runtimes for the ARM (aarch64) builds and emulated runs.

* :func:`find_tools` locates the cross compiler, CMake and ``qemu-aarch64``; a missing tool raises
  :class:`ArmToolError` naming the Debian package to install.
* :func:`runtime_dir` returns the aarch64 onnxruntime / TVM runtimes fetched from PyPI's aarch64
  wheels by ``scripts/fetch_arm_runtime.sh`` (``${EDGECONV_CACHE:-~/.cache/edgeconv}/aarch64``),
  fetching them on first use.
* :func:`qemu_sysroot` returns the ``-L`` prefix for ``qemu-aarch64``: Debian's cross sysroot
  ``/usr/aarch64-linux-gnu`` plus an emulated ``/proc/cpuinfo`` of an aarch64 CPU. qemu-user 7.2
  passes the host's x86 ``/proc/cpuinfo`` through, and onnxruntime's cpuinfo library dereferences
  NULL on it (SIGSEGV while creating the first session); qemu looks every absolute path up under
  the ``-L`` prefix first, so a ``proc/cpuinfo`` file there is what the guest reads.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ArmToolError",
    "ArmTools",
    "find_tools",
    "tools_available",
    "cache_dir",
    "repo_root",
    "runtime_dir",
    "ort_include_dir",
    "qemu_sysroot",
    "file_lock",
    "DEBIAN_PACKAGES",
]

TRIPLE = "aarch64-linux-gnu"
CROSS_SYSROOT = Path("/usr") / TRIPLE

# tool -> Debian package that provides it
DEBIAN_PACKAGES = {
    f"{TRIPLE}-g++": "g++-aarch64-linux-gnu",
    f"{TRIPLE}-gcc": "gcc-aarch64-linux-gnu",
    "qemu-aarch64": "qemu-user",
    "cmake": "cmake",
}

_RUNTIME_FILES = ("lib/libonnxruntime.so", "lib/libtvm_runtime.so", "lib/libtvm_ffi.so",
                  "include/tvm/ffi/c_api.h", "include/dlpack/dlpack.h")
_ORT_HEADERS = ("onnxruntime_c_api.h", "onnxruntime_cxx_api.h", "onnxruntime_cxx_inline.h")


class ArmToolError(RuntimeError):
    """A host tool or runtime needed for the aarch64 builds / emulation is missing."""


@dataclass(frozen=True)
class ArmTools:
    cxx: str        # aarch64-linux-gnu-g++
    cc: str         # aarch64-linux-gnu-gcc
    cmake: str
    qemu: str       # qemu-aarch64
    sysroot: Path   # /usr/aarch64-linux-gnu (Debian's cross sysroot, the default qemu -L)


def _which(name: str) -> str | None:
    return shutil.which(name)


def find_tools(*, need_qemu: bool = True) -> ArmTools:
    """Locate the host tools; raise :class:`ArmToolError` listing the Debian packages to install."""
    found = {t: _which(t) for t in DEBIAN_PACKAGES}
    if not need_qemu:
        found.pop("qemu-aarch64")
    missing = [t for t, p in found.items() if p is None]
    if not (CROSS_SYSROOT / "lib" / "ld-linux-aarch64.so.1").exists():
        missing.append(str(CROSS_SYSROOT / "lib/ld-linux-aarch64.so.1"))
    if missing:
        pkgs = sorted({DEBIAN_PACKAGES.get(t, "libc6-dev-arm64-cross") for t in missing})
        raise ArmToolError(
            f"missing for the aarch64 build/emulation: {', '.join(missing)}. Install the Debian "
            f"packages: apt-get install {' '.join(pkgs)} "
            "(all of it: apt-get install cmake g++-aarch64-linux-gnu gcc-aarch64-linux-gnu "
            "binutils-aarch64-linux-gnu qemu-user)")
    return ArmTools(cxx=found[f"{TRIPLE}-g++"], cc=found[f"{TRIPLE}-gcc"], cmake=found["cmake"],
                    qemu=found.get("qemu-aarch64") or "", sysroot=CROSS_SYSROOT)


def tools_available(*, need_qemu: bool = True) -> tuple[bool, str]:
    """``(True, "")`` or ``(False, reason)``: for pytest skips and CLI messages."""
    try:
        find_tools(need_qemu=need_qemu)
    except ArmToolError as e:
        return False, str(e)
    return True, ""


def cache_dir() -> Path:
    """``${EDGECONV_CACHE:-~/.cache/edgeconv}``."""
    env = os.environ.get("EDGECONV_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgeconv"


#: the copy of ``runners/``, ``custom_ops/``, ``cmake/``, ``scripts/`` inside an installed wheel
#: (pyproject.toml ``wheel.packages``); read-only as far as we are concerned: builds go to the cache
PACKAGED_SOURCE = Path(__file__).resolve().parents[1] / "_src"


def repo_root() -> Path | None:
    """The source tree (with ``custom_ops/``, ``runners/``, ``cmake/``): ``EDGECONV_SOURCE_DIR``,
    else the checkout edgeconv runs from (editable install), else the wheel's copy
    (:data:`PACKAGED_SOURCE`); None when none of them has it."""
    env = os.environ.get("EDGECONV_SOURCE_DIR")
    cands = [Path(env)] if env else []
    cands += [Path(__file__).resolve().parents[2], PACKAGED_SOURCE]
    for c in cands:
        if (c / "runners" / "CMakeLists.txt").is_file() and (c / "custom_ops").is_dir():
            return c
    return None


@contextlib.contextmanager
def file_lock(path: Path):
    """Inter-process exclusive lock (concurrent builds by tests / other processes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run_script(script: Path, commands: list[str] | None) -> Path:
    env = dict(os.environ)
    env.setdefault("PYTHON", sys.executable)
    cmd = ["bash", str(script)]
    if commands is not None:
        commands.append(" ".join(cmd))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise ArmToolError(f"{script.name} failed (exit {p.returncode}):\n{p.stderr[-4000:]}")
    return Path(p.stdout.strip().splitlines()[-1])


def runtime_dir(*, fetch: bool = True, commands: list[str] | None = None) -> Path:
    """Directory with the aarch64 ``lib/`` (libonnxruntime, libtvm_runtime, libtvm_ffi) and
    ``include/`` (tvm-ffi C API, dlpack). ``EDGECONV_ARM_RUNTIME_DIR`` overrides; otherwise
    ``scripts/fetch_arm_runtime.sh`` fills ``<cache>/aarch64`` (pip download of the aarch64
    wheels) when ``fetch`` is true."""
    env = os.environ.get("EDGECONV_ARM_RUNTIME_DIR")
    d = Path(env) if env else cache_dir() / "aarch64"
    if all((d / f).exists() for f in _RUNTIME_FILES) and (env or (d / "STAMP").is_file()):
        return d
    if env:
        raise ArmToolError(f"EDGECONV_ARM_RUNTIME_DIR={env} lacks one of {', '.join(_RUNTIME_FILES)}")
    root = repo_root()
    script = root / "scripts" / "fetch_arm_runtime.sh" if root else None
    if not fetch or script is None or not script.is_file():
        raise ArmToolError(
            f"the aarch64 runtimes are not in {d}: run `bash scripts/fetch_arm_runtime.sh` "
            "(pip-downloads the manylinux aarch64 wheels of onnxruntime, apache-tvm, apache-tvm-ffi)")
    with file_lock(cache_dir() / ".aarch64.lock"):
        return _run_script(script, commands)


def ort_include_dir(*, fetch: bool = True, commands: list[str] | None = None) -> Path:
    """onnxruntime C/C++ API headers: ``ONNXRUNTIME_INCLUDE_DIR`` or
    ``<cache>/onnxruntime-include`` (filled by ``scripts/fetch_ort_headers.sh``)."""
    env = os.environ.get("ONNXRUNTIME_INCLUDE_DIR")
    d = Path(env) if env else cache_dir() / "onnxruntime-include"
    if all((d / h).is_file() for h in _ORT_HEADERS):
        return d
    root = repo_root()
    script = root / "scripts" / "fetch_ort_headers.sh" if root else None
    if env or not fetch or script is None or not script.is_file():
        raise ArmToolError(f"onnxruntime headers not found in {d}: run `bash scripts/fetch_ort_headers.sh` "
                           "or set ONNXRUNTIME_INCLUDE_DIR")
    with file_lock(cache_dir() / ".ort-headers.lock"):
        return _run_script(script, commands)


# An emulated 2-core Cortex-A72 (ARMv8.0-A, NEON/ASIMD), as Linux prints it.
_CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
    "CPU revision\t: 3\n\n" for i in range(2))


def qemu_sysroot() -> Path:
    """The ``qemu-aarch64 -L`` prefix: ``<cache>/aarch64-sysroot`` = Debian's cross sysroot
    (``lib`` symlink) + an aarch64 ``proc/cpuinfo`` (see the module docstring). Idempotent."""
    root = cache_dir() / "aarch64-sysroot"
    lib = root / "lib"
    cpuinfo = root / "proc" / "cpuinfo"
    target = CROSS_SYSROOT / "lib"
    ok = lib.is_symlink() and os.readlink(lib) == str(target) and cpuinfo.is_file() \
        and cpuinfo.read_text() == _CPUINFO
    if ok:
        return root
    with file_lock(cache_dir() / ".aarch64-sysroot.lock"):
        (root / "proc").mkdir(parents=True, exist_ok=True)
        if not (lib.is_symlink() and os.readlink(lib) == str(target)):
            tmp = root / f".lib.{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(target)
            os.replace(tmp, lib)
        tmp = cpuinfo.with_name(f".cpuinfo.{os.getpid()}")
        tmp.write_text(_CPUINFO)
        os.replace(tmp, cpuinfo)
    return root
