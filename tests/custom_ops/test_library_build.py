"""edgeconv._library lookup and the CMake project's configure-time behaviour."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_env_override(monkeypatch, tmp_path):
    from edgeconv import _library

    fake = tmp_path / "libedgeconv_ort.so"
    fake.write_bytes(b"\x7fELF")
    monkeypatch.setenv("EDGECONV_ORT_LIBRARY", str(fake))
    assert _library.get_library_path() == str(fake.resolve())
    assert _library.library_available()
    monkeypatch.setenv("EDGECONV_ORT_LIBRARY", str(tmp_path / "missing.so"))
    with pytest.raises(FileNotFoundError, match="EDGECONV_ORT_LIBRARY"):
        _library.get_library_path()
    assert not _library.library_available()


def test_missing_library_message(monkeypatch):
    from edgeconv import _library

    monkeypatch.delenv("EDGECONV_ORT_LIBRARY", raising=False)
    monkeypatch.setattr(_library, "_find", lambda: None)
    with pytest.raises(FileNotFoundError, match="pip install -e"):
        _library.get_library_path()


def test_found_library_is_absolute(lib_path):
    assert Path(lib_path).is_absolute() and Path(lib_path).is_file()


def _cmake(tmp_path, *args, env=None):
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not installed")
    return subprocess.run([cmake, "-S", str(REPO / "custom_ops"), "-B", str(tmp_path / "b"), *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_cmake_kernels_off_configures_without_headers(tmp_path):
    r = _cmake(tmp_path, "-DEDGECONV_BUILD_KERNELS=OFF", f"-DONNXRUNTIME_INCLUDE_DIR={tmp_path / 'none'}")
    assert r.returncode == 0, r.stderr
    assert "EDGECONV_BUILD_KERNELS=OFF" in r.stdout


def test_cmake_missing_headers_fails_clearly(tmp_path):
    r = _cmake(tmp_path, f"-DONNXRUNTIME_INCLUDE_DIR={tmp_path / 'none'}")
    assert r.returncode != 0
    assert "scripts/fetch_ort_headers.sh" in r.stderr and "ONNXRUNTIME_INCLUDE_DIR" in r.stderr
