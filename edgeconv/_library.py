"""Locate ``libedgeconv_ort``, the onnxruntime custom-op library of edgeconv.

The library registers the ops ``edgeconv.DeformConv2d`` and ``edgeconv.DynamicConv2d`` (domain
``edgeconv``, version 1); load it with::

    so = onnxruntime.SessionOptions()
    so.register_custom_ops_library(edgeconv.get_library_path())

It is built by CMake (``custom_ops/``) during ``pip install`` and installed inside the ``edgeconv``
package. With an editable install (scikit-build-core "redirect" mode) ``edgeconv.__file__`` points
into the source tree while the library lies in ``site-packages/edgeconv/``; both places are searched.
The environment variable ``EDGECONV_ORT_LIBRARY`` (a path to the library file) takes precedence,
e.g. for the sanitizer build of ``scripts/sanitize.sh``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
from pathlib import Path

__all__ = ["get_library_path", "library_available", "LIBRARY_ENV"]

LIBRARY_ENV = "EDGECONV_ORT_LIBRARY"

if sys.platform == "win32":
    _NAMES = ("edgeconv_ort.dll", "libedgeconv_ort.dll")
elif sys.platform == "darwin":
    _NAMES = ("libedgeconv_ort.dylib", "libedgeconv_ort.so")
else:
    _NAMES = ("libedgeconv_ort.so",)


def _candidate_dirs() -> list[Path]:
    dirs: list[Path] = [Path(__file__).resolve().parent]
    try:
        spec = importlib.util.find_spec("edgeconv")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        dirs += [Path(p) for p in spec.submodule_search_locations]
    for key in ("platlib", "purelib"):
        try:
            dirs.append(Path(sysconfig.get_paths()[key]) / "edgeconv")
        except KeyError:
            pass
    for entry in sys.path:
        if entry and ("site-packages" in entry or "dist-packages" in entry):
            dirs.append(Path(entry) / "edgeconv")
    seen: set[str] = set()
    unique = []
    for d in dirs:
        key = str(d)
        if key not in seen:
            seen.add(key)
            unique.append(d)
    return unique


def _find() -> Path | None:
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return Path(env)
    for d in _candidate_dirs():
        for name in _NAMES:
            p = d / name
            if p.is_file():
                return p
    return None


def get_library_path() -> str:
    """Absolute path of the built ``libedgeconv_ort`` shared library.

    Raises FileNotFoundError (with build instructions) when it has not been built, or when
    ``EDGECONV_ORT_LIBRARY`` points to a missing file.
    """
    env = os.environ.get(LIBRARY_ENV)
    if env:
        p = Path(env)
        if not p.is_file():
            raise FileNotFoundError(f"{LIBRARY_ENV}={env!r} does not name an existing file")
        return str(p.resolve())
    p = _find()
    if p is None:
        searched = ", ".join(str(d) for d in _candidate_dirs())
        raise FileNotFoundError(
            "libedgeconv_ort (the edgeconv onnxruntime custom-op library) was not found "
            f"(searched: {searched}). Build it by installing the package with the kernels enabled: "
            "`scripts/fetch_ort_headers.sh && apt-get install libeigen3-dev && pip install -e .` "
            "(or `make setup`), or build it with CMake (`cmake -S custom_ops -B build/ort && "
            "cmake --build build/ort -j2`) and set "
            f"{LIBRARY_ENV}=/path/to/libedgeconv_ort.so."
        )
    return str(p.resolve())


def library_available() -> bool:
    """True when :func:`get_library_path` would succeed."""
    try:
        get_library_path()
    except FileNotFoundError:
        return False
    return True
