"""Target names accepted by :func:`compile_tvm` -> TVM JSON-dict targets."""

from __future__ import annotations

import os
import platform

__all__ = ["resolve_target", "host_x86_flags", "TARGET_NAMES"]

TARGET_NAMES = ("x86", "x86-avx2", "x86-avx512", "arm64", "arm64-dotprod")


def host_x86_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def resolve_target(target) -> tuple[dict, str, bool]:
    """Return (json-dict target, family "x86"/"arm", is_host)."""
    if isinstance(target, dict):
        t = dict(target)
        triple = str(t.get("mtriple", ""))
        family = "arm" if ("aarch64" in triple or "arm" in triple) else "x86"
        host_arch = platform.machine()
        is_host = not triple or (family == "arm") == (host_arch in ("aarch64", "arm64"))
        return t, family, is_host
    if not isinstance(target, str):
        # a tvm.target.Target
        return resolve_target(dict(target.export()))
    name = target.lower()
    cores = _cores()
    if name == "x86":
        if platform.machine() not in ("x86_64", "AMD64"):
            raise ValueError("target 'x86' means the x86 host; use x86-avx2/x86-avx512 to cross-compile")
        flags = host_x86_flags()
        name = "x86-avx512" if "avx512f" in flags else "x86-avx2"
    if name == "x86-avx2":
        return {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "core-avx2", "num-cores": cores}, "x86", _is_x86()
    if name == "x86-avx512":
        return {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "skylake-avx512", "num-cores": cores}, "x86", _is_x86()
    if name in ("arm64", "aarch64"):
        return (
            {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"], "num-cores": 4},
            "arm",
            platform.machine() in ("aarch64", "arm64"),
        )
    if name == "arm64-dotprod":
        return (
            {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76", "mattr": ["+neon", "+dotprod"], "num-cores": 4},
            "arm",
            platform.machine() in ("aarch64", "arm64"),
        )
    raise ValueError(f"unknown target {target!r}; expected one of {TARGET_NAMES} or a JSON-dict TVM target")


def _is_x86() -> bool:
    return platform.machine() in ("x86_64", "AMD64")
