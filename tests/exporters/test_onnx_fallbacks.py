"""The ``edgeconv`` ONNX domain itself: schemas (type + shape inference), and the standard-operator
fallback functions checked against edgeconv.functional, onnxruntime and onnx.reference."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto as TP
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import edgeconv.functional as ecf
from edgeconv.exporters.onnx import DEFORM_OP, DOMAIN, DYNAMIC_OP, register_schemas, schemas
from edgeconv.exporters.onnx import fallbacks as fb

TOL = 1e-4


def _run_ort(model, feeds):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def test_register_schemas_idempotent():
    register_schemas()
    register_schemas()
    names = {(s.domain, s.name, s.since_version) for s in schemas()}
    assert names == {(DOMAIN, DEFORM_OP, 1), (DOMAIN, DYNAMIC_OP, 1)}
    deform = onnx.defs.get_schema(DEFORM_OP, 1, DOMAIN)
    assert [i.name for i in deform.inputs] == ["X", "W", "offset", "mask", "B"]
    assert set(deform.attributes) == {"strides", "pads", "dilations", "group", "offset_group"}
    assert deform.has_type_and_shape_inference_function
    dynamic = onnx.defs.get_schema(DYNAMIC_OP, 1, DOMAIN)
    assert [i.name for i in dynamic.inputs] == ["X", "W", "attention", "B"]
    assert set(dynamic.attributes) == {"strides", "pads", "dilations", "group"}


def _graph_model(nodes, inputs, output, functions=(), opset=20):
    g = helper.make_graph(nodes, "g", inputs, [output])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, 1)],
                             functions=list(functions))


def test_strict_shape_inference_of_custom_nodes():
    register_schemas()
    nodes = [
        helper.make_node(DEFORM_OP, ["X", "W", "off", "", "B"], ["Y"], domain=DOMAIN,
                         strides=[2, 2], pads=[1, 1, 1, 1], group=2),
        helper.make_node(DYNAMIC_OP, ["Y", "W2", "att", ""], ["Z"], domain=DOMAIN,
                         pads=[0, 1, 0, 1], dilations=[1, 2]),
    ]
    vi = helper.make_tensor_value_info
    model = _graph_model(nodes, [
        vi("X", TP.FLOAT, ["N", 4, 10, 11]), vi("W", TP.FLOAT, [6, 2, 3, 3]),
        vi("off", TP.FLOAT, ["N", 18, 5, 6]), vi("B", TP.FLOAT, [6]),
        vi("W2", TP.FLOAT, [4, 8, 6, 3, 3]), vi("att", TP.FLOAT, ["N", 4]),
    ], vi("Z", TP.FLOAT, None))
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    assert shapes["Y"] == ["N", 6, 5, 6]
    assert shapes["Z"] == ["N", 8, 3, 4]
    onnx.checker.check_model(inferred, full_check=True)


def test_strict_shape_inference_rejects_bad_offset():
    register_schemas()
    vi = helper.make_tensor_value_info
    node = helper.make_node(DEFORM_OP, ["X", "W", "off"], ["Y"], domain=DOMAIN)
    model = _graph_model([node], [vi("X", TP.FLOAT, [1, 4, 8, 8]), vi("W", TP.FLOAT, [6, 4, 3, 3]),
                                  vi("off", TP.FLOAT, [1, 17, 6, 6])], vi("Y", TP.FLOAT, None))
    with pytest.raises(onnx.shape_inference.InferenceError, match="offset"):
        onnx.shape_inference.infer_shapes(model, strict_mode=True)


# --------------------------------------------------------------------------- fallback bodies
def _deform_case(seed, has_mask, has_bias, *, n=2, c=4, h=7, w=8, o=6, k=(3, 2), stride=(1, 2),
                 pad=(1, 0), dil=(1, 2), groups=2, offset_groups=2, nonfinite=False):
    g = torch.Generator().manual_seed(seed)
    kh, kw = k
    oh = (h + 2 * pad[0] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * pad[1] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    x = torch.randn(n, c, h, w, generator=g)
    weight = torch.randn(o, c // groups, kh, kw, generator=g)
    offset = torch.randn(n, offset_groups * 2 * kh * kw, oh, ow, generator=g) * 2.5
    if nonfinite:
        offset[0, 0, 0, 0] = float("nan")
        offset[0, 1, 1, 1] = float("inf")
        offset[1, 2, 0, 0] = -float("inf")
        offset[1, 3, 1, 1] = 1e30
    mask = torch.rand(n, offset_groups * kh * kw, oh, ow, generator=g) if has_mask else None
    bias = torch.randn(o, generator=g) if has_bias else None
    ref = ecf.deform_conv2d(x, offset, weight, bias, stride=stride, padding=pad, dilation=dil, mask=mask)
    node = helper.make_node(DEFORM_OP, ["X", "W", "off", "mask" if has_mask else "", "B" if has_bias else ""],
                            ["Y"], domain=DOMAIN, strides=list(stride), pads=[pad[0], pad[1], pad[0], pad[1]],
                            dilations=list(dil), group=groups, offset_group=offset_groups)
    vi = helper.make_tensor_value_info
    inputs = [vi("X", TP.FLOAT, ["N", c, h, w]), vi("off", TP.FLOAT, ["N", offset.shape[1], oh, ow])]
    feeds = {"X": x.numpy(), "off": offset.numpy()}
    if has_mask:
        inputs.append(vi("mask", TP.FLOAT, ["N", mask.shape[1], oh, ow]))
        feeds["mask"] = mask.numpy()
    inits = [numpy_helper.from_array(weight.numpy(), "W")]
    if has_bias:
        inits.append(numpy_helper.from_array(bias.numpy(), "B"))
    graph = helper.make_graph([node], "g", inputs, [vi("Y", TP.FLOAT, ["N", o, oh, ow])], inits)
    return graph, feeds, ref.numpy()


def _with_function(graph, function, opset):
    register_schemas()
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, 1)],
                              functions=[function])
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, strict_mode=True)
    return model


@pytest.mark.parametrize("has_mask,has_bias", list(itertools.product([False, True], repeat=2)))
def test_deform_standard_body(has_mask, has_bias):
    graph, feeds, ref = _deform_case(0, has_mask, has_bias, n=1, h=5, w=6)
    model = _with_function(graph, fb.deform_standard_function(19), 19)
    assert _rel(_run_ort(model, feeds), ref) < TOL
    assert _rel(ReferenceEvaluator(model).run(None, feeds)[0], ref) < TOL


@pytest.mark.parametrize("opset", [13, 16, 20])
@pytest.mark.parametrize("has_mask,has_bias", list(itertools.product([False, True], repeat=2)))
def test_deform_decomposed_body(opset, has_mask, has_bias):
    graph, feeds, ref = _deform_case(1, has_mask, has_bias)
    model = _with_function(graph, fb.deform_decomposed_function(opset, has_mask, has_bias), opset)
    assert _rel(_run_ort(model, feeds), ref) < TOL
    assert _rel(ReferenceEvaluator(model).run(None, feeds)[0], ref) < TOL


def test_nonfinite_offsets_contribute_zero():
    graph, feeds, ref = _deform_case(2, True, True, nonfinite=True)
    assert np.isfinite(ref).all()
    std = _with_function(graph, fb.deform_standard_function(20), 20)
    assert _rel(_run_ort(std, feeds), ref) < TOL
    dec = _with_function(graph, fb.deform_decomposed_function(13, True, True), 13)
    assert _rel(_run_ort(dec, feeds), ref) < TOL
    with np.errstate(invalid="ignore"):
        assert _rel(ReferenceEvaluator(dec).run(None, feeds)[0], ref) < TOL


@pytest.mark.parametrize("opset,has_bias,groups", [(13, False, 1), (13, True, 2), (20, True, 4), (18, False, 2)])
def test_dynamic_decomposed_body(opset, has_bias, groups):
    g = torch.Generator().manual_seed(3)
    n, c, h, w, k, o = 3, 4, 9, 8, 4, 8
    x = torch.randn(n, c, h, w, generator=g)
    weight = torch.randn(k, o, c // groups, 3, 3, generator=g)
    att = torch.softmax(torch.randn(n, k, generator=g), 1)
    bias = torch.randn(k, o, generator=g) if has_bias else None
    stride, pad, dil = (2, 1), (1, 2), (1, 2)
    ref = ecf.dynamic_conv2d(x, weight, att, bias, stride, pad, dil, groups).numpy()
    node = helper.make_node(DYNAMIC_OP, ["X", "W", "A", "B" if has_bias else ""], ["Y"], domain=DOMAIN,
                            strides=list(stride), pads=[1, 2, 1, 2], dilations=list(dil), group=groups)
    vi = helper.make_tensor_value_info
    inits = [numpy_helper.from_array(weight.numpy(), "W")]
    if has_bias:
        inits.append(numpy_helper.from_array(bias.numpy(), "B"))
    graph = helper.make_graph([node], "g", [vi("X", TP.FLOAT, ["N", c, h, w]), vi("A", TP.FLOAT, ["N", k])],
                              [vi("Y", TP.FLOAT, ["N", o, None, None])], inits)
    model = _with_function(graph, fb.dynamic_decomposed_function(opset, has_bias), opset)
    feeds = {"X": x.numpy(), "A": att.numpy()}
    assert _rel(_run_ort(model, feeds), ref) < TOL
    assert _rel(ReferenceEvaluator(model).run(None, feeds)[0], ref) < TOL


def test_standard_body_needs_opset_19():
    with pytest.raises(ValueError, match="19"):
        fb.deform_standard_function(18)
