from __future__ import annotations

import pytest

try:
    import onnxruntime  # noqa: F401

    _HAVE_ORT = True
except ImportError:  # pragma: no cover
    _HAVE_ORT = False


@pytest.fixture(scope="session")
def lib_path() -> str:
    """Path of libedgeconv_ort (EDGECONV_ORT_LIBRARY, or the one installed with the package)."""
    if not _HAVE_ORT:
        pytest.skip("onnxruntime is not installed")
    import os

    from edgeconv._library import get_library_path, library_available

    if not library_available() and os.environ.get("EDGECONV_BUILD_KERNELS", "ON").upper() in ("OFF", "0", "FALSE", "NO"):
        pytest.skip("libedgeconv_ort is not built (EDGECONV_BUILD_KERNELS=OFF)")
    return get_library_path()  # raises FileNotFoundError with build instructions when missing


@pytest.fixture(params=["dispatch", "generic"])
def isa(request, monkeypatch):
    """Runs a test with the dispatched kernel variant (AVX2+FMA micro-kernel on capable x86-64)
    and with the baseline variant (Eigen GEMM; what aarch64 and old x86-64 CPUs run).
    libedgeconv_ort reads EDGECONV_ISA once per process: ec_ortops_util.session passes it on as the
    session config entry edgeconv.isa, read at each registration."""
    if request.param == "generic":
        monkeypatch.setenv("EDGECONV_ISA", "generic")
    else:
        monkeypatch.delenv("EDGECONV_ISA", raising=False)
    return request.param
