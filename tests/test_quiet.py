"""Quiet by default: the back ends' known-harmless output (TVM's C++ warnings on fd 2, torch.onnx's
warnings) is dropped at edgeconv's API boundary; ``--verbose`` / ``EDGECONV_VERBOSE=1`` shows it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from edgeconv._quiet import VERBOSE_ENV, native_stderr_filtered

# TVM's C++ log line (tvm/runtime/logging.h): "[HH:MM:SS] file:line: Warning: ..."
CPP_LOG_LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] \S+:\d+: ", re.M)


def test_filter_drops_only_the_harmless_native_lines(capfd, monkeypatch):
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    with native_stderr_filtered([r"harmless"]):
        os.write(2, b"a harmless line\nan important line\n")
        print("python stderr is not captured", file=sys.stderr)
    err = capfd.readouterr().err
    assert "harmless" not in err
    assert "an important line" in err and "python stderr is not captured" in err


def _gather_onnx(tmp_path):
    """An ONNX Gather (TVM's frontend imports it as take(mode="fast"))."""
    import onnx
    from onnx import TensorProto, helper

    idx = helper.make_tensor("idx", TensorProto.INT64, [2], [0, 2])
    graph = helper.make_graph([helper.make_node("Gather", ["input", "idx"], ["y"], axis=1)], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], [idx])
    path = tmp_path / "gather.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("verbose", [False, True], ids=["default", "verbose"])
def test_tvm_fast_mode_warning_only_in_verbose_mode(capfd, monkeypatch, tmp_path, verbose):
    """TVM's stock pipeline legalizes take(mode="fast") (ONNX Gather) and prints a C++ warning
    per take: gone by default, there with EDGECONV_VERBOSE=1. (DeformConv2d no longer produces
    takes: it imports as our kernel.)"""
    pytest.importorskip("tvm")
    from edgeconv.exporters.tvm import compile_tvm

    path = _gather_onnx(tmp_path)
    if verbose:
        monkeypatch.setenv(VERBOSE_ENV, "1")
    else:
        monkeypatch.delenv(VERBOSE_ENV, raising=False)
    capfd.readouterr()
    compile_tvm(str(path), "x86", pipeline="stock", input_shapes={"input": [1, 4, 8, 8]})
    err = capfd.readouterr().err
    assert ("Fast mode segfaults" in err) is verbose, err


@pytest.mark.slow
def test_deploy_default_model_prints_no_cpp_warnings(tmp_path):
    """`edgeconv deploy` of the default model through TVM (host compile + arm64 cross-compile):
    stderr holds our progress lines only, no TVM C++ log line and no Python warning."""
    pytest.importorskip("tvm")
    res = subprocess.run([sys.executable, "-m", "edgeconv.cli", "deploy", "--targets", "tvm-x86,tvm-arm64",
                          "--repeats", "2", "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "tvm-x86: passed" in res.stderr  # the progress output does reach stderr
    assert not CPP_LOG_LINE.search(res.stderr), res.stderr
    assert "Warning" not in res.stderr, res.stderr
