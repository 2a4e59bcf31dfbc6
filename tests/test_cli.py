"""The ``edgeconv`` command line: usage errors (exit 2, one line), listing/profiling commands,
and export -> run end to end through ``python -m edgeconv.cli``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

import pytest

from edgeconv import cli

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, timeout=600):
    """``python -m edgeconv.cli ARGS`` in a subprocess -> CompletedProcess (text)."""
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "edgeconv.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def call(capsys, *args):
    """In-process ``edgeconv ARGS`` -> (exit code, stdout, stderr)."""
    try:
        rc = cli.main(list(map(str, args)))
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


# ------------------------------------------------------------------------------------------
# usage errors
# ------------------------------------------------------------------------------------------

BAD_ARGS = [
    (["profile", "nosuchmodel"], "unknown model 'nosuchmodel'"),
    (["deploy", "nosuchmodel"], "unknown model"),
    (["profile", "edgenet", "--input", "1,3,abc,64"], "malformed input shape"),
    (["profile", "edgenet", "--input", "1,3,64"], "malformed input shape"),
    (["export", "edgenet", "-o", "x.onnx", "--input", "0,3,64,64"], "malformed input shape"),
    (["compile", "model.onnx", "--target", "riscv", "-o", "m.so"], "invalid choice: 'riscv'"),
    (["run", "does/not/exist.onnx"], "cannot read ONNX model"),
    (["compile", "does/not/exist.onnx", "--target", "x86", "-o", "m.so"], "cannot read ONNX model"),
    (["deploy", "--targets", "ort,tvm-mips"], "bad --targets"),
    (["deploy", "does/not/exist.py:make"], "cannot read model file"),
    (["deploy", "--rpc", "localhost"], "malformed --rpc"),
    (["deploy", "--rpc", "localhost:http"], "malformed --rpc"),
    (["deploy", "-o", "/proc/edgeconv-no-such-dir"], "cannot create output directory"),
    (["frobnicate"], "invalid choice"),
    (["profile"], "required"),
    (["layers", "--bogus"], "unrecognized arguments"),
]


@pytest.mark.parametrize("args,message", BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_bad_arguments_exit_2_with_one_line(capsys, args, message):
    rc, out, err = call(capsys, *args)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("edgeconv: error: ")
    assert message in lines[0]
    assert "Traceback" not in err


def test_bad_model_file_errors(capsys, tiny_model_file):
    rc, _, err = call(capsys, "profile", f"{tiny_model_file}:nope")
    assert rc == 2 and "has no callable 'nope'" in err
    rc, _, err = call(capsys, "profile", f"{tiny_model_file}:broken")
    assert rc == 2 and "boom" in err and len(err.strip().splitlines()) == 1


def test_corrupt_onnx_file_is_a_usage_error(capsys, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    rc, _, err = call(capsys, "run", bad)
    assert rc == 2 and err.startswith("edgeconv: error: cannot read ONNX model") and len(err.strip().splitlines()) == 1


def test_subprocess_error_is_one_line_without_traceback():
    res = run_cli("profile", "nosuchmodel")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert res.stderr.startswith("edgeconv: error: unknown model 'nosuchmodel'; known models:")
    assert "edgenet" in res.stderr and "Traceback" not in res.stderr


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(cli.CLIError):
        cli.main(["profile", "nosuchmodel", "--debug"])


def test_parse_shape():
    assert cli.parse_shape("1,3,224,224") == (1, 3, 224, 224)
    assert cli.parse_shape("2x3x32x48") == (2, 3, 32, 48)
    for bad in ("", "1,3", "a,b,c,d", "1,3,-1,4", "1,3,2,2,2"):
        with pytest.raises(cli.CLIError):
            cli.parse_shape(bad)


def test_tvm_target_names_agree():
    """the CLI's target choices are the TVM exporter's (restated there: that package imports TVM)"""
    pytest.importorskip("tvm")
    from edgeconv.exporters.tvm.targets import TARGET_NAMES

    assert cli.TARGETS == TARGET_NAMES


def test_bench_rpc_only_where_supported(capsys):
    rc, _, err = call(capsys, "bench", "kernels", "--rpc", "127.0.0.1:9090")
    assert rc == 2 and "does not support --rpc" in err


def test_parse_rpc():
    assert cli.parse_rpc("127.0.0.1:9090") == {"host": "127.0.0.1", "port": 9090, "key": None}
    assert cli.parse_rpc("tracker:9190/rk3399") == {"host": "tracker", "port": 9190, "key": "rk3399"}


# ------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------


def test_help_lists_every_command(capsys):
    rc, out, _ = call(capsys, "--help")
    assert rc == 0
    for cmd in ("layers", "models", "profile", "export", "run", "compile", "bench", "deploy"):
        assert cmd in out


def test_models_lists_the_zoo(capsys):
    rc, out, _ = call(capsys, "models", "--no-params")
    assert rc == 0
    import edgeconv.models as zoo

    for name in zoo.list():
        assert name in out


def test_layers_reproduces_the_article_claims(capsys):
    rc, out, _ = call(capsys, "layers", "--json")
    assert rc == 0
    rows = {r["kind"]: r for r in json.loads(out)}
    assert rows["conv (reference)"]["params_ratio"] == 1.0
    # measured weight ratios (biases excluded) match the article's formulas
    for kind in ("true", "group", "depthwise", "gdc", "shuffled_group", "separable", "mixconv", "dilated",
                 "deform", "deform_v2", "spatially_separable", "flattened", "hetconv"):
        r = rows[kind]
        assert r["weights_ratio"] == pytest.approx(r["expected_params_ratio"], rel=1e-9), kind
    # dynamic: K kernels plus the attention MLP
    assert 4.0 < rows["dynamic"]["weights_ratio"] < 4.05
    assert rows["spatially_separable"]["macs_ratio"] == pytest.approx(6 / 9, rel=1e-3)  # 6 vs 9 multiplies
    assert rows["group"]["macs_ratio"] == pytest.approx(1 / 4)
    assert 1.0 < rows["dynamic"]["macs_ratio"] < 1.05  # attention + mixing overhead only
    assert rows["gdc"]["output_shape"] == [1, 64, 1, 1]


def test_layers_table(capsys):
    rc, out, _ = call(capsys, "layers")
    assert rc == 0 and "hetconv" in out and "6 vs 9" in out


def test_profile_json(capsys):
    rc, out, _ = call(capsys, "profile", "edgenet", "--input", "1,3,32,32", "--json")
    assert rc == 0
    data = json.loads(out)
    assert data["input_shape"] == [1, 3, 32, 32]
    assert data["total_params"] < 1_000_000 and data["total_macs"] > 0
    assert {r["kind"] for r in data["rows"]} >= {"deform", "deform_v2", "dynamic", "gdc", "hetconv"}


def test_profile_table_and_file_model(capsys, tiny_model_file):
    rc, out, _ = call(capsys, "profile", f"{tiny_model_file}:make", "--input", "1,3,32,32")
    assert rc == 0 and "separable" in out and "TOTAL" in out and "MAC share" in out


def test_export_and_run_end_to_end(capsys, tmp_path, tiny_model_file):
    """export (a file model) through ``python -m edgeconv.cli``, then run it; edgenet's export is
    covered by tests/models and the deploy end-to-end test (also a subprocess)."""
    onnx_path = tmp_path / "tiny.onnx"
    res = run_cli("export", f"{tiny_model_file}:make", "--input", "1,3,32,32", "-o", onnx_path, "-q")
    assert res.returncode == 0, res.stderr
    assert onnx_path.stat().st_size > 0
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rc, out, err = call(capsys, "run", onnx_path, "--inputs", tmp_path / "x.npy", "--threads", "1", "--repeat", "3",
                        "--output", tmp_path / "out")
    assert rc == 0, err
    assert "shape=[1, 4]" in out and "latency: median" in out
    with_lib = np.load(tmp_path / "out" / "output_0.npy")
    # without the kernel library (same outputs: no custom ops in this model)
    rc, out, err = call(capsys, "run", onnx_path, "--inputs", tmp_path / "x.npy", "--no-custom-ops",
                        "--output", tmp_path / "out2")
    assert rc == 0, err
    got = np.load(tmp_path / "out2" / "output_0.npy")
    assert np.abs(got - with_lib).max() <= 1e-4 * np.abs(with_lib).max()


def test_run_rejects_wrong_number_of_inputs(capsys, tmp_path, tiny_model_file):
    onnx_path = tmp_path / "tiny.onnx"
    rc, _, err = call(capsys, "export", f"{tiny_model_file}:make", "--input", "1,3,32,32", "-o", onnx_path, "-q")
    assert rc == 0, err
    np.save(tmp_path / "a.npy", np.zeros((1, 3, 32, 32), np.float32))
    rc, _, err = call(capsys, "run", onnx_path, "--inputs", tmp_path / "a.npy", tmp_path / "a.npy")
    assert rc == 2 and "has 1 inputs, got 2" in err
    rc, out, err = call(capsys, "run", onnx_path)  # random inputs from the graph's shapes
    assert rc == 0, err
    assert "shape=[1, 4]" in out


def test_compile_x86(capsys, tmp_path, tiny_model_file):
    pytest.importorskip("tvm")
    onnx_path = tmp_path / "tiny.onnx"
    rc, _, err = call(capsys, "export", f"{tiny_model_file}:make", "--input", "1,3,32,32", "-o", onnx_path, "-q")
    assert rc == 0, err
    # dynamic batch: our convs take a symbolic batch; the classifier matmul still cannot
    with pytest.warns(UserWarning, match="left to TVM's generic.*matmul .symbolic dim"):
        rc, out, err = call(capsys, "compile", onnx_path, "--target", "x86", "-o", tmp_path / "tiny.so", "-q")
    assert rc == 0, err
    assert (tmp_path / "tiny.so").stat().st_size > 0
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "edgeconv: .* left to TVM's generic")
        rc, out, err = call(capsys, "compile", onnx_path, "--target", "x86", "--input", "1,3,32,32",
                            "-o", tmp_path / "tiny1.so", "-q")
    assert rc == 0, err
    assert (tmp_path / "tiny1.so").stat().st_size > 0


def test_bench_dispatch_unknown_benchmark(capsys):
    rc, _, err = call(capsys, "bench", "gpu")
    assert rc == 2 and "invalid choice" in err


def test_bench_model_torch_and_ort(capsys, tiny_model_file):
    rc, out, err = call(capsys, "bench", "model", f"{tiny_model_file}:make", "--input", "1,3,32,32", "--repeats", "3",
                        "--backends", "torch,ort-nolib", "-q")
    assert rc == 0, err
    assert "torch" in out and "ort-nolib" in out and "passed" in out


# ------------------------------------------------------------------------------------------
# conventions: --version, fast --help, one exit code per kind of error, checked inputs
# ------------------------------------------------------------------------------------------


def test_version(capsys):
    from importlib.metadata import version

    rc, out, _ = call(capsys, "--version")
    assert rc == 0 and out.strip() == f"edgeconv {version('edgeconv')}"


def test_help_imports_no_back_end():
    """``--help`` must not import torch/TVM/onnxruntime/onnx (torch alone takes seconds). Checked
    in sys.modules, which a loaded machine cannot make flaky; the time of import + help inside the
    process (interpreter start excluded) is ~0.05 s here, ~2-6 s with torch: 1 s separates them."""
    code = ("import sys, time, contextlib, io; t0 = time.perf_counter()\n"
            "from edgeconv.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try: main(['--help'])\n"
            "    except SystemExit: pass\n"
            "print(time.perf_counter() - t0)\n"
            "print(','.join(m for m in ('torch', 'tvm', 'onnxruntime', 'onnx', 'numpy') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    seconds, imported = res.stdout.splitlines()
    assert imported == ""
    assert float(seconds) < 1.0


def _unknown_op_model(path: Path) -> Path:
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    graph = helper.make_graph([helper.make_node("FrobOp", ["x"], ["y"])], "g", [x], [y])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_unknown_op_is_an_input_error_in_run_and_compile(capsys, tmp_path):
    model = _unknown_op_model(tmp_path / "unknown.onnx")
    rc, _, err = call(capsys, "run", model)
    assert rc == 2 and "FrobOp" in err and len(err.strip().splitlines()) == 1
    pytest.importorskip("tvm")
    rc, _, err = call(capsys, "compile", model, "--target", "x86", "-o", tmp_path / "u.so")
    assert rc == 2 and "FrobOp" in err and len(err.strip().splitlines()) == 1, err


def test_export_of_an_op_without_rule_is_an_input_error(capsys, tmp_path):
    exporter_or_skip()
    spec = tmp_path / "m.py"
    spec.write_text("import torch\n"
                    "class M(torch.nn.Module):\n"
                    "    def forward(self, x):\n"
                    "        return torch.linalg.svd(x.flatten(1))[0]\n"
                    "def make():\n"
                    "    return M()\n")
    rc, _, err = call(capsys, "export", f"{spec}:make", "--input", "1,3,4,4", "-o", tmp_path / "m.onnx", "-q")
    if rc == 0:
        pytest.skip("torch.onnx exports linalg.svd in this version: no op without a rule to test with")
    assert rc == 2 and "custom_translation_table" in err and len(err.strip().splitlines()) == 1, err


@pytest.fixture
def tiny_onnx(tmp_path, tiny_model_file, capsys):
    exporter_or_skip()
    path = tmp_path / "tiny.onnx"
    rc, _, err = call(capsys, "export", f"{tiny_model_file}:make", "--input", "1,3,32,32", "-o", path, "-q",
                      "--input-names", "image", "--output-names", "logits")
    assert rc == 0, err
    return path


def test_export_names_inputs_and_outputs(capsys, tiny_onnx, tmp_path):
    import onnx

    model = onnx.load(str(tiny_onnx))
    assert [i.name for i in model.graph.input] == ["image"] and [o.name for o in model.graph.output] == ["logits"]
    rc, out, err = call(capsys, "run", tiny_onnx, "--repeat", "2")
    assert rc == 0, err
    assert out.startswith("logits: shape=[1, 4]")
    assert "threads=None" not in out and "threads=onnxruntime default" in out
    rc, _, err = call(capsys, "export", "edgenet", "-o", tmp_path / "e.onnx", "--input-names", "a,b")
    assert rc == 2 and "input_names has 2 names, the model has 1" in err


@pytest.mark.parametrize("array,message", [
    (np.zeros((1, 3, 32, 32)), "has dtype float64, the model's input 'image' takes float32"),
    (np.zeros((1, 3, 16, 16), np.float32), "has shape 1x3x16x16, the model's input 'image' takes batchx3x32x32"),
    (np.zeros((3, 32, 32), np.float32), "has shape 3x32x32"),
], ids=["float64", "spatial", "rank"])
def test_run_checks_input_arrays(capsys, tiny_onnx, tmp_path, array, message):
    np.save(tmp_path / "a.npy", array)
    rc, _, err = call(capsys, "run", tiny_onnx, "--inputs", tmp_path / "a.npy")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert message.replace("batchx", "?x") in err
