"""The C++ kernels keep their own attribute parsing and checks: here they are compared with the
one definition of each op (edgeconv/opdefs.py). Each attribute is set alone, by its defined name,
to a non-default value, the others left out so the kernel applies its own defaults; the result
must equal the float64 numpy reference evaluated with the *definition's* defaults. The element
types the kernels accept must be the defined ones."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from ec_ortops_util import check_close, deform_conv2d_ref, dynamic_conv2d_ref, make_model, out_size, session
from edgeconv.opdefs import DEFORM_CONV2D, DOMAIN, DYNAMIC_CONV2D

# a valid non-default value of every attribute, for C = O = 4 channels and a 3x3 kernel
NON_DEFAULT = {"strides": [2, 1], "pads": [1, 0, 2, 1], "dilations": [2, 1], "group": 2, "offset_group": 2}
C, O, KH, KW, H, W = 4, 4, 3, 3, 9, 8


def _deform_case(attrs, rng):
    oh = out_size(H, KH, attrs["strides"][0], attrs["pads"][0], attrs["pads"][2], attrs["dilations"][0])
    ow = out_size(W, KW, attrs["strides"][1], attrs["pads"][1], attrs["pads"][3], attrs["dilations"][1])
    og = attrs["offset_group"]
    feeds = {"X": rng.standard_normal((2, C, H, W), dtype=np.float32),
             "W": rng.standard_normal((O, C // attrs["group"], KH, KW), dtype=np.float32),
             "offset": rng.standard_normal((2, og * 2 * KH * KW, oh, ow), dtype=np.float32),
             "mask": rng.random((2, og * KH * KW, oh, ow), dtype=np.float32),
             "B": rng.standard_normal(O, dtype=np.float32)}
    ref = deform_conv2d_ref(*feeds.values(), **attrs)
    absref = deform_conv2d_ref(np.abs(feeds["X"]), np.abs(feeds["W"]), feeds["offset"], feeds["mask"],
                               np.abs(feeds["B"]), **attrs)
    return feeds, ref, absref


def _dynamic_case(attrs, rng):
    feeds = {"X": rng.standard_normal((2, C, H, W), dtype=np.float32),
             "W": rng.standard_normal((3, O, C // attrs["group"], KH, KW), dtype=np.float32),
             "attention": rng.random((2, 3), dtype=np.float32),
             "B": rng.standard_normal((3, O), dtype=np.float32)}
    ref = dynamic_conv2d_ref(*feeds.values(), **attrs)
    absref = dynamic_conv2d_ref(np.abs(feeds["X"]), np.abs(feeds["W"]), feeds["attention"], np.abs(feeds["B"]), **attrs)
    return feeds, ref, absref


CASES = [(op, build, name) for op, build in ((DEFORM_CONV2D, _deform_case), (DYNAMIC_CONV2D, _dynamic_case))
         for name in [None] + [a.name for a in op.attributes]]


@pytest.mark.parametrize("op,build,attr", CASES, ids=[f"{op.name}-{a or 'defaults'}" for op, _, a in CASES])
def test_kernel_attributes_and_defaults_are_the_definitions(lib_path, op, build, attr):
    given = {attr: NON_DEFAULT[attr]} if attr else {}
    attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in op.defaults.items()} | given
    feeds, ref, absref = build(attrs, np.random.default_rng(0))
    node = helper.make_node(op.name, list(op.input_names), ["Y"], domain=DOMAIN, **given)
    y = session(make_model(node, list(op.input_names)), lib_path).run(None, feeds)[0]
    check_close(y, ref, absref)


@pytest.mark.parametrize("op", [DEFORM_CONV2D, DYNAMIC_CONV2D], ids=lambda op: op.name)
def test_kernel_element_types_are_the_definitions(lib_path, op):
    assert op.dtypes == ("float32",)
    node = helper.make_node(op.name, list(op.input_names), ["Y"], domain=DOMAIN)
    model = make_model(node, list(op.input_names))
    session(model, lib_path)  # float32: the kernel is found
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    with pytest.raises(Exception, match="(?i)implementation|type"):
        session(model, lib_path)  # float64: no kernel (and no fallback function in this model)
