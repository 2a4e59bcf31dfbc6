"""Scheduled elementwise chains / reductions and the GEMV path of 1x1-image convs, checked against
numpy and onnxruntime, on single ops and on random multi-op graphs of real-model blocks."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
import onnxruntime as ort
import onnx

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from tvm import s_tir, te  # noqa: E402

from edgeconv.exporters.tvm import compile_tvm  # noqa: E402
from edgeconv.exporters.tvm.elementwise import Elementwise, InnerSpatialReduction  # noqa: E402
from edgeconv.exporters.tvm.gemv import blocked_gemv_weight  # noqa: E402
from edgeconv.exporters.tvm.profile import profile_vm  # noqa: E402

HOST = tvm.target.Target({"kind": "llvm"})


def _run_prim(func, *arrays_and_out_shape):
    *arrays, out_shape = arrays_and_out_shape
    lib = tvm.compile(tvm.IRModule({"main": func}), target=HOST)
    dev = tvm.cpu()
    out = tvm.runtime.tensor(np.zeros(out_shape, "float32"), dev)
    lib["main"](*[tvm.runtime.tensor(a, dev) for a in arrays], out)
    return out.numpy()


def test_elementwise_rule_hardswish_chain():
    shape = (1, 5, 7, 9, 16)
    x = te.placeholder(shape, "float32", name="x")
    a = te.compute(shape, lambda *i: x[i] + 3.0, name="a")
    m = te.compute(shape, lambda *i: te.min(te.max(a[i], 0.0), 6.0), name="m")
    y = te.compute(shape, lambda *i: x[i] * m[i] / 6.0, name="y")
    func = te.create_prim_func([x, y])
    sch = Elementwise(16).apply(func, HOST, False)
    assert sch is not None
    text = sch.mod.script()
    assert "T.vectorized" in text and "T.parallel" in text and "sblock(\"a\")" not in text
    xv = np.random.default_rng(0).uniform(-5, 5, shape).astype("float32")
    ref = xv.astype(np.float64) * np.clip(xv.astype(np.float64) + 3, 0, 6) / 6
    # one float32 rounding per op
    np.testing.assert_allclose(_run_prim(sch.mod["main"], xv, shape), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape,axes", [((1, 3, 7, 9, 16), (2, 3)), ((2, 1, 5, 5, 16), (2, 3))])
def test_inner_spatial_reduction_rule_blocked_mean(shape, axes):
    x = te.placeholder(shape, "float32", name="x")
    k2, k3 = te.reduce_axis((0, shape[2])), te.reduce_axis((0, shape[3]))
    red = te.compute((shape[0], shape[1], 1, 1, shape[4]),
                     lambda n, c, h, w, i: te.sum(x[n, c, k2, k3, i], axis=[k2, k3]), name="red")
    out = te.compute(red.shape, lambda *i: red[i] / float(shape[2] * shape[3]), name="out")
    sch = InnerSpatialReduction(16).apply(te.create_prim_func([x, out]), HOST, False)
    assert sch is not None and "T.vectorized" in sch.mod.script()
    xv = np.random.default_rng(1).standard_normal(shape).astype("float32")
    ref = xv.astype(np.float64).mean(axis=axes, keepdims=True)
    # 63 float32 additions: relative error ~ 63 * 6e-8
    np.testing.assert_allclose(_run_prim(sch.mod["main"], xv, ref.shape), ref, rtol=1e-5, atol=1e-6)


def test_blocked_gemv_weight_layout():
    rng = np.random.default_rng(2)
    dense = rng.standard_normal((13, 21)).astype("float32")
    b = 8
    blk = blocked_gemv_weight(dense, b)
    assert blk.shape == (2, 3, 1, 1, b, b)
    # independent formula of OIHW[b]i[b]o: blk[ob, cb, 0, 0, ci, co] = W[ob*b + co, cb*b + ci]
    for o in range(16):
        for c in range(24):
            want = dense[o, c] if o < 13 and c < 21 else 0.0
            assert blk[o // b, c // b, 0, 0, c % b, o % b] == want


# ----------------------------------------------------------------------------- graphs vs onnxruntime
class _Graph:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, p):
        self.n += 1
        return f"{p}{self.n}"

    def const(self, arr):
        n = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), n))
        return n

    def node(self, op, inputs, **attrs):
        y = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [y], **attrs))
        return y

    def conv(self, x, c, o, k=1, s=1, g=1, pads=None, bias=True):
        w = self.const(self.rng.standard_normal((o, c // g, k, k)) / np.sqrt(c // g * k * k))
        ins = [x, w] + ([self.const(self.rng.standard_normal(o) * 0.1)] if bias else [])
        return self.node("Conv", ins, kernel_shape=[k, k], strides=[s, s], group=g,
                         pads=pads if pads is not None else [k // 2] * 4)

    def act(self, x, kind):
        if kind == "relu":
            return self.node("Relu", [x])
        if kind == "relu6":
            return self.node("Clip", [x, self.const(0.0), self.const(6.0)])
        if kind == "hardswish":  # as pytorchcv exports it: x * relu6(x + 3) / 6
            r6 = self.node("Clip", [self.node("Add", [x, self.const(3.0)]), self.const(0.0), self.const(6.0)])
            return self.node("Div", [self.node("Mul", [x, r6]), self.const(6.0)])
        if kind == "silu":
            return self.node("Mul", [x, self.node("Sigmoid", [x])])
        return x

    def se(self, x, c):
        """squeeze-excite: mean -> 1x1 conv -> relu -> 1x1 conv -> hard sigmoid -> multiply"""
        s = self.node("ReduceMean", [x, self.name_const_axes()], keepdims=1)
        s = self.act(self.conv(s, c, max(c // 4, 8), 1, pads=[0] * 4), "relu")
        s = self.conv(s, max(c // 4, 8), c, 1, pads=[0] * 4)
        s = self.node("Div", [self.node("Clip", [self.node("Add", [s, self.const(3.0)]), self.const(0.0),
                                                 self.const(6.0)]), self.const(6.0)])
        return self.node("Mul", [x, s])

    def name_const_axes(self):
        n = self.name("axes")
        self.inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), n))
        return n

    def model(self, x_shape, out):
        graph = helper.make_graph(self.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                                  [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _check(model, x_shape, seed=0):
    x = np.random.default_rng(seed).standard_normal(x_shape).astype("float32")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"x": x})[0]
    compiled = compile_tvm(model, "x86")
    got = compiled(x)[0]
    # float32 sums of <= 1280 products in another order, through a few layers: 1e-4 of the range
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(ref).max())))
    return {k.name for k in profile_vm(compiled, [x], runs=1, warmup=0).kernels}


def _blocked_gemv_kernels(kernels) -> list:
    """The blocked pointwise kernels on a 1x1 image among ``kernels`` (the GEMV's)."""
    return [n for n in kernels if n.startswith("ec_pointwise_1x1_s1_1x") and "x1x1_to" in n and "nchw" in n]


@pytest.mark.parametrize("c,o,act", [(1280, 1000, None), (37, 13, "relu"), (32, 48, "relu6"), (64, 10, "hardswish")])
def test_gemv_classifier_conv_matches_onnxruntime(c, o, act):
    g = _Graph(c + o)
    y = g.act(g.conv("x", c, o, 1, pads=[0] * 4), act)
    kernels = _check(g.model([1, c, 1, 1], y), [1, c, 1, 1])
    # the conv ran as the blocked GEMV (padded to whole channel blocks), not the NCHW kernel
    assert _blocked_gemv_kernels(kernels), kernels


@pytest.mark.parametrize("k,n", [(1280, 1000), (37, 19)])
def test_gemv_classifier_gemm_matches_onnxruntime(k, n):
    """A Linear head exported as Gemm(transB=1) runs on the blocked GEMV, not on the pointwise
    kernel reading the weights as a 1-channel image."""
    g = _Graph(k + n)
    w = g.const(g.rng.standard_normal((n, k)) / np.sqrt(k))
    b = g.const(g.rng.standard_normal(n))
    flat = g.node("Flatten", ["x"])
    y = g.node("Gemm", [flat, w, b], transB=1)
    kernels = _check(g.model([1, k, 1, 1], y), [1, k, 1, 1])
    assert _blocked_gemv_kernels(kernels) and not [name for name in kernels if name.endswith("_to1")], kernels


def test_mobilenetv3_like_block_matches_onnxruntime():
    """stem (3 channels), hardswish, depthwise, squeeze-excite, residual add, pool, classifier:
    blocked convs, GEMV on the 1x1 image, scheduled elementwise and reductions in one graph."""
    g = _Graph(3)
    x = g.act(g.conv("x", 3, 16, 3, 2), "hardswish")
    r = g.act(g.conv(x, 16, 32, 1, pads=[0] * 4), "hardswish")
    r = g.act(g.conv(r, 32, 32, 3, 1, 32), "relu")
    r = g.se(r, 32)
    r = g.conv(r, 32, 16, 1, pads=[0] * 4)
    x = g.node("Add", [x, r])
    x = g.act(g.conv(x, 16, 48, 1, pads=[0] * 4), "silu")
    x = g.node("GlobalAveragePool", [x])
    y = g.conv(x, 48, 10, 1, pads=[0] * 4)
    _check(g.model([1, 3, 32, 32], y), [1, 3, 32, 32])


@pytest.mark.parametrize("seed", range(4))
def test_random_block_graphs_match_onnxruntime(seed):
    """Random chains of real-model blocks: convs (random kernel, stride, asymmetric pads,
    groups), activations, squeeze-excite, residual adds, then pool + classifier."""
    rng = np.random.default_rng(100 + seed)
    g = _Graph(seed)
    c, hw = int(rng.choice([8, 16, 24, 32])), int(rng.choice([12, 15, 20]))
    x = g.act(g.conv("x", 3, c, 3, 1), "relu")
    for _ in range(int(rng.integers(3, 6))):
        kind = rng.choice(["dw", "pw", "group", "se", "res"])
        if kind == "dw":
            k = int(rng.choice([3, 5]))
            pads = [int(v) for v in rng.integers(0, k // 2 + 1, 4)]
            s = int(rng.choice([1, 2]))
            x = g.act(g.conv(x, c, c, k, s, c, pads=pads), str(rng.choice(["relu6", "hardswish", "silu", None])))
        elif kind == "pw":
            o = int(rng.choice([8, 16, 40, 48]))
            x, c = g.act(g.conv(x, c, o, 1, pads=[0] * 4), str(rng.choice(["relu", "hardswish", None]))), o
        elif kind == "group" and c % 8 == 0:
            x = g.act(g.conv(x, c, c, 3, 1, c // 8), "relu")
        elif kind == "se":
            x = g.se(x, c)
        else:
            x = g.node("Add", [x, g.act(g.conv(x, c, c, 3, 1), "relu")])
    x = g.node("ReduceMean", [x, g.name_const_axes()], keepdims=1)
    y = g.conv(x, c, int(rng.choice([10, 17])), 1, pads=[0] * 4)
    _check(g.model([1, 3, hw, hw], y), [1, 3, hw, hw], seed)
