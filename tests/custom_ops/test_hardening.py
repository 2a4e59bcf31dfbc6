"""Hardening of libedgeconv_ort against untrusted models (issue 15): overflow-checked shape
arithmetic, bounded scratch memory, strict attributes, session config entries. Every case the fuzz
campaign of the issue found is a regression test here."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ec_ortops_util import deform_model, dynamic_model, session

HERE = Path(__file__).resolve().parent
I64_MAX = 2**63 - 1


def _ort_errors():
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

    return (Fail, InvalidArgument, RuntimeException)


def _model(op: str, empty: dict[str, list[int]], **attrs) -> onnx.ModelProto:
    """A one-node model whose inputs `empty` are zero-size initializers with the given dims: unlike
    numpy arrays, a TensorProto may have a 0 dim next to dims whose product overflows int64."""
    model, _ = deform_model(False, False, **attrs) if op == "deform" else dynamic_model(False, **attrs)
    keep = [i for i in model.graph.input if i.name not in empty]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    model.graph.initializer.extend(helper.make_tensor(n, TensorProto.FLOAT, d, []) for n, d in empty.items())
    return model


def _error(model, feeds, lib, **config) -> str:
    with pytest.raises(_ort_errors()) as e:
        sess = session(model, lib, **config)
        sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})
    return str(e.value)


def _x(n=1, c=4, h=2, w=2):
    return np.ones((n, c, h, w), np.float32)


def _zeros(*shape):
    return np.zeros(shape, np.float32)


# name: (op, zero-size initializers, feeds, attributes, expected message)
OVERFLOW_CASES = {
    # (k-1)*dil overflowed: a kernel of height 2^63-1 on a 2-pixel image gave an output [1, 0, 7, 4]
    "kernel_extent": ("deform", {"W": [0, 4, I64_MAX, 3]}, {"X": _x(), "offset": _zeros(1, 18, 1, 1)}, {},
                      "input 'W' kernel height 9223372036854775807 (dilation 1) is larger than the padded input 'X' height 2"),
    "kernel_extent_dilated": ("deform", {"W": [0, 4, 2, 2**40]}, {"X": _x(w=3), "offset": _zeros(1, 8, 1, 1)},
                              {"dilations": [1, 2**24]},
                              "input 'W' kernel width 1099511627776 (dilation 16777216) is larger than the padded input"),
    "dynamic_kernel_extent": ("dynamic", {"W": [1, 0, 4, 2**62, 2**62]}, {"X": _x(), "attention": _zeros(1, 1)}, {},
                              "input 'W' kernel height 4611686018427387904 (dilation 1) is larger than the padded"),
    "kernel_larger_than_padded": ("deform", {"W": [0, 4, 5, 1]}, {"X": _x(), "offset": _zeros(1, 10, 1, 2)},
                                  {"pads": [1, 0, 1, 0]},
                                  "input 'W' kernel height 5 (dilation 1) is larger than the padded input 'X' height 2 + pads 1+1"),
    # Cg*group wrapped around to C: an invalid W was accepted
    "cg_times_group": ("deform", {"W": [0, 2**62 + 1, 1, 1]}, {"X": _x(), "offset": _zeros(1, 2, 2, 2)}, {"group": 4},
                       "input 'W' must have C/group = 1 input channels (dim 1)"),
    "dynamic_cg_times_group": ("dynamic", {"W": [1, 0, 2**62 + 1, 1, 1]}, {"X": _x(), "attention": _zeros(1, 1)},
                               {"group": 4}, "input 'W' must have C/group = 1 input channels (dim 2)"),
    # offset_group*2*kh*kw wrapped ("offset must have -12 channels", an offset with 0 channels accepted)
    "offset_channels": ("deform", {"X": [0, 16, 2**30, 2**30], "W": [0, 1, 2**30, 2**30]},
                        {"offset": _zeros(0, 0, 1, 1)}, {"offset_group": 16, "group": 16},
                        "input 'offset' channels offset_group*2*kh*kw overflows int64"),
    # kh*kw*C/group (the GEMM reduction size) does not fit in int64
    "reduction_size": ("deform", {"X": [0, 2**40, 2**20, 2**20], "W": [0, 2**40, 2**20, 2**20]},
                       {"offset": _zeros(0, 2, 1, 1)}, {}, "input 'W' reduction size C/group*kh*kw overflows int64"),
    "dynamic_reduction_size": ("dynamic", {"X": [0, 2**40, 2**20, 2**20], "W": [1, 0, 2**40, 2**20, 2**20]},
                               {"attention": _zeros(0, 1)}, {}, "input 'W' reduction size C/group*kh*kw overflows"),
}


@pytest.mark.parametrize("name", list(OVERFLOW_CASES))
def test_overflowing_shapes_rejected(lib_path, name):
    op, empty, feeds, attrs, msg = OVERFLOW_CASES[name]
    err = _error(_model(op, empty, **attrs), feeds, lib_path)
    assert msg in err
    assert "INVALID_ARGUMENT" in err
    assert ("edgeconv.DeformConv2d" if op == "deform" else "edgeconv.DynamicConv2d") in err


def test_zero_size_batch_and_channels_valid(lib_path):
    """Zero-size N or O are valid (empty output of the right shape), whatever the other W dims."""
    sess = session(_model("deform", {"W": [0, 4, 3, 3]}, pads=[1, 1, 1, 1]), lib_path)
    y = sess.run(None, {"X": _x(2, 4, 5, 5), "offset": _zeros(2, 18, 5, 5)})[0]
    assert y.shape == (2, 0, 5, 5)
    model, _ = dynamic_model(False)
    y = session(model, lib_path).run(None, {"X": _zeros(0, 4, 5, 5), "W": _zeros(2, 3, 4, 3, 3),
                                            "attention": _zeros(0, 2)})[0]
    assert y.shape == (0, 3, 3, 3)
