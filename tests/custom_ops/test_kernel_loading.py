"""The library loads in a fresh process, and into an older onnxruntime (1.20, C API 20)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# Runs one DeformConv2d (v2) and one DynamicConv2d and checks them against the numpy references.
_SCRIPT = r"""
import sys
sys.path.insert(0, {here!r})
import numpy as np, onnxruntime as ort
from ec_ortops_util import (deform_model, dynamic_model, session, deform_conv2d_ref,
                            dynamic_conv2d_ref, check_close)
rng = np.random.default_rng(0)
X = rng.standard_normal((2, 4, 7, 7), dtype=np.float32)
W = rng.standard_normal((6, 4, 3, 3), dtype=np.float32)
off = rng.standard_normal((2, 18, 7, 7), dtype=np.float32)
mask = rng.random((2, 9, 7, 7), dtype=np.float32)
B = rng.standard_normal(6, dtype=np.float32)
model, names = deform_model(True, True, pads=[1, 1, 1, 1])
y = session(model, {lib!r}, threads=2).run(None, dict(X=X, W=W, offset=off, mask=mask, B=B))[0]
ref = deform_conv2d_ref(X, W, off, mask, B, pads=(1, 1, 1, 1))
absref = deform_conv2d_ref(abs(X), abs(W), off, mask, abs(B), pads=(1, 1, 1, 1))
check_close(y, ref, absref)
WK = rng.standard_normal((3, 6, 4, 3, 3), dtype=np.float32)
A = rng.random((2, 3), dtype=np.float32)
model, names = dynamic_model(False, pads=[1, 1, 1, 1])
y = session(model, {lib!r}).run(None, dict(X=X, W=WK, attention=A))[0]
check_close(y, dynamic_conv2d_ref(X, WK, A, pads=(1, 1, 1, 1)),
            dynamic_conv2d_ref(abs(X), abs(WK), A, pads=(1, 1, 1, 1)))
print("OK", ort.__version__)
"""


def _script(lib: str) -> str:
    return _SCRIPT.format(here=str(HERE), lib=lib)


def test_loads_in_fresh_process(lib_path):
    r = subprocess.run([sys.executable, "-c", _script(lib_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("OK")


def test_library_exports_only_register_symbol(lib_path):
    nm = shutil.which("nm")
    if nm is None or not lib_path.endswith(".so"):
        pytest.skip("needs nm and an ELF library")
    out = subprocess.run([nm, "-D", "--defined-only", lib_path], capture_output=True, text=True, check=True).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert names == {"RegisterCustomOps"}, names
    ldd = subprocess.run(["ldd", lib_path], capture_output=True, text=True).stdout
    assert "onnxruntime" not in ldd and "python" not in ldd, ldd


def _ort120_python() -> Path:
    cache = Path(os.environ.get("EDGECONV_CACHE", Path.home() / ".cache" / "edgeconv"))
    return cache / "ort120-venv" / "bin" / "python"


def test_loads_into_onnxruntime_1_20(lib_path):
    """onnxruntime 1.20.1 (C API 20, no built-in DeformConv) runs our ops. The venv is created on
    first use by scripts/ort120_venv.sh (~30 s, needs the package index) and cached."""
    py = _ort120_python()
    if not py.exists():
        if os.environ.get("EDGECONV_NO_NETWORK"):
            pytest.skip("ort 1.20 venv missing and EDGECONV_NO_NETWORK is set")
        r = subprocess.run(["bash", str(REPO / "scripts" / "ort120_venv.sh")], capture_output=True, text=True,
                           timeout=600)
        if r.returncode != 0:
            pytest.skip(f"could not create the onnxruntime 1.20 venv: {r.stderr[-500:]}")
    r = subprocess.run([str(py), "-c", _script(lib_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "OK 1.20.1", r.stdout
    # ... and that runtime indeed has no DeformConv kernel of its own
    code = (
        "import onnxruntime as ort, onnx\n"
        "from onnx import helper, TensorProto as T\n"
        "n = helper.make_node('DeformConv', ['X','W','O'], ['Y'])\n"
        "g = helper.make_graph([n], 'g', [helper.make_tensor_value_info(x, T.FLOAT, None) for x in 'XWO'],"
        " [helper.make_tensor_value_info('Y', T.FLOAT, None)])\n"
        "m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 19)]); m.ir_version = 9\n"
        "try:\n    ort.InferenceSession(m.SerializeToString(), providers=['CPUExecutionProvider'])\n"
        "except Exception as e:\n    print('NO_KERNEL', type(e).__name__)\n"
        "else:\n    print('HAS_KERNEL')\n"
    )
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=120)
    assert "NO_KERNEL" in r.stdout, r.stdout + r.stderr


@pytest.mark.slow
def test_too_old_onnxruntime_fails_cleanly(lib_path):
    """onnxruntime 1.16 (C API 16 < 17): registration fails with a clear error, no crash.
    Creates ${EDGECONV_CACHE}/ort116-venv on first use (needs the package index)."""
    cache = Path(os.environ.get("EDGECONV_CACHE", Path.home() / ".cache" / "edgeconv"))
    venv = cache / "ort116-venv"
    py = venv / "bin" / "python"
    if not py.exists():
        r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", "onnxruntime==1.16.3", "numpy<2"],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            pytest.skip(f"could not create the onnxruntime 1.16 venv: {r.stderr[-300:]}")
    code = (
        "import onnxruntime as ort\n"
        "so = ort.SessionOptions()\n"
        f"try:\n    so.register_custom_ops_library({lib_path!r})\nexcept Exception as e:\n    print('ERR', e)\n"
        "else:\n    print('LOADED')\n"
    )
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ERR" in r.stdout and "too old" in r.stdout and ">= 1.17" in r.stdout, r.stdout
