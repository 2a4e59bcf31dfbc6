"""edgeconv's TVM pipeline on graphs nobody here wrote: random multi-conv ONNX graphs built with
onnx.helper, compiled with compile_tvm in both layouts, every output against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeconv.exporters.tvm import compile_tvm

# float32 accumulation in a different order: with fan-in n <= 400 terms and weights scaled by
# 1/sqrt(n), the sum has |error| <= n * eps * sum|terms| ~ 400 * 1.2e-7 * O(sqrt(n)); measured
# errors are ~1e-6. 1e-4 of the output's scale leaves room without hiding a wrong pad/stride
# (which changes outputs by O(1)).
TOL = 1e-4


def _conv_node(rng, name: str, src: str, C: int, H: int, W: int, inits: list, nodes: list,
               pads=None, kernel=None) -> tuple[str, int, int, int]:
    """One random Conv (+ optional bias, Relu or Clip) reading ``src`` (C x H x W); returns its
    output name and shape. Retries until the output is at least 1x1."""
    while True:
        kh, kw = kernel or (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
        sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        dh, dw = (int(rng.integers(1, 3)), int(rng.integers(1, 3))) if rng.random() < 0.3 else (1, 1)
        if pads is None:
            p = [int(v) for v in rng.integers(0, 3, 4)] if rng.random() < 0.5 else [int(rng.integers(0, 3))] * 4
        else:
            p = list(pads)
        oh = (H + p[0] + p[2] - dh * (kh - 1) - 1) // sh + 1
        ow = (W + p[1] + p[3] - dw * (kw - 1) - 1) // sw + 1
        if oh >= 1 and ow >= 1:
            break
    divisors = [g for g in range(1, C + 1) if C % g == 0]
    r = rng.random()
    groups = C if r < 0.3 else (int(rng.choice(divisors)) if r < 0.6 else 1)  # depthwise / group / dense
    O = groups * int(rng.integers(1, 3)) if groups == C else int(rng.choice([8, 16]))
    if O % groups:
        O = groups * max(1, O // groups)
    fan_in = C // groups * kh * kw
    w = (rng.standard_normal((O, C // groups, kh, kw)) / np.sqrt(fan_in)).astype(np.float32)
    inits.append(numpy_helper.from_array(w, f"{name}_w"))
    inputs = [src, f"{name}_w"]
    if rng.random() < 0.5:
        inits.append(numpy_helper.from_array(rng.standard_normal(O).astype(np.float32), f"{name}_b"))
        inputs.append(f"{name}_b")
    out = f"{name}_y"
    nodes.append(helper.make_node("Conv", inputs, [out], kernel_shape=[kh, kw], strides=[sh, sw],
                                  dilations=[dh, dw], pads=p, group=groups))
    act = rng.random()
    if act < 0.3:
        nodes.append(helper.make_node("Relu", [out], [f"{name}_a"]))
        out = f"{name}_a"
    elif act < 0.5:
        inits.append(numpy_helper.from_array(np.array(0.0, np.float32), f"{name}_lo"))
        inits.append(numpy_helper.from_array(np.array(6.0, np.float32), f"{name}_hi"))
        nodes.append(helper.make_node("Clip", [out, f"{name}_lo", f"{name}_hi"], [f"{name}_a"]))
        out = f"{name}_a"
    return out, O, oh, ow


def _model(x_shape, nodes, inits, outputs) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "random_convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, shape) for o, shape in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return onnx.shape_inference.infer_shapes(model)


def _random_graph(seed: int, batch: int | str = 1) -> tuple[onnx.ModelProto, tuple]:
    """Two branches from the input (one of them a twin differing only in pads) and a chain of
    convs; every branch end and chain step is an output."""
    rng = np.random.default_rng(seed)
    C = int(rng.choice([3, 4, 8, 16]))
    H, W = int(rng.integers(5, 20)), int(rng.integers(5, 20))
    nodes, inits, outputs = [], [], []
    k = (3, 3)
    for name, pads in (("twin_a", [1, 1, 1, 1]), ("twin_b", [0, 1, 2, 0])):
        out, o, h, w = _conv_node(rng, name, "x", C, H, W, inits, nodes, pads=pads, kernel=k)
        outputs.append((out, [batch, o, h, w]))
    src, c, h, w = "x", C, H, W
    for i in range(int(rng.integers(2, 5))):
        src, c, h, w = _conv_node(rng, f"chain{i}", src, c, h, w, inits, nodes)
        outputs.append((src, [batch, c, h, w]))
    return _model((batch, C, H, W), nodes, inits, outputs), (1, C, H, W)


def _check(model: onnx.ModelProto, x: np.ndarray, layout: str, compiled=None):
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = (compiled or compile_tvm(model, layout=layout))(x)
    assert len(got) == len(ref)
    for name, g, r in zip([o.name for o in model.graph.output], got, ref):
        assert g.shape == r.shape, (name, g.shape, r.shape)
        scale = max(1.0, float(np.abs(r).max()))
        err = float(np.abs(g - r).max()) / scale
        assert err < TOL, f"{layout} {name}: max error {err:.2e} of scale {scale:.2f}"


@pytest.mark.parametrize("layout", ["nchw", "blocked"])
def test_convs_differing_only_in_pads_get_their_own_kernels(layout):
    """The reported repro: conv 3x3 pad 1 and conv 3x3 pad 0 on the same shape (they shared one
    kernel: "Argument 2 type mismatch"), and pads that keep the output size (silently wrong)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 8, 16, 16)).astype(np.float32)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 8, 3, 3)) / 8).astype(np.float32), f"w{i}")
             for i in range(4)]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["p1"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w1"], ["p0"], pads=[0, 0, 0, 0]),
        # same output size (16x16), different pads: top/left vs bottom/right
        helper.make_node("Conv", ["x", "w2"], ["tl"], pads=[2, 2, 0, 0]),
        helper.make_node("Conv", ["x", "w3"], ["br"], pads=[0, 0, 2, 2]),
    ]
    shapes = {"p1": 16, "p0": 14, "tl": 16, "br": 16}
    _check(_model(x.shape, nodes, inits, [(k, [1, 8, v, v]) for k, v in shapes.items()]), x, layout)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("layout", ["nchw", "blocked"])
def test_random_conv_graphs_match_onnxruntime(seed, layout):
    model, shape = _random_graph(seed)
    x = np.random.default_rng(100 + seed).standard_normal(shape).astype(np.float32)
    _check(model, x, layout)


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("layout", ["nchw", "blocked"])
def test_random_conv_graphs_with_symbolic_batch(seed, layout):
    """A symbolic batch compiles to our kernels (no generic-lowering warning) and one module
    serves batch 1 and 3."""
    import warnings

    model, shape = _random_graph(seed, batch="batch")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        compiled = compile_tvm(model, layout=layout)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch,) + shape[1:]).astype(np.float32)
        _check(model, x, layout, compiled)


# --------------------------------------------------------------------------- edgeconv op defaults
_DEFORM_DEFAULTED = ("strides", "pads", "dilations", "group", "offset_group")


@pytest.mark.parametrize("fallback", ["standard", "decomposed"])
def test_deform_conv_with_default_attributes_runs_everywhere(fallback):
    """An ``edgeconv.DeformConv2d`` node that leaves every attribute at its documented default
    (as a foreign exporter may write it) runs on onnxruntime + our kernels, on stock onnxruntime
    through the fallback function, and through compile_tvm (was: "no value in Constant")."""
    import torch

    from edgeconv.exporters.onnx import DEFORM_OP, DOMAIN, custom_ops_available, export_onnx, ort_session
    from edgeconv.layers import DeformConv2d

    torch.manual_seed(0)
    layer = DeformConv2d(8, 8, 3, padding=0).eval()  # stride 1, pad 0, dilation 1, 1 group: defaults
    torch.nn.init.normal_(layer.conv_offset.weight, std=0.3)  # non-trivial offsets
    x = torch.randn(1, 8, 12, 12)
    with torch.no_grad():
        ref = layer(x).numpy()
    proto = export_onnx(layer, (x,), deform_fallback=fallback)
    (node,) = [n for n in proto.graph.node if n.domain == DOMAIN and n.op_type == DEFORM_OP]
    kept = [a for a in node.attribute if a.name not in _DEFORM_DEFAULTED]
    del node.attribute[:]
    node.attribute.extend(kept)
    feed = {proto.graph.input[0].name: x.numpy()}
    # float32 bilinear sampling + a 72-term reduction in another order: ~1e-6 measured
    tol = 1e-4
    assert custom_ops_available(), "the edgeconv kernel library is part of `make setup`"
    for custom in (True, False):
        got = ort_session(proto, custom_ops=custom).run(None, feed)[0]
        assert np.abs(got - ref).max() < tol, f"onnxruntime custom_ops={custom}"
    got = compile_tvm(proto, input_shapes={proto.graph.input[0].name: list(x.shape)})(x.numpy())[0]
    assert np.abs(got - ref).max() < tol, "compile_tvm"


# --------------------------------------------------------------------------- quiet
def test_compile_of_default_model_writes_no_warnings_to_stderr(tmp_path):
    """TVM's C++ log (e.g. "Fast mode segfaults ..." from gathers) and known-harmless Python
    warnings must not reach the user: compile + run the default model in a fresh process (C++
    logging goes straight to fd 2) and read its stderr."""
    import subprocess
    import sys

    import torch

    from edgeconv.exporters.onnx import export_onnx
    from edgeconv.models import create_model, get_entry

    entry = get_entry("edgenet")  # the CLI's default model
    path = tmp_path / "edgenet.onnx"
    export_onnx(create_model("edgenet").eval(), (torch.randn(*entry.default_input),), str(path))
    code = (
        "import numpy as np\n"
        "from edgeconv.exporters.tvm import compile_tvm\n"
        f"cm = compile_tvm({str(path)!r})\n"
        f"cm(np.zeros({tuple(entry.default_input)!r}, np.float32))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert not lines, "stderr of compile_tvm:\n" + "\n".join(lines[:20])


# --------------------------------------------------------------------------- reporting
def test_one_warning_names_every_op_left_on_the_generic_lowering():
    """1-D, 3-D and transposed convs and a float64 conv2d: one warning, each named with its
    reason; the model still compiles and matches onnx's reference implementation."""
    rng = np.random.default_rng(3)

    def w(name, shape, dtype=np.float32):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(dtype), name)

    nodes = [
        helper.make_node("Conv", ["x1", "w1"], ["y1"], pads=[1, 1]),
        helper.make_node("Conv", ["x3", "w3"], ["y3"]),
        helper.make_node("ConvTranspose", ["x2", "wt"], ["yt"], strides=[2, 2]),
        helper.make_node("Conv", ["xd", "wd"], ["yd"]),
    ]
    inputs = {"x1": ([1, 4, 10], TensorProto.FLOAT), "x3": ([1, 4, 5, 5, 5], TensorProto.FLOAT),
              "x2": ([1, 4, 6, 6], TensorProto.FLOAT), "xd": ([1, 4, 6, 6], TensorProto.DOUBLE)}
    outputs = {"y1": ([1, 8, 10], TensorProto.FLOAT), "y3": ([1, 8, 3, 3, 3], TensorProto.FLOAT),
               "yt": ([1, 8, 13, 13], TensorProto.FLOAT), "yd": ([1, 8, 4, 4], TensorProto.DOUBLE)}
    graph = helper.make_graph(
        nodes, "generic", [helper.make_tensor_value_info(k, t, s) for k, (s, t) in inputs.items()],
        [helper.make_tensor_value_info(k, t, s) for k, (s, t) in outputs.items()],
        [w("w1", (8, 4, 3)), w("w3", (8, 4, 3, 3, 3)), w("wt", (4, 8, 3, 3)), w("wd", (8, 4, 3, 3), np.float64)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.warns(UserWarning) as record:
        cm = compile_tvm(model)
    ours = [str(r.message) for r in record if "generic, unscheduled lowering" in str(r.message)]
    assert len(ours) == 1, ours
    for expected in ("conv1d (1-D conv", "conv3d (3-D conv", "conv2d_transpose (transposed conv",
                     "conv2d (dtype float64"):
        assert expected in ours[0], ours[0]
    feeds = {k: rng.standard_normal(s).astype(np.float64 if t == TensorProto.DOUBLE else np.float32)
             for k, (s, t) in inputs.items()}
    from onnx.reference import ReferenceEvaluator  # onnxruntime has no float64 Conv

    ref = ReferenceEvaluator(model).run(None, feeds)
    for got, want in zip(cm(*feeds.values()), ref):
        assert np.abs(got - want).max() < TOL * max(1.0, float(np.abs(want).max()))


def test_plan_overrides_are_part_of_the_kernel_cache_key():
    """Two overrides of the planner give two kernels (a knob set after a first compile used to
    do nothing: it was read from the environment inside an lru_cached builder)."""
    import tvm_ffi

    from edgeconv.exporters.tvm.conv import ConvSpec, PlanOverrides, TargetInfo, schedule_conv2d

    spec = ConvSpec(1, 16, 14, 14, 32, 3, 3, padding=(1, 1, 1, 1))
    tinfo = TargetInfo()
    default = schedule_conv2d(spec, tinfo)
    forced = schedule_conv2d(spec, tinfo, PlanOverrides(tile=(1, 1, 1), order="oo_wt"))
    assert default.attrs["tirx.is_scheduled"] and forced.attrs["tirx.is_scheduled"]
    assert not tvm_ffi.structural_equal(default, forced)
    assert schedule_conv2d(spec, tinfo, PlanOverrides()) is default  # equal overrides: cache hit
    with pytest.raises(ValueError, match="order"):
        PlanOverrides(order="sideways")
