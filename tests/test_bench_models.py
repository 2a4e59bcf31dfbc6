"""Smoke run of the real-model benchmark (``python -m edgeconv.bench models``) on the small zoo model."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("tvm")
pytest.importorskip("openvino")


def test_bench_models_smoke(tmp_path):
    out = tmp_path / "res"
    proc = subprocess.run([sys.executable, "-m", "edgeconv.bench", "models", "--models", "edgenet", "--threads", "1",
                           "--repeats", "3", "--warmup", "1", "--no-stock", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((out / "models.json").read_text())
    row = res["threads"]["1"]["edgenet"]
    for backend in ("edgeconv", "ort", "openvino"):
        assert row[backend] > 0, row
        # float32 runtimes against PyTorch on a 64x64 input: reassociated sums stay well under 1e-3
        assert row[f"{backend}_rel_err"] < 1e-3, row
    assert "stock" not in row
    assert (out / "models.png").stat().st_size > 0
    assert "edgenet" in proc.stdout


def test_bench_models_rejects_unknown_model():
    proc = subprocess.run([sys.executable, "-m", "edgeconv.bench", "models", "--models", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "nope" in proc.stderr
