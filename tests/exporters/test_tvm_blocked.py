"""The blocked-layout (NCHW[b]c) kernels and the pass that moves conv chains into that layout."""

from __future__ import annotations

import dataclasses
import re
import warnings

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
import torch
import onnxruntime as ort
import onnx

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from tvm import relax  # noqa: E402

from edgeconv.exporters.tvm import compile_tvm, import_model  # noqa: E402
from edgeconv.exporters.tvm.compile import build_config  # noqa: E402
from edgeconv.exporters.tvm.conv import ConvSpec, TargetInfo  # noqa: E402
from edgeconv.exporters.tvm.conv_blocked import blocked_supported, schedule_blocked  # noqa: E402
from edgeconv.exporters.tvm.passes import (  # noqa: E402
    BlockedLayout, ClampAsOps, SplitAsSections, edgeconv_stage1, target_info)

# float32 sums of at most 16*3*3 = 144 products; onnxruntime/torch sum in another order
RTOL = 1e-5
HOST = tvm.target.Target({"kind": "llvm", "mcpu": "core-avx2"})
FAMILIES = {"avx2": TargetInfo("x86", 8, 16), "avx512": TargetInfo("x86", 16, 32), "neon": TargetInfo("arm", 4, 32)}


def _to_blocked(a: np.ndarray, b: int) -> np.ndarray:
    n, c, h, w = a.shape
    return np.ascontiguousarray(a.reshape(n, c // b, b, h, w).transpose(0, 1, 3, 4, 2))


def _weight_blocked(w: np.ndarray, b: int, depthwise: bool) -> np.ndarray:
    o, i, kh, kw = w.shape
    if depthwise:  # OIHW1i[b]o
        return np.ascontiguousarray(w.reshape(o // b, b, kh, kw).transpose(0, 2, 3, 1)[:, None, :, :, None, :])
    return np.ascontiguousarray(w.reshape(o // b, b, i // b, b, kh, kw).transpose(0, 2, 4, 5, 3, 1))


def _reference(spec: ConvSpec, x, w, bias):
    y = torch.nn.functional.conv2d(
        torch.from_numpy(x).double(), torch.from_numpy(w).double(),
        None if bias is None else torch.from_numpy(bias).double(),
        stride=spec.stride, padding=spec.padding[:2], dilation=spec.dilation, groups=spec.groups)
    if spec.act == "relu":
        y = torch.relu(y)
    elif spec.act == "clip":
        y = torch.clamp(y, *spec.clip)
    return y.numpy()


SPECS = {
    "dw3_s1": dict(C=16, O=16, K=3, groups=16),
    "dw3_s2": dict(C=16, O=16, K=3, groups=16, stride=(2, 2)),
    "dw5_d2": dict(C=16, O=16, K=5, groups=16, dilation=(2, 2)),
    "dw7_s2": dict(C=16, O=16, K=7, groups=16, stride=(2, 2)),
    "group3": dict(C=32, O=32, K=3, groups=2),
    "group3_s2": dict(C=32, O=64, K=3, groups=2, stride=(2, 2)),
    "dense3": dict(C=16, O=32, K=3, groups=1),
    "pointwise": dict(C=16, O=48, K=1, groups=1),
    # weights outweigh the input: the output-channel-tile-outer loop order
    "dense3_deep_small_image": dict(C=64, O=64, K=3, groups=1, hw=(5, 7)),
}


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("name", list(SPECS))
def test_blocked_kernel_matches_torch(name, family):
    """Each blocked kernel, called directly on blocked tensors, against torch (float64)."""
    p = SPECS[name]
    tinfo = FAMILIES[family]
    k = p["K"]
    dil = p.get("dilation", (1, 1))
    pad = dil[0] * (k // 2)
    spec = ConvSpec(2, p["C"], *p.get("hw", (17, 23)), p["O"], k, k, p.get("stride", (1, 1)), (pad, pad, pad, pad), dil,
                    p["groups"], bias=True, act="clip", clip=(-0.5, 0.5), block=tinfo.lanes)
    assert blocked_supported(spec, tinfo.lanes)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((spec.N, spec.C, spec.H, spec.W)).astype("float32")
    w = (rng.standard_normal((spec.O, spec.Cg, k, k)) / np.sqrt(spec.Cg * k * k)).astype("float32")
    bias = rng.standard_normal(spec.O).astype("float32") * 0.1
    ref = _reference(spec, x, w, bias)
    b = spec.block
    with tvm.transform.PassContext(opt_level=3, config=build_config()):
        kernel = tvm.compile(schedule_blocked(spec, tinfo), target=HOST).jit()
    dev = tvm.cpu()
    out = tvm.runtime.tensor(np.zeros((spec.N, spec.O // b, spec.OH, spec.OW, b), "float32"), dev)
    kernel(tvm.runtime.tensor(_to_blocked(x, b), dev), tvm.runtime.tensor(_weight_blocked(w, b, spec.Cg == 1), dev),
           tvm.runtime.tensor(bias.reshape(-1, b), dev), out)
    got = out.numpy().transpose(0, 1, 4, 2, 3).reshape(ref.shape)
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert err < RTOL, f"{spec.name()}: rel err {err:.2e}"


def test_blocked_support_rules():
    base = ConvSpec(1, 16, 8, 8, 16, 3, 3, groups=16)
    assert blocked_supported(base, 8)
    assert not blocked_supported(dataclasses.replace(base, O=32), 8)  # depthwise multiplier 2
    assert not blocked_supported(dataclasses.replace(base, C=12, O=12, groups=12), 8)
    assert blocked_supported(dataclasses.replace(base, groups=2), 8)  # 8 channels per group
    assert not blocked_supported(dataclasses.replace(base, groups=4), 8)  # 4 channels per group


# --------------------------------------------------------------------------- through the pipeline
def _chain_model():
    """stem (3 -> 16, stays NCHW) -> dw -> pw (relu6) -> grouped -> residual add -> channel split
    and concat (MixConv-style, two depthwise kernel sizes) -> global average pool -> output."""
    rng = np.random.default_rng(3)
    inits, nodes = [], []

    def conv(x, c, o, k, s=1, g=1, act=None, name=None):
        wn, bn, y = f"w_{name}", f"b_{name}", f"y_{name}"
        inits.extend([numpy_helper.from_array((rng.standard_normal((o, c // g, k, k)) / np.sqrt(c // g * k * k))
                                              .astype("float32"), wn),
                      numpy_helper.from_array((rng.standard_normal(o) * 0.1).astype("float32"), bn)])
        nodes.append(helper.make_node("Conv", [x, wn, bn], [y], kernel_shape=[k, k], strides=[s, s],
                                      pads=[k // 2] * 4, group=g))
        if act == "relu":
            nodes.append(helper.make_node("Relu", [y], [y + "_a"]))
            return y + "_a"
        if act == "relu6":
            nodes.append(helper.make_node("Clip", [y, "zero", "six"], [y + "_a"]))
            return y + "_a"
        return y

    inits += [numpy_helper.from_array(np.array(0, np.float32), "zero"),
              numpy_helper.from_array(np.array(6, np.float32), "six"),
              numpy_helper.from_array(np.array([16, 16], np.int64), "split")]
    x = conv("x", 3, 16, 3, 2, act="relu6", name="stem")
    x = conv(x, 16, 16, 3, 1, 16, act="relu6", name="dw")
    x = conv(x, 16, 32, 1, act="relu6", name="pw")
    r = conv(x, 32, 32, 3, 1, 2, act="relu", name="group")
    nodes.append(helper.make_node("Add", [x, r], ["res"]))
    nodes.append(helper.make_node("Split", ["res", "split"], ["s0", "s1"], axis=1))
    a = conv("s0", 16, 16, 3, 1, 16, name="mix3")
    b = conv("s1", 16, 16, 5, 1, 16, name="mix5")
    nodes.append(helper.make_node("Concat", [a, b], ["cat"], axis=1))
    nodes.append(helper.make_node("GlobalAveragePool", ["cat"], ["y"]))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 35, 45])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ort(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _check_and_kernels(model, x, layout="blocked") -> list[str]:
    """Compile for the host, compare with onnxruntime (the issue's rel. 1e-4), return the names of
    the functions our pipeline put in the module."""
    got = compile_tvm(model, target="x86", layout=layout)(x)[0]
    ref = _ort(model, x)
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-4
    with HOST:
        lowered = edgeconv_stage1("x86", layout=layout)(import_model(model)[0])
    return [gv.name_hint for gv in lowered.get_global_vars()]


def _ops(mod, name: str) -> int:
    count = 0

    def _visit(expr):
        nonlocal count
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == name:
            count += 1

    relax.analysis.post_order_visit(mod["main"], _visit)
    return count


def test_layout_transforms_only_at_the_edges():
    mod, _, _ = import_model(_chain_model())
    prepare = tvm.transform.Sequential([relax.transform.FoldConstant(), ClampAsOps(), SplitAsSections()])
    with HOST:
        blocked = BlockedLayout(target_info())(prepare(mod))
    convs = []
    relax.analysis.post_order_visit(
        blocked["main"], lambda e: convs.append(str(e.attrs.data_layout))
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) and e.op.name == "relax.nn.conv2d" else None)
    # the stem has 3 input channels and stays NCHW; every other conv is blocked
    assert convs == ["NCHW"] + ["NCHW8c"] * 5
    # into NCHW8c after the stem, back to NCHW after the pool; weights and biases are folded
    assert _ops(blocked, "relax.layout_transform") == 2


@pytest.mark.parametrize("layout", ["blocked", "nchw"])
def test_chain_matches_onnxruntime(layout):
    model = _chain_model()
    x = np.random.default_rng(4).standard_normal((2, 3, 35, 45)).astype("float32")
    names = _check_and_kernels(model, x, layout)
    # our scheduled NCHW <-> NCHW8c transforms after the stem and after the pool (blocked only)
    assert ("ec_to_nchw8c_2x16x18x23" in names) == (layout == "blocked"), names
    assert ("ec_from_nchw8c_2x32x1x1" in names) == (layout == "blocked"), names
    kernels = [k for k in names if k.startswith("ec_") and not k.startswith(("ec_to_", "ec_from_"))]
    stem = [k for k in kernels if "_2x3x35x45_" in k]
    assert len(stem) == 1 and len(kernels) == 6, kernels
    assert all(k.endswith("_nchw8c") == (layout == "blocked" and k not in stem) for k in kernels), kernels


def test_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="layout must be one of"):
        compile_tvm(_chain_model(), target="x86", layout="nhwc")


def _mixconv_model(sizes=(16, 8, 8), kernels=(3, 5, 7, 3)):
    """MixConv with unequal (exponential) channel splits: Split -> depthwise k_i -> Concat."""
    rng = np.random.default_rng(5)
    C = sum(sizes)
    inits = [numpy_helper.from_array(np.array(sizes, np.int64), "sizes")]
    nodes = [helper.make_node("Split", ["x", "sizes"], [f"s{i}" for i in range(len(sizes))], axis=1)]
    for i, (c, k) in enumerate(zip(sizes, kernels)):
        inits.append(numpy_helper.from_array((rng.standard_normal((c, 1, k, k)) / k).astype("float32"), f"w{i}"))
        nodes.append(helper.make_node("Conv", [f"s{i}", f"w{i}"], [f"d{i}"], kernel_shape=[k, k], pads=[k // 2] * 4,
                                      group=c))
    nodes.append(helper.make_node("Concat", [f"d{i}" for i in range(len(sizes))], ["y"], axis=1))
    graph = helper.make_graph(nodes, "mixconv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, 19, 21])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("sizes", [(16, 8, 8), (8, 8, 8), (16, 12, 12, 8)])
def test_mixconv_splits_in_blocked_layout(sizes):
    """Unequal splits survive ConvertLayout (TVM keeps split indices in channels; we pass
    sections); a branch whose channels are not whole 8-channel blocks stays NCHW."""
    model = _mixconv_model(sizes)
    x = np.random.default_rng(6).standard_normal((1, sum(sizes), 19, 21)).astype("float32")
    convs = [k for k in _check_and_kernels(model, x) if k.startswith("ec_depthwise")]
    assert len(convs) == len(sizes), convs
    for k in convs:
        channels = int(re.search(r"_g(\d+)_", k).group(1))
        assert k.endswith("_nchw8c") == (channels % 8 == 0), convs


def test_a_lone_conv_stays_nchw():
    """Entering and leaving the blocked layout does not pay for one conv (BlockedLayout docs)."""
    model = _mixconv_model((8, 12), (3, 3))
    with HOST:
        lowered = edgeconv_stage1("x86")(import_model(model)[0])
    names = [gv.name_hint for gv in lowered.get_global_vars() if gv.name_hint.startswith("ec_")]
    assert names and not [n for n in names if "nchw8c" in n], names


def test_symbolic_batch_runs_on_our_kernels_and_symbolic_width_warns():
    """A symbolic batch is the kernels' outer loop (one module, any batch); a symbolic spatial
    dim is not silently left on the slow path: one warning names the convs and the reason."""
    model = _mixconv_model((8, 8))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "generic lowering" warning
        cm = compile_tvm(model, target="x86")
    for batch in (1, 3):
        x = np.random.default_rng(7).standard_normal((batch, 16, 19, 21)).astype("float32")
        ref = _ort(model, x)
        assert np.abs(cm(x)[0] - ref).max() / np.abs(ref).max() < 1e-4  # as in _check_and_kernels
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "width"
    with pytest.warns(UserWarning, match=r"2 op\(s\) left to TVM's generic.*conv2d \(symbolic dim.*x2.*input_shapes"):
        compile_tvm(model, target="x86")


@pytest.mark.parametrize("shape,block", [((2, 16, 5, 13), 8), ((1, 32, 4, 16), 8), ((1, 32, 3, 7), 16),
                                         ((1, 8, 3, 5), 4)])
@pytest.mark.parametrize("to_blocked", [True, False])
def test_layout_kernels_match_numpy(shape, block, to_blocked):
    """Our NCHW <-> NCHW[b]c kernels, with and without a W tail of the vector width."""
    from edgeconv.exporters.tvm.conv_blocked import layout_primfunc

    n, c, h, w = shape
    plain = np.random.default_rng(9).standard_normal(shape).astype("float32")
    blocked = np.ascontiguousarray(plain.reshape(n, c // block, block, h, w).transpose(0, 1, 3, 4, 2))
    src, want = (plain, blocked) if to_blocked else (blocked, plain)
    with tvm.transform.PassContext(opt_level=3, config=build_config()):
        kernel = tvm.compile(layout_primfunc(n, c, h, w, block, to_blocked), target=HOST).jit()
    dev = tvm.cpu()
    out = tvm.runtime.tensor(np.zeros_like(want), dev)
    kernel(tvm.runtime.tensor(src, dev), out)
    np.testing.assert_array_equal(out.numpy(), want)  # a pure copy: bit-exact


def _shuffle_model(groups=4):
    """ShuffleNet unit core: grouped 1x1 -> channel shuffle -> depthwise 3x3 -> grouped 1x1."""
    rng = np.random.default_rng(10)
    C, H, W = 32, 9, 13

    def weight(name, shape):
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype("float32"),
                                       name)

    inits = [weight("w1", (C, C // groups, 1, 1)), weight("w2", (C, 1, 3, 3)), weight("w3", (C, C // groups, 1, 1)),
             numpy_helper.from_array(np.array([1, groups, C // groups, H, W], np.int64), "split_shape"),
             numpy_helper.from_array(np.array([1, C, H, W], np.int64), "merge_shape")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], kernel_shape=[1, 1], group=groups),
             helper.make_node("Reshape", ["a", "split_shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t", "merge_shape"], ["s"]),
             helper.make_node("Conv", ["s", "w2"], ["d"], kernel_shape=[3, 3], pads=[1] * 4, group=C),
             helper.make_node("Conv", ["d", "w3"], ["y"], kernel_shape=[1, 1], group=groups)]
    graph = helper.make_graph(nodes, "shuffle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, H, W])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("groups", [2, 4])  # 8 groups: 4 channels per group, not blocked
def test_channel_shuffle_stays_blocked(groups):
    model = _shuffle_model(groups)
    x = np.random.default_rng(11).standard_normal((1, 32, 9, 13)).astype("float32")
    names = [k for k in _check_and_kernels(model, x) if k.startswith("ec_")]
    assert f"ec_shuffle_g{groups}_1x32x9x13_nchw8c" in names, names
    # the only layout transforms are at the input and the output
    assert sorted(n for n in names if n.startswith(("ec_to_", "ec_from_"))) == [
        "ec_from_nchw8c_1x32x9x13", "ec_to_nchw8c_1x32x9x13"], names


@pytest.mark.parametrize("index", [
    lambda o, i, h, w: [o // 8, i // 8, h, w, i % 8, o % 8],  # OIHW -> OIHW8i8o
    lambda o, i, h, w: [o // 8, i, h, w, o % 8],  # depthwise weights: OIHW -> OIHW1i8o (only O split)
    lambda o, i, h, w: [o // 8, i, h, w, tvm.tirx.IntImm("int64", 0), o % 8],  # OIHW1i8o as TVM writes it (i % 1 -> 0)
    lambda n, c, h, w: [n, c // 4, h, w, c % 4],  # NCHW -> NCHW4c
])
def test_host_layout_transform_matches_tvm_index_map(index):
    """Weights are moved into the blocked layout by numpy; TVM's own (per-element, slow)
    IndexMap.map_tensor is the reference."""
    from edgeconv.exporters.tvm.layout import _host_layout_transform

    im = tvm.tirx.IndexMap.from_func(index)
    arr = np.random.default_rng(0).standard_normal((16, 8, 3, 5)).astype("float32")
    assert np.array_equal(_host_layout_transform(im, arr), im.map_tensor(tvm.runtime.tensor(arr)).numpy())


def test_host_constant_folding_gives_tvm_folding_bits():
    """BatchNorm's ``sqrt(var + eps)``, ``(w - m) * s / d``, the ONNX Clip bound
    ``where(isnan(c), -inf, c)`` and a permute + reshape chain, folded by numpy
    (FoldConstantOnHost) vs by relax's own FoldConstant (LLVM kernels): the same bits, and
    nothing left to fold."""
    from edgeconv.exporters.tvm.layout import FoldConstantOnHost, _has_constant_call

    rng = np.random.default_rng(5)
    c = [relax.const(rng.standard_normal((8, 1, 1)).astype("float32") ** 2) for _ in range(4)]
    w = relax.const(rng.standard_normal((6, 8)).astype("float32"))
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((8, 1, 1), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            d = bb.emit(relax.op.sqrt(relax.op.add(c[0], relax.const(1e-5, "float32"))))
            s = bb.emit(relax.op.divide(relax.op.multiply(relax.op.subtract(c[1], c[2]), c[3]), d))
            nan = relax.const(np.float32("nan"))
            lo = bb.emit(relax.op.where(relax.op.isnan(nan), relax.const(-np.inf, "float32"), nan))
            r = bb.emit(relax.op.reshape(relax.op.permute_dims(w), (48,)))
            out = bb.emit_output(relax.Tuple([relax.op.add(x, s), relax.op.maximum(x, lo), r]))
        bb.emit_func_output(out)
    mod = bb.get()
    with HOST:
        host, stock = FoldConstantOnHost()(mod), relax.transform.FoldConstant()(mod)
    assert not _has_constant_call(host)

    def _consts(m):
        found = []
        relax.analysis.post_order_visit(m["main"], lambda e: found.append(e.value.numpy()) if isinstance(
            e, tvm.ir.expr.Constant) and hasattr(e.ty, "ndim") else None)
        return found

    got, want = _consts(host), _consts(stock)
    assert len(got) == len(want) == 3
    for g, ref in zip(got, want):
        assert g.dtype == ref.dtype and np.array_equal(g, ref, equal_nan=True)
