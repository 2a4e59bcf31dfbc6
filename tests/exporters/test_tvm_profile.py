"""Per-kernel profile of a compiled model (``edgeconv profile MODEL --backend tvm``)."""

import json

import numpy as np
import pytest

pytest.importorskip("tvm")

from edgeconv.cli import main  # noqa: E402
from edgeconv.exporters.tvm.profile import op_kind, profile_vm  # noqa: E402


def test_op_kind_names():
    assert op_kind("ec_depthwise_3x3_s1_g8_1x8x8x8_to8_nchw8c") == "conv:depthwise"
    assert op_kind("ec_to_nchw8c_1x16x8x8") == "layout"
    assert op_kind("fused_reshape13_reshape13_multiply5_divide5") == "fused_reshape_multiply_divide"
    assert op_kind("vm.builtin.alloc_storage") == "alloc"
    assert op_kind("mean2") == "mean"


def test_profile_vm_covers_every_kernel(tiny_model_file):
    import onnx
    import torch

    from edgeconv.cli import resolve_model
    from edgeconv.exporters.onnx import export_onnx
    from edgeconv.exporters.tvm import compile_tvm

    torch.manual_seed(0)
    model, _, _ = resolve_model(f"{tiny_model_file}:make", (1, 3, 16, 16))
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype("float32")
    proto = export_onnx(model, (torch.from_numpy(x),))
    compiled = compile_tvm(proto, "x86", input_shapes={proto.graph.input[0].name: [1, 3, 16, 16]})
    prof = profile_vm(compiled, [x], runs=5, warmup=1)
    names = {k.name for k in prof.kernels}
    # every PrimFunc of the executable that the VM calls shows up, and our conv kernels are there
    assert any(n.startswith("ec_") for n in names)
    assert {"conv:dense", "conv:group"} <= set(prof.kinds)
    assert all(k.calls >= 1 and k.ms >= 0 for k in prof.kernels)
    # the calls happen inside the instrumented run: their sum cannot exceed its wall time by more
    # than the median-of-sums vs sum-of-medians difference (allow 20%)
    assert prof.kernel_ms <= prof.instrumented_ms * 1.2
    assert prof.plain_ms > 0
    # the profiled VM still computes the model
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(compiled(x)[0], ref, rtol=1e-4, atol=1e-5)


def test_cli_profile_tvm_json(tiny_model_file, capsys):
    rc = main(["profile", f"{tiny_model_file}:make", "--input", "1,3,16,16", "--backend", "tvm", "--runs", "3",
               "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["threads"] == 1 and out["runs"] == 3
    assert any(k.startswith("conv:") for k in out["kinds"])
    shares = [k["ms"] for k in out["kernels"]]
    assert shares == sorted(shares, reverse=True)
