"""compile_tvm of edgeconv.DeformConv2d: our deformable columns kernel + grouped pointwise GEMM
(exporters/tvm/deform.py) against the float64 numpy reference, the documented NaN/Inf rule and
onnxruntime with our kernel library."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

from edgeconv.exporters.tvm import compile_tvm, import_model
from edgeconv.exporters.tvm.passes import edgeconv_stage1

# the kernel tests' model builders and references (tests/custom_ops is not a package)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "custom_ops"))
from ec_ortops_util import check_close, deform_conv2d_ref, deform_model, out_size, to_initializers  # noqa: E402

HOST = tvm.target.Target({"kind": "llvm", "mcpu": "core-avx2"})

# (N, C, H, W, O, KH, KW, strides, pads, dilations, group, offset_group, mask, bias)
CASES = [
    (2, 8, 9, 11, 6, 3, 3, (2, 1), (1, 0, 2, 1), (1, 2), 2, 2, True, True),   # v2, everything uneven
    (1, 16, 14, 14, 8, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, 1, False, False),  # v1, L=196: 14-wide vectors
    (2, 8, 7, 7, 8, 2, 3, (1, 2), (0, 1, 1, 0), (2, 1), 4, 1, False, True),   # B without mask ("" slot)
    (1, 12, 10, 8, 6, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), 3, 4, True, False),  # 3 groups over 4 offset groups
]
# constant W (as exported) and whole 16-channel blocks per group / offset group: the blocked,
# channel-vectorised columns kernel + blocked GEMM (NCHW8c in _kernel_names' AVX2 target)
BLOCKED_CASES = [
    (2, 32, 9, 11, 32, 3, 3, (2, 1), (1, 0, 2, 1), (1, 2), 2, 2, True, True),
    (1, 16, 14, 14, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, 1, False, False),
]


def _feeds(N, C, H, W, O, KH, KW, strides, pads, dil, group, og, mask, bias, seed=0):
    rng = np.random.default_rng(seed)
    OH, OW = out_size(H, KH, strides[0], pads[0], pads[2], dil[0]), out_size(W, KW, strides[1], pads[1], pads[3], dil[1])
    f = {"X": rng.standard_normal((N, C, H, W), dtype=np.float32),
         "W": rng.standard_normal((O, C // group, KH, KW), dtype=np.float32),
         # offsets of a few pixels: taps fall between pixels, on the border and outside the image
         "offset": (1.5 * rng.standard_normal((N, og * 2 * KH * KW, OH, OW))).astype(np.float32)}
    if mask:
        f["mask"] = rng.random((N, og * KH * KW, OH, OW), dtype=np.float32)
    if bias:
        f["B"] = rng.standard_normal(O, dtype=np.float32)
    return f


def _kernel_names(model, shapes) -> tuple[list[str], set[str]]:
    """Our pipeline's functions and the Relax ops left in main after our lowering."""
    with HOST:
        lowered = edgeconv_stage1("x86")(import_model(model, shapes)[0])
    ops = set()
    relax.analysis.post_order_visit(lowered["main"], lambda e: ops.add(e.op.name) if isinstance(
        e, relax.Call) and isinstance(e.op, tvm.ir.Op) else None)
    return [gv.name_hint for gv in lowered.get_global_vars()], ops


@pytest.mark.parametrize("case,blocked", [(c, False) for c in CASES] + [(c, True) for c in BLOCKED_CASES],
                         ids=[f"case{i}" for i in range(len(CASES))] + [f"blocked{i}" for i in range(len(BLOCKED_CASES))])
def test_single_node_matches_numpy(case, blocked):
    N, C, H, W, O, KH, KW, strides, pads, dil, group, og, mask, bias = case
    f = _feeds(*case)
    model, names = deform_model(mask, bias, strides=list(strides), pads=list(pads), dilations=list(dil),
                                group=group, offset_group=og)
    if blocked:
        consts = [k for k in ("W", "B") if k in names]
        model, names = to_initializers(model, f, consts), [k for k in names if k not in consts]
    shapes = {k: list(f[k].shape) for k in names}
    y = compile_tvm(model, input_shapes=shapes)(*[f[k] for k in names])[0]
    kw = dict(strides=strides, pads=pads, dilations=dil, group=group, offset_group=og)
    ref = deform_conv2d_ref(f["X"], f["W"], f["offset"], f.get("mask"), f.get("B"), **kw)
    # bound from the same sum on absolute values (check_close: float32 rounding of sums of
    # C/g*K <= 72 terms and of the float32 bilinear weights, ~n*eps relative to sum |terms|)
    scale = deform_conv2d_ref(np.abs(f["X"]), np.abs(f["W"]), f["offset"], f.get("mask"),
                              None if not bias else np.abs(f["B"]), **kw)
    check_close(y, ref, scale)
    funcs, ops = _kernel_names(model, shapes)
    assert any(n.startswith("ec_deform_cols8c_" if blocked else "ec_deform_cols_") for n in funcs), funcs
    assert not ops & {"relax.take", "relax.gather_nd", "relax.gather_elements", "relax.matmul", "relax.where"}, ops


def test_nonfinite_semantics_match_the_documented_rule():
    """docs/onnx-ops.md "NaN and Inf": the same NaN/+-Inf pattern as the loop-by-loop rule (Inf
    pixel 0 that skipped corners would read, NaN/Inf masks outside the image, NaN/Inf positions,
    py = -1 exactly, weights that underflow to 0 next to an Inf pixel)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "custom_ops"))
    from test_nonfinite import PADS, _assert_same_nonfinite, _deform_feeds, _semantics_ref

    model, names = deform_model(True, True, pads=PADS)
    for seed in (0, 1):
        f = _deform_feeds(seed)
        compiled = compile_tvm(model, input_shapes={k: list(f[k].shape) for k in names})
        ref = _semantics_ref(f["X"], f["W"], f["offset"], f["mask"], f["B"])
        _assert_same_nonfinite(compiled(*[f[k] for k in names])[0], ref, f"compile_tvm seed {seed}")


def test_nonfinite_semantics_blocked_kernel():
    """The same rule through the channel-vectorised (blocked) kernel: 16 channels, constant W and
    B, special values like test_nonfinite's; reference deform_conv2d_ref (the rule, float64)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "custom_ops"))
    from test_nonfinite import _assert_same_nonfinite

    case = (2, 16, 6, 7, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, 1, True, True)
    f = _feeds(*case, seed=3)
    f["X"][0, 0, 0, 0] = np.inf         # pixel 0: what a skipped corner must never read
    f["X"][1, 5, 2, 3] = -np.inf
    f["offset"][0, 0, 1, 1], f["mask"][0, 0, 1, 1] = 100.0, np.nan   # outside, NaN mask: NaN
    f["offset"][1, 2, 2, 2], f["mask"][1, 1, 2, 2] = -50.0, np.inf   # outside, Inf mask: NaN
    f["offset"][0, 4, 3, 4] = np.nan    # non-finite positions: no sample
    f["offset"][1, 5, 0, 2] = np.inf
    f["offset"][0, 8, 0, 1] = f["offset"][0, 9, 0, 1] = -1.0  # py = -1 exactly next to pixel 0
    # output (1, :, 3, 3): every tap outside but the centre, which samples pixel (3, 3) exactly;
    # its weight-0 corner (3, 4) is an Inf pixel inside the image, so used: 0 * Inf = NaN
    f["X"][1, 7, 3, 4] = np.inf
    f["offset"][1, :, 3, 3] = 100.0
    f["offset"][1, 8, 3, 3] = f["offset"][1, 9, 3, 3] = 0.0
    model, names = deform_model(True, True, pads=[1, 1, 1, 1])
    model, names = to_initializers(model, f, ["W", "B"]), ["X", "offset", "mask"]
    shapes = {k: list(f[k].shape) for k in names}
    y = compile_tvm(model, input_shapes=shapes)(*[f[k] for k in names])[0]
    ref = deform_conv2d_ref(f["X"], f["W"], f["offset"], f["mask"], f["B"], pads=(1, 1, 1, 1))
    assert np.isnan(ref[0, :, 1, 1]).all() and np.isnan(ref[1, :, 2, 2]).all() and np.isnan(ref[1, :, 3, 3]).all()
    assert np.isfinite(ref).mean() > 0.3
    _assert_same_nonfinite(y, ref, "compile_tvm blocked")
    assert any(n.startswith("ec_deform_cols8c_") for n in _kernel_names(model, shapes)[0])


def test_graph_conv_offsets_deform_relu_matches_onnxruntime_kernels():
    """conv -> offsets/mask (the layer's own conv) -> DeformConv2d v2 -> relu, exported by us,
    against onnxruntime running our C++ kernel; also under TVM's stock pipeline (the import's
    reference PrimFunc)."""
    import torch

    from edgeconv.exporters.onnx import custom_ops_available, export_onnx, ort_session
    from edgeconv.layers import ModulatedDeformConv2d

    torch.manual_seed(0)
    deform = ModulatedDeformConv2d(16, 16, 3, padding=1)
    torch.nn.init.normal_(deform.conv_offset.weight, std=0.3)  # offsets of about a pixel
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), deform, torch.nn.ReLU()).eval()
    x = torch.randn(1, 3, 16, 16)
    proto = export_onnx(model, (x,))
    name = proto.graph.input[0].name
    assert custom_ops_available(), "the edgeconv kernel library is part of `make setup`"
    ref = ort_session(proto, custom_ops=True).run(None, {name: x.numpy()})[0]
    shapes = {name: list(x.shape)}
    # two float32 computations of a 144-term sum after sampling, in different orders: ~1e-6
    # of the output scale measured; 1e-4 relative to the largest output
    tol = 1e-4 * np.abs(ref).max()
    for pipeline in ("edgeconv", "stock"):
        got = compile_tvm(proto, input_shapes=shapes, pipeline=pipeline)(x.numpy())[0]
        assert np.abs(got - ref).max() < tol, pipeline
    funcs, ops = _kernel_names(proto, shapes)
    assert any(n.startswith("ec_deform_cols8c_") for n in funcs), funcs
    assert not any(n.startswith("ec_deform_n") for n in funcs), "the reference placeholder stays unused"
    assert not ops & {"relax.take", "relax.gather_nd", "relax.matmul"}, ops
