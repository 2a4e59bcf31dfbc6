"""Small ONNX models (built with ``onnx.helper``) covering every convolution kind, for the aarch64
parity checks (tests/arm, ``edgeconv verify-arm``). Shapes are kept small: they run under qemu.

* :func:`deform_conv_model`   ``edgeconv.DeformConv2d`` (DCNv2: offsets and sigmoid mask from convs)
* :func:`dynamic_conv_model`  ``edgeconv.DynamicConv2d`` (attention from GAP -> Gemm -> Softmax)
* :func:`mixed_conv_model`    standard ONNX only: grouped, depthwise, dilated, 1x1, kx1/1xk convs,
  channel shuffle (Reshape/Transpose/Reshape), split + depthwise 3x3/5x5 + Concat (MixConv)
"""

from __future__ import annotations

import numpy as np

from edgeconv.opdefs import DOMAIN, DOMAIN_VERSION

__all__ = ["deform_conv_model", "dynamic_conv_model", "mixed_conv_model", "SAMPLE_MODELS"]

OPSET = 17


def _init(name, arr):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.ascontiguousarray(arr), name)


def _model(nodes, inputs, outputs, inits, name, custom=False):
    from onnx import helper

    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    opsets = [helper.make_opsetid("", OPSET)]
    if custom:
        opsets.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    m = helper.make_model(graph, opset_imports=opsets, producer_name="edgeconv.arm.models")
    m.ir_version = 8  # loadable by onnxruntime >= 1.14 and TVM's importer
    return m


def _w(rng, *shape, scale=None):
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    scale = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def deform_conv_model(n=1, c=4, h=8, w=8, out_channels=6, k=3, group=2, offset_group=2, stride=1,
                      dilation=1, mask=True, bias=True, offset_scale=1.0, seed=0):
    """DCNv2 block: offset = Conv(X), mask = Sigmoid(Conv(X)), Y = edgeconv.DeformConv2d(...).
    ``offset_scale`` scales the offset conv (e.g. 8: many taps sample outside the image)."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    pad = dilation * (k // 2)
    taps = offset_group * k * k
    inits = [_init("W", _w(rng, out_channels, c // group, k, k)),
             _init("W_off", _w(rng, 2 * taps, c, 3, 3, scale=0.3 * offset_scale)),
             _init("B_off", (rng.standard_normal(2 * taps) * 0.5 * offset_scale).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["X", "W_off", "B_off"], ["offset"], pads=[1, 1, 1, 1],
                              strides=[stride, stride])]
    dcn_in = ["X", "W", "offset"]
    if mask:
        inits.append(_init("W_mask", _w(rng, taps, c, 3, 3)))
        nodes += [helper.make_node("Conv", ["X", "W_mask"], ["mask_logits"], pads=[1, 1, 1, 1],
                                   strides=[stride, stride]),
                  helper.make_node("Sigmoid", ["mask_logits"], ["mask"])]
        dcn_in.append("mask")
    if bias:
        inits.append(_init("B", (rng.standard_normal(out_channels) * 0.1).astype(np.float32)))
        dcn_in += ([] if mask else [""]) + ["B"]
    nodes.append(helper.make_node(
        "DeformConv2d", dcn_in, ["Y"], domain=DOMAIN, strides=[stride, stride],
        pads=[pad, pad, pad, pad], dilations=[dilation, dilation], group=group, offset_group=offset_group))
    ho = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    return _model(nodes, [helper.make_tensor_value_info("X", TensorProto.FLOAT, [n, c, h, w])],
                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, out_channels, ho, wo])],
                  inits, "dcnv2", custom=True)


def dynamic_conv_model(n=2, c=4, h=8, w=8, out_channels=6, k=3, experts=3, group=2, stride=2, bias=True,
                       seed=0):
    """Dynamic convolution: attention = Softmax(Gemm(Flatten(GAP(X)))),
    Y = edgeconv.DynamicConv2d(X, W[K,O,C/g,k,k], attention[N,K], B[K,O])."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    pad = k // 2
    inits = [_init("W", _w(rng, experts, out_channels, c // group, k, k)),
             _init("W_att", _w(rng, experts, c, scale=2.0)),
             _init("B_att", np.zeros(experts, np.float32))]
    nodes = [helper.make_node("GlobalAveragePool", ["X"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["gap_flat"], axis=1),
             helper.make_node("Gemm", ["gap_flat", "W_att", "B_att"], ["att_logits"], transB=1),
             helper.make_node("Softmax", ["att_logits"], ["attention"], axis=1)]
    dyn_in = ["X", "W", "attention"]
    if bias:
        inits.append(_init("B", (rng.standard_normal((experts, out_channels)) * 0.1).astype(np.float32)))
        dyn_in.append("B")
    nodes.append(helper.make_node("DynamicConv2d", dyn_in, ["Y"], domain=DOMAIN,
                                  strides=[stride, stride], pads=[pad, pad, pad, pad], dilations=[1, 1],
                                  group=group))
    ho = (h + 2 * pad - k) // stride + 1
    wo = (w + 2 * pad - k) // stride + 1
    return _model(nodes, [helper.make_tensor_value_info("X", TensorProto.FLOAT, [n, c, h, w])],
                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, out_channels, ho, wo])],
                  inits, "dynamic_conv", custom=True)


def mixed_conv_model(n=1, c=8, h=12, w=12, seed=0):
    """Every standard convolution kind in one small graph (standard ONNX ops only)."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    inits = []
    nodes = []

    def conv(x, y, cin, cout, kh, kw, group=1, dil=1, stride=1, relu=True):
        wn, bn = f"{y}_W", f"{y}_B"
        inits.append(_init(wn, _w(rng, cout, cin // group, kh, kw)))
        inits.append(_init(bn, (rng.standard_normal(cout) * 0.1).astype(np.float32)))
        ph, pw = dil * (kh // 2), dil * (kw // 2)
        out = f"{y}_pre" if relu else y
        nodes.append(helper.make_node("Conv", [x, wn, bn], [out], group=group, dilations=[dil, dil],
                                      strides=[stride, stride], pads=[ph, pw, ph, pw],
                                      kernel_shape=[kh, kw]))
        if relu:
            nodes.append(helper.make_node("Relu", [out], [y]))
        return y

    g = 4
    t = conv("X", "grouped", c, c, 3, 3, group=2)               # plain conv with groups
    t = conv(t, "depthwise", c, c, 3, 3, group=c)               # depthwise
    t = conv(t, "dilated", c, c, 3, 3, dil=2)                   # dilation
    t = conv(t, "pointwise", c, 2 * c, 1, 1)                    # 1x1
    t = conv(t, "kx1", 2 * c, 2 * c, 3, 1, group=2)             # kx1 (grouped)
    t = conv(t, "1xk", 2 * c, 2 * c, 1, 3, group=2)             # 1xk (grouped)
    # channel shuffle: [N, C, H, W] -> [N, g, C/g, H, W] -> transpose(0,2,1,3,4) -> [N, C, H, W]
    inits.append(_init("shuffle_shape5", np.array([n, g, 2 * c // g, h, w], np.int64)))
    inits.append(_init("shuffle_shape4", np.array([n, 2 * c, h, w], np.int64)))
    nodes += [helper.make_node("Reshape", [t, "shuffle_shape5"], ["shuf5"]),
              helper.make_node("Transpose", ["shuf5"], ["shuf5t"], perm=[0, 2, 1, 3, 4]),
              helper.make_node("Reshape", ["shuf5t", "shuffle_shape4"], ["shuffled"])]
    # MixConv: split channels, depthwise 3x3 and 5x5, concat
    inits.append(_init("split_sizes", np.array([c, c], np.int64)))
    nodes.append(helper.make_node("Split", ["shuffled", "split_sizes"], ["part_a", "part_b"], axis=1))
    a = conv("part_a", "mix3", c, c, 3, 3, group=c, relu=False)
    b = conv("part_b", "mix5", c, c, 5, 5, group=c, relu=False)
    nodes.append(helper.make_node("Concat", [a, b], ["mixed"], axis=1))
    t = conv("mixed", "Y", 2 * c, c, 3, 3, stride=2, relu=False)  # strided conv head
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    return _model(nodes, [helper.make_tensor_value_info("X", TensorProto.FLOAT, [n, c, h, w])],
                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, c, ho, wo])],
                  inits, "mixed_conv")


SAMPLE_MODELS = {
    "dcnv2": deform_conv_model,
    "dynamic_conv": dynamic_conv_model,
    "mixed": mixed_conv_model,
}
