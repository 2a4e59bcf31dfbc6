"""``optimize_onnx`` / ``edgeconv optimize``: ONNX DeformConv and mmcv/mmdeploy deformable nodes of
files built with ``onnx.helper`` become ``edgeconv.DeformConv2d`` with a fallback function.

References (independent of the code under test):

* standard ``DeformConv`` files: onnxruntime's own ``DeformConv`` kernel on the original file;
* mmdeploy/mmcv files: ``mmcv_deform_conv_numpy`` below, a loop written from mmdeploy's CPU kernel
  (``deformable_im2col_2d`` + GEMM; offsets ``[y0, x0, y1, x1, ...]`` per offset group, the mask
  ``(offset_group, kh*kw)``, zero outside the image) in float64.

Tolerance: ``max|y - ref| <= 1e-5 * max(ref_abs)``, where ``ref_abs`` is the reference run on
``|x|, |w|, |mask|, |b|`` (the sum of the magnitudes of the terms of each output). float32
evaluation in any order errs by at most ~n * 2^-24 of that sum, with n the number of terms and
rounding steps (C/group * kh * kw taps, 4 bilinear corners: < 100 here): 6e-6, below 1e-5. A wrong
offset layout, pad or group mapping gives errors of the order of the output itself.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeconv import cli
from edgeconv.exporters.onnx import (
    DEFORM_OP,
    DOMAIN,
    OptimizeError,
    custom_ops_available,
    optimize_onnx,
    ort_session,
    rewritable_nodes,
)

RTOL = 1e-5


# --------------------------------------------------------------------------- reference
def _bilinear(img, y, x):
    """mmdeploy's ``bilinear_interpolate_2d`` on one (H, W) plane, vectorized over positions."""
    h, w = img.shape
    out = np.zeros(y.shape)
    inside = (y > -1) & (y < h) & (x > -1) & (x < w)
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    ly, lx = y - y0, x - x0
    for yy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
        for xx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
            ok = inside & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            out += np.where(ok, wy * wx * img[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)], 0.0)
    return out


def mmcv_deform_conv_numpy(x, offset, mask, w, b, stride, pads, dilation, groups, offset_groups):
    """DCNv1/v2 in float64; ``pads`` = (top, left, bottom, right)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh, ow = offset.shape[2:]
    kk = kh * kw
    cols = np.zeros((n, c, kk, oh, ow))
    base_y = (np.arange(oh) * stride[0] - pads[0])[:, None]
    base_x = (np.arange(ow) * stride[1] - pads[1])[None, :]
    for bi, ch, (i, j) in itertools.product(range(n), range(c), itertools.product(range(kh), range(kw))):
        gi, k = ch // (c // offset_groups), i * kw + j
        y = base_y + i * dilation[0] + offset[bi, gi * 2 * kk + 2 * k]
        xx = base_x + j * dilation[1] + offset[bi, gi * 2 * kk + 2 * k + 1]
        v = _bilinear(x[bi, ch].astype(np.float64), y, xx)
        cols[bi, ch, k] = v if mask is None else v * mask[bi, gi * kk + k]
    og = o // groups
    out = np.concatenate([np.einsum("ock,nckhw->nohw", w[g * og:(g + 1) * og].reshape(og, cg, kk).astype(np.float64),
                                    cols[:, g * cg:(g + 1) * cg]) for g in range(groups)], axis=1)
    return out if b is None else out + b[None, :, None, None]


def _close(got, ref, ref_abs):
    got = np.asarray(got, np.float64)
    assert got.shape == ref.shape
    err = float(np.abs(got - ref).max())
    assert err <= RTOL * float(ref_abs.max()), f"max abs err {err:.3e} > {RTOL} * {float(ref_abs.max()):.3e}"


# --------------------------------------------------------------------------- model builders
def _out(size, k, s, pb, pe, d):
    return (size + pb + pe - d * (k - 1) - 1) // s + 1


def _data(n, c, h, w, o, k, stride, pads, dilation, groups, og, mask, bias, seed=0, offset_scale=1.5):
    rng = np.random.default_rng(seed)
    oh, ow = _out(h, k[0], stride[0], pads[0], pads[2], dilation[0]), _out(w, k[1], stride[1], pads[1], pads[3], dilation[1])
    d = {
        "X": rng.standard_normal((n, c, h, w), dtype=np.float32),
        "W": rng.standard_normal((o, c // groups, *k), dtype=np.float32),
        "offset": (offset_scale * rng.standard_normal((n, og * 2 * k[0] * k[1], oh, ow))).astype(np.float32),
        "mask": rng.random((n, og * k[0] * k[1], oh, ow), dtype=np.float32) if mask else None,
        "B": rng.standard_normal(o, dtype=np.float32) if bias else None,
    }
    return d


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _model(node, data, opsets, graph_inputs=("X", "offset", "mask")):
    """One-node model: X, offset and mask are graph inputs, W and B initializers (as exporters write)."""
    inputs = [_vi(n, list(data[n].shape)) for n in graph_inputs if data.get(n) is not None]
    inits = [numpy_helper.from_array(data[n], n) for n in ("W", "B")
             if data.get(n) is not None and n not in graph_inputs]
    graph = helper.make_graph([node], "g", inputs, [_vi("Y", [None] * 4)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 9
    return model


def standard_file(data, strides, pads, dilations, group, og, opset=19, **extra):
    ins = ["X", "W", "offset", "B" if data["B"] is not None else "", "mask" if data["mask"] is not None else ""]
    while ins[-1] == "":
        ins.pop()
    node = helper.make_node("DeformConv", ins, ["Y"], name="dcn", strides=list(strides), pads=list(pads),
                            dilations=list(dilations), group=group, offset_group=og, **extra)
    return _model(node, data, [("", opset)])


def mmcv_file(op, domain, data, stride, padding, dilation, groups, og, opset=11, og_attr="deform_groups", **extra):
    if op == "MMCVModulatedDeformConv2d":
        ins = ["X", "offset", "mask", "W"] + (["B"] if data["B"] is not None else [])
    else:
        ins = ["X", "offset", "W"]
    node = helper.make_node(op, ins, ["Y"], name="dcn", domain=domain, stride=list(stride), padding=list(padding),
                            dilation=list(dilation), groups=groups, **{og_attr: og}, **extra)
    return _model(node, data, [("", opset), (domain, 1)])


def _feeds(sess, data):
    return {i.name: data[i.name] for i in sess.get_inputs()}


def _run(model, data, custom_ops):
    sess = ort_session(model, threads=1, custom_ops=custom_ops)
    return sess.run(None, _feeds(sess, data))[0]


def _only_edgeconv(model):
    assert [n.op_type for n in model.graph.node] == [DEFORM_OP]
    assert model.graph.node[0].domain == DOMAIN
    assert [(f.domain, f.name) for f in model.functions] == [(DOMAIN, DEFORM_OP)]
    onnx.checker.check_model(model, full_check=True)


lib_required = pytest.mark.skipif(not custom_ops_available(), reason="edgeconv kernel library not built")


# --------------------------------------------------------------------------- standard DeformConv
STANDARD = [
    # n, c, h, w, o, k, strides, pads (t, l, b, r), dilations, group, og, mask, bias, opset
    (2, 4, 9, 8, 6, (3, 3), (2, 2), (1, 0, 2, 1), (1, 1), 2, 2, True, True, 19),
    (1, 4, 7, 7, 4, (3, 3), (1, 1), (1, 1, 1, 1), (2, 2), 1, 1, False, False, 20),
    (1, 8, 8, 9, 4, (3, 2), (1, 2), (0, 2, 1, 0), (1, 1), 1, 4, True, False, 22),
    (1, 4, 6, 6, 4, (3, 3), (2, 1), (1, 1, 1, 1), (1, 1), 1, 2, False, True, 19),
]


@pytest.mark.parametrize("case", STANDARD, ids=[f"std{i}" for i in range(len(STANDARD))])
def test_standard_deformconv_matches_onnxruntime_deformconv(case):
    n, c, h, w, o, k, strides, pads, dil, group, og, mask, bias, opset = case
    data = _data(n, c, h, w, o, k, strides, pads, dil, group, og, mask, bias)
    original = standard_file(data, strides, pads, dil, group, og, opset, kernel_shape=list(k))
    ref = _run(original, data, custom_ops=False).astype(np.float64)  # onnxruntime's DeformConv
    absdata = {key: None if v is None else np.abs(v) for key, v in data.items()}
    ref_abs = mmcv_deform_conv_numpy(absdata["X"], data["offset"], absdata["mask"], absdata["W"], absdata["B"],
                                     strides, pads, dil, group, og)
    # the numpy loop used for the mmcv files agrees with onnxruntime's DeformConv
    _close(mmcv_deform_conv_numpy(data["X"], data["offset"], data["mask"], data["W"], data["B"],
                                  strides, pads, dil, group, og), ref, ref_abs)
    report = []
    opt = optimize_onnx(original, report=report)
    _only_edgeconv(opt)
    assert [r.source for r in report] == ["ai.onnx::DeformConv"] and report[0].name == "'dcn'"
    assert report[0].attrs == dict(strides=list(strides), pads=list(pads), dilations=list(dil), group=group,
                                   offset_group=og)
    assert opt.graph.node[0].input[3:] == ["mask" if mask else "", "B" if bias else ""]
    _close(_run(opt, data, custom_ops=False), ref, ref_abs)  # fallback function (stock onnxruntime)
    decomposed = optimize_onnx(original, fallback="decomposed")
    _close(_run(decomposed, data, custom_ops=False), ref, ref_abs)  # gather-based fallback
    if custom_ops_available():
        _close(_run(opt, data, custom_ops="require"), ref, ref_abs)  # our kernel


# --------------------------------------------------------------------------- mmdeploy / mmcv
MMCV = [
    # op, domain, n, c, h, w, o, k, stride, padding, dilation, groups, og, bias, opset, og attribute, extra
    ("MMCVModulatedDeformConv2d", "mmdeploy", 2, 4, 9, 8, 6, (3, 3), (2, 2), (1, 1), (1, 1), 1, 2, True, 11,
     "deform_groups", {}),
    ("MMCVModulatedDeformConv2d", "mmcv", 1, 4, 8, 7, 4, (3, 3), (1, 1), (2, 1), (2, 1), 2, 1, False, 11,
     "deformable_groups", {}),
    ("MMCVModulatedDeformConv2d", "mmdeploy", 1, 8, 7, 7, 4, (3, 3), (1, 2), (1, 1), (1, 1), 1, 4, True, 19,
     "deform_groups", {}),
    # groups and offset groups > 1 together: mmcv's rule, input channel c -> offset group c // (C / og)
    ("MMCVModulatedDeformConv2d", "mmcv", 1, 8, 6, 7, 4, (3, 3), (1, 1), (1, 1), (1, 1), 2, 4, True, 11,
     "deform_groups", {}),
    ("MMCVDeformConv2d", "mmcv", 2, 4, 8, 8, 4, (3, 3), (2, 2), (1, 1), (1, 1), 1, 2, False, 11,
     "deform_groups", {"bias": 0, "im2col_step": 32}),
    ("MMCVDeformConv2d", "mmdeploy", 1, 4, 7, 9, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2, 1, False, 13,
     "deform_groups", {}),
]


def _mmcv_case(case, seed=0):
    op, domain, n, c, h, w, o, k, stride, padding, dil, groups, og, bias, opset, og_attr, extra = case
    pads = (padding[0], padding[1], padding[0], padding[1]) if len(padding) == 2 else tuple(padding)
    modulated = op == "MMCVModulatedDeformConv2d"
    data = _data(n, c, h, w, o, k, stride, pads, dil, groups, og, modulated, bias, seed=seed)
    model = mmcv_file(op, domain, data, stride, padding, dil, groups, og, opset, og_attr, **extra)
    ref = mmcv_deform_conv_numpy(data["X"], data["offset"], data["mask"], data["W"], data["B"],
                                 stride, pads, dil, groups, og)
    absdata = {key: None if v is None else np.abs(v) for key, v in data.items()}
    ref_abs = mmcv_deform_conv_numpy(absdata["X"], data["offset"], absdata["mask"], absdata["W"], absdata["B"],
                                     stride, pads, dil, groups, og)
    return model, data, ref, ref_abs, pads


@pytest.mark.parametrize("case", MMCV, ids=[f"{c[0]}-{c[1]}-opset{c[14]}" for c in MMCV])
def test_mmcv_deform_conv_matches_numpy(case):
    model, data, ref, ref_abs, pads = _mmcv_case(case)
    op, domain, opset = case[0], case[1], case[14]
    report = []
    opt = optimize_onnx(model, report=report)
    _only_edgeconv(opt)
    assert report[0].source == f"{domain}::{op}" and report[0].attrs["pads"] == list(pads)
    assert domain not in {o.domain for o in opt.opset_import}  # the mmcv domain is gone
    # opset 11 files get the decomposed body at opset 13 (version-converted); 19+: one DeformConv
    body = {n.op_type for n in opt.functions[0].node}
    assert ("DeformConv" in body) == (opset >= 19)
    assert next(o.version for o in opt.opset_import if o.domain == "") == max(opset, 13)
    _close(_run(opt, data, custom_ops=False), ref, ref_abs)
    if custom_ops_available():
        _close(_run(opt, data, custom_ops="require"), ref, ref_abs)


def test_mmcv_node_in_a_graph_keeps_its_neighbours():
    """offset = Conv(X) feeding the mmdeploy node, Relu after it: only the deformable node changes."""
    case = MMCV[0]
    model, data, _, _, pads = _mmcv_case(case)
    rng = np.random.default_rng(3)
    off_w = (0.3 * rng.standard_normal((data["offset"].shape[1], 4, 3, 3))).astype(np.float32)
    g = model.graph
    g.initializer.append(numpy_helper.from_array(off_w, "off_w"))
    conv = helper.make_node("Conv", ["X", "off_w"], ["offset"], strides=[2, 2], pads=[1, 1, 1, 1])
    g.node[0].output[0] = "d"
    relu = helper.make_node("Relu", ["d"], ["Y"])
    nodes = [conv, g.node[0], relu]
    del g.node[:]
    g.node.extend(nodes)
    keep = [i for i in g.input if i.name != "offset"]
    del g.input[:]
    g.input.extend(keep)
    opt = optimize_onnx(model)
    assert [n.op_type for n in opt.graph.node] == ["Conv", DEFORM_OP, "Relu"]
    offset = ort_session(_conv_only(off_w, data["X"]), custom_ops=False).run(None, {"X": data["X"]})[0]
    ref = np.maximum(mmcv_deform_conv_numpy(data["X"], offset, data["mask"], data["W"], data["B"],
                                            (2, 2), pads, (1, 1), 1, 2), 0)
    absd = {k: None if v is None else np.abs(v) for k, v in data.items()}
    ref_abs = mmcv_deform_conv_numpy(absd["X"], offset, absd["mask"], absd["W"], absd["B"], (2, 2), pads, (1, 1), 1, 2)
    _close(_run(opt, data, custom_ops=False), ref, ref_abs)


def _conv_only(w, x):
    node = helper.make_node("Conv", ["X", "w"], ["Y"], strides=[2, 2], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "c", [_vi("X", list(x.shape))], [_vi("Y", [None] * 4)],
                              [numpy_helper.from_array(w, "w")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 9
    return m


def test_nothing_to_rewrite_returns_an_equal_copy():
    data = _data(1, 2, 5, 5, 2, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 1, False, False)
    node = helper.make_node("Conv", ["X", "W"], ["Y"], pads=[1, 1, 1, 1])
    model = _model(node, data, [("", 13)], graph_inputs=("X",))
    assert rewritable_nodes(model) == []
    report = []
    out = optimize_onnx(model, report=report)
    assert report == [] and out == model and out is not model


def test_optimize_twice_is_idempotent():
    data = _data(1, 4, 7, 7, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 2, True, True)
    once = optimize_onnx(mmcv_file("MMCVModulatedDeformConv2d", "mmdeploy", data, (1, 1), (1, 1), (1, 1), 1, 2))
    assert rewritable_nodes(once) == []
    assert optimize_onnx(once) == once


# --------------------------------------------------------------------------- refusals
def _std(**over):
    data = _data(1, 4, 7, 7, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 1, True, True)
    kw = dict(strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), group=1, og=1)
    kw.update(over)
    return standard_file(data, **kw)


def _mm(op="MMCVModulatedDeformConv2d", **extra):
    data = _data(1, 4, 7, 7, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 1, op == "MMCVModulatedDeformConv2d", True)
    return mmcv_file(op, "mmdeploy", data, (1, 1), (1, 1), (1, 1), 1, 1, **extra)


def _dynamic_weight():
    m = _std(kernel_shape=[3, 3])
    w = m.graph.initializer[0]
    m.graph.input.append(_vi("W", [None] * 4))
    inits = [i for i in m.graph.initializer if i.name != w.name]
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    return m


def _float64():
    m = _std()
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    return m


def _in_subgraph():
    inner = _std().graph
    inner.ClearField("input")
    outer_node = helper.make_node("If", ["cond"], ["Y"], then_branch=inner, else_branch=inner)
    g = helper.make_graph([outer_node], "o", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                          [_vi("Y", [None] * 4)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])


REFUSALS = [
    ("opset 18", lambda: _std(opset=18), r"node 'dcn' \(ai.onnx::DeformConv\): the model imports opset 18, but "
                                         r"DeformConv exists from opset 19 \(unsupported opset\)"),
    ("3-D", lambda: _std(strides=(1, 1, 1)), r"attribute strides=\[1, 1, 1\] has 3 values, expected 2"),
    ("unknown attribute", lambda: _mm(foo=1), r"node 'dcn' \(mmdeploy::MMCVModulatedDeformConv2d\): unknown attribute 'foo'"),
    ("kernel_shape dynamic", _dynamic_weight, r"kernel_shape=\[3, 3\] cannot be checked against W \('W'\), "
                                              r"whose kernel dims are not static"),
    ("kernel_shape mismatch", lambda: _std(kernel_shape=[5, 5]), r"kernel_shape=\[5, 5\] differs from W's kernel dims \[3, 3\]"),
    ("mmcv bias", lambda: _mm("MMCVDeformConv2d", bias=1), r"bias=1: mmcv's DeformConv2d has no bias"),
    ("ambiguous padding", lambda: mmcv_file("MMCVDeformConv2d", "mmdeploy", _data(1, 4, 7, 7, 4, (3, 3), (1, 1), (1, 2, 1, 2), (1, 1), 1, 1, False, False),
                                            (1, 1), (1, 1, 2, 2), (1, 1), 1, 1), r"padding=\[1, 1, 2, 2\] is ambiguous"),
    ("groups disagree", lambda: _mm(deformable_groups=2), r"deform_groups=1 and deformable_groups=2 disagree"),
    ("float64", _float64, r"input X \('X'\) is double; edgeconv.DeformConv2d runs float32 only"),
    ("offset channels", lambda: _std(og=2), r"offset has 18 channels, expected 2\*offset_group\*kh\*kw = 36"),
    ("subgraph", _in_subgraph, r"is inside the subgraph of If #0; only top-level nodes can be rewritten"),
    ("fallback standard at 11", lambda: (_mm(), "standard"), r"fallback='standard' is one ONNX DeformConv, which needs opset >= 19"),
]


@pytest.mark.parametrize("build,message", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_name_the_node_and_the_reason(build, message):
    built = build()
    model, fallback = built if isinstance(built, tuple) else (built, "auto")
    with pytest.raises(OptimizeError, match=message) as info:
        optimize_onnx(model, fallback=fallback)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- TVM
@pytest.mark.parametrize("which", ["standard", "mmdeploy"])
def test_compile_tvm_accepts_standard_and_mmdeploy_files(which):
    tvm_mod = pytest.importorskip("edgeconv.exporters.tvm")
    if which == "standard":
        n, c, h, w, o, k, strides, pads, dil, group, og, mask, bias, opset = STANDARD[0]
        data = _data(n, c, h, w, o, k, strides, pads, dil, group, og, mask, bias)
        model = standard_file(data, strides, pads, dil, group, og, opset)
        ref = _run(model, data, custom_ops=False).astype(np.float64)  # onnxruntime's DeformConv
        absd = {key: None if v is None else np.abs(v) for key, v in data.items()}
        ref_abs = mmcv_deform_conv_numpy(absd["X"], data["offset"], absd["mask"], absd["W"], absd["B"],
                                         strides, pads, dil, group, og)
    else:
        model, data, ref, ref_abs, _ = _mmcv_case(MMCV[0])
    cm = tvm_mod.compile_tvm(model, target="x86")  # TVM's ONNX frontend alone: OpNotImplemented: DeformConv
    _close(cm(data["X"], data["offset"], data["mask"])[0], ref, ref_abs)


def test_compile_tvm_refusal_is_the_optimize_error():
    tvm_mod = pytest.importorskip("edgeconv.exporters.tvm")
    with pytest.raises(OptimizeError, match="unknown attribute 'foo'"):
        tvm_mod.compile_tvm(_mm(foo=1), target="x86")


# --------------------------------------------------------------------------- CLI
def _call(capsys, *args):
    try:
        rc = cli.main([str(a) for a in args])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_optimize_writes_a_file_that_runs(capsys, tmp_path):
    model, data, ref, ref_abs, _ = _mmcv_case(MMCV[0])
    src, dst = tmp_path / "mmdeploy.onnx", tmp_path / "out" / "opt.onnx"
    onnx.save(model, src)
    rc, out, err = _call(capsys, "optimize", src, "-o", dst)
    assert rc == 0, err
    assert "rewrote 'dcn': mmdeploy::MMCVModulatedDeformConv2d -> edgeconv.DeformConv2d (strides=[2, 2], " \
           "pads=[1, 1, 1, 1], dilations=[1, 1], group=1, offset_group=2, mask=yes, bias=yes)" in out
    assert f"wrote {dst} (1 node rewritten)" in out
    _close(_run(onnx.load(dst), data, custom_ops=False), ref, ref_abs)


def test_cli_run_applies_optimize(capsys, tmp_path):
    model, data, ref, ref_abs, _ = _mmcv_case(MMCV[0])
    src = tmp_path / "mmdeploy.onnx"
    onnx.save(model, src)
    arrays = []
    for name in ("X", "offset", "mask"):
        np.save(tmp_path / f"{name}.npy", data[name])
        arrays.append(tmp_path / f"{name}.npy")
    rc, out, err = _call(capsys, "run", src, "--inputs", *arrays, "--no-custom-ops", "--output", tmp_path / "o")
    assert rc == 0, err
    assert "optimize: 'dcn': mmdeploy::MMCVModulatedDeformConv2d -> edgeconv.DeformConv2d" in err
    _close(np.load(tmp_path / "o" / "output_0.npy"), ref, ref_abs)


CLI_ERRORS = [
    (lambda p: onnx.save(_mm(foo=1), p), ("optimize",), "edgeconv: error: node 'dcn' (mmdeploy::MMCVModulatedDeformConv2d): "
                                                      "unknown attribute 'foo'"),
    (lambda p: p.write_bytes(b"not onnx"), ("optimize",), "edgeconv: error: cannot read ONNX model"),
    (None, ("optimize",), "edgeconv: error: cannot read ONNX model"),
    (lambda p: onnx.save(_mm(), p), ("optimize", "--fallback", "standard"), "needs opset >= 19"),
    (lambda p: onnx.save(_mm(foo=1), p), ("run",), "edgeconv: error: cannot optimize"),
]


@pytest.mark.parametrize("write,cmd,message", CLI_ERRORS, ids=["unknown-attr", "corrupt", "missing", "fallback",
                                                               "run-refusal"])
def test_cli_input_errors_exit_2_with_one_line(capsys, tmp_path, write, cmd, message):
    src = tmp_path / "in.onnx"
    if write is not None:
        write(src)
    args = [cmd[0], src, *cmd[1:]] + (["-o", tmp_path / "o.onnx"] if cmd[0] == "optimize" else [])
    rc, out, err = _call(capsys, *args)
    assert rc == 2
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("which", ["standard", "mmdeploy"])
def test_cli_deploy_onnx_file_goes_through_optimize(capsys, tmp_path, which):
    """``edgeconv deploy FILE.onnx``: reference = stock onnxruntime on the file (standard DeformConv)
    or the optimized file's fallback (mmdeploy: stock onnxruntime cannot run it); ort with our
    kernels and TVM then match it."""
    if which == "standard":
        n, c, h, w, o, k, strides, pads, dil, group, og, mask, bias, opset = STANDARD[0]
        data = _data(n, c, h, w, o, k, strides, pads, dil, group, og, mask, bias)
        model = standard_file(data, strides, pads, dil, group, og, opset)
    else:
        model = _mmcv_case(MMCV[0])[0]
    src = tmp_path / f"{which}.onnx"
    onnx.save(model, src)
    # TVM on one file only (compile_tvm has its own test above; a compile costs ~10 s here)
    targets = ",".join((["ort"] if custom_ops_available() else []) + (["tvm-x86"] if which == "mmdeploy" else []))
    if not targets:
        pytest.skip("neither the kernel library nor a TVM target to deploy to")
    rc, out, err = _call(capsys, "deploy", src, "--targets", targets, "-o", tmp_path / "rep", "-q", "--repeats", "3")
    assert rc == 0, out + err
    import json

    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    stages = {s["name"]: s for s in rep["stages"]}
    assert stages["reference"]["info"]["reference"] == (
        "the file as given, on stock onnxruntime" if which == "standard"
        else "its optimized form's fallback functions on stock onnxruntime")
    assert stages["optimize"]["info"]["rewrites"][0].startswith("'dcn': ")
    assert not {"torch", "profile", "export"} & set(stages)  # the PyTorch-model stages do not run
    for name in targets.replace("ort", "ort,ort-nolib").split(","):
        # float32 kernels vs a float32 reference on ~36-term sums: ~1e-7 measured; 1e-5 as above
        assert stages[name]["status"] == "passed" and stages[name]["parity"]["rel"] <= 1e-5, stages[name]


def test_cli_deploy_onnx_refusal_exits_2(capsys, tmp_path):
    src = tmp_path / "bad.onnx"
    onnx.save(_mm(foo=1), src)
    rc, _, err = _call(capsys, "deploy", src, "-o", tmp_path / "rep")
    assert rc == 2 and "unknown attribute 'foo'" in err and len(err.strip().splitlines()) == 1


def test_cli_optimize_is_listed_and_names_custom_ops_it_leaves(capsys, tmp_path):
    rc, out, _ = _call(capsys, "--help")
    assert rc == 0 and "optimize" in out
    model = _mm()
    model.graph.node[0].output[0] = "d"
    model.graph.node.append(helper.make_node("TRTBatchedNMS", ["d"], ["Y"], domain="mmdeploy"))
    onnx.save(model, tmp_path / "nms.onnx")
    rc, out, err = _call(capsys, "optimize", tmp_path / "nms.onnx", "-o", tmp_path / "o.onnx")
    assert rc == 0, err
    assert "left as is (custom ops of other libraries): mmdeploy::TRTBatchedNMS" in out
    assert [n.op_type for n in onnx.load(tmp_path / "o.onnx").graph.node] == [DEFORM_OP, "TRTBatchedNMS"]


def test_cli_compile_applies_optimize(capsys, tmp_path):
    pytest.importorskip("edgeconv.exporters.tvm")
    model = _mmcv_case(MMCV[0])[0]
    onnx.save(model, tmp_path / "mmdeploy.onnx")
    rc, _, err = _call(capsys, "compile", tmp_path / "mmdeploy.onnx", "--target", "x86", "-o", tmp_path / "m.so")
    assert rc == 0, err
    assert "optimize: 'dcn': mmdeploy::MMCVModulatedDeformConv2d -> edgeconv.DeformConv2d" in err
    assert (tmp_path / "m.so").stat().st_size > 0
