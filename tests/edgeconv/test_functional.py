"""edgeconv.functional against independent references: scipy.signal, a slow numpy loop, the
ONNX reference evaluator's DeformConv and the dynamic-convolution formula of Chen et al. 2020."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import scipy.signal
import torch
from onnx import helper
from onnx.reference import ReferenceEvaluator

import edgeconv.functional as EF

# float64 everywhere: the references are float64 too, so 1e-10 leaves room only for summation
# order; float32 checks state their own tolerance.
TOL64 = dict(rtol=1e-10, atol=1e-10)


def _rand(*shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape))


# ------------------------------------------------------------------------ correlation/convolution


@pytest.mark.parametrize("mode", ["correlate", "convolve"])
def test_2d_correlation_and_convolution_match_scipy(mode):
    x, w = _rand(1, 1, 9, 12, seed=1), _rand(1, 1, 3, 4, seed=2)
    fn = EF.correlate2d if mode == "correlate" else EF.convolve2d
    ours = fn(x, w)[0, 0].numpy()
    expected = getattr(scipy.signal, mode + "2d")(x[0, 0].numpy(), w[0, 0].numpy(), mode="valid")
    np.testing.assert_allclose(ours, expected, **TOL64)


def test_convolution_is_correlation_with_flipped_kernel_per_group():
    x, w, b = _rand(2, 4, 8, 7, seed=3), _rand(6, 2, 3, 3, seed=4), _rand(6, seed=5)
    y = EF.convolve2d(x, w, b, stride=2, padding=1, groups=2)
    for o in range(6):
        g = o // 3
        for n in range(2):
            acc = sum(
                scipy.signal.convolve2d(
                    np.pad(x[n, 2 * g + c].numpy(), 1), w[o, c].numpy(), mode="valid"
                )
                for c in range(2)
            )
            np.testing.assert_allclose(y[n, o].numpy(), acc[::2, ::2] + b[o].item(), **TOL64)


def test_channel_shuffle_is_the_shufflenet_permutation():
    x = torch.arange(2 * 6 * 2 * 2, dtype=torch.float64).reshape(2, 6, 2, 2)
    # [G, C/G] -> transpose: output channel j takes input channel (j % G) * (C/G) + j // G.
    expected = x[:, [(j % 3) * 2 + j // 3 for j in range(6)]]
    assert torch.equal(EF.channel_shuffle(x, 3), expected)


# ----------------------------------------------------------------------------------- deformable


def _bilinear_numpy(img, y, x):
    """torchvision's CPU bilinear rule, one sample, written as a scalar loop."""
    h, w = img.shape
    if not (np.isfinite(y) and np.isfinite(x)) or y <= -1 or y >= h or x <= -1 or x >= w:
        return 0.0
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    value = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                value += wy * wx * img[yy, xx]
    return value


def deform_conv2d_numpy(x, offset, weight, bias, mask, stride, padding, dilation):
    """Slow, loop-by-loop DCNv1/v2 (Dai et al. 2017, Zhu et al. 2019), float64."""
    n, c, h, w = x.shape
    o, cpg, kh, kw = weight.shape
    groups = c // cpg
    og = offset.shape[1] // (2 * kh * kw)
    oh, ow = offset.shape[2:]
    out = np.zeros((n, o, oh, ow))
    for b in range(n):
        for oc in range(o):
            g = oc // (o // groups)
            for r in range(oh):
                for s in range(ow):
                    acc = 0.0
                    for ci in range(cpg):
                        ch = g * cpg + ci
                        gi = ch // (c // og)
                        for i in range(kh):
                            for j in range(kw):
                                k = i * kw + j
                                dy = offset[b, gi * 2 * kh * kw + 2 * k, r, s]
                                dx = offset[b, gi * 2 * kh * kw + 2 * k + 1, r, s]
                                y = r * stride[0] - padding[0] + i * dilation[0] + dy
                                xx = s * stride[1] - padding[1] + j * dilation[1] + dx
                                v = _bilinear_numpy(x[b, ch], y, xx)
                                if mask is not None:
                                    v *= mask[b, gi * kh * kw + k, r, s]
                                acc += weight[oc, ci, i, j] * v
                    out[b, oc, r, s] = acc + (bias[oc] if bias is not None else 0.0)
    return out


def _deform_case(n, c, h, w, o, groups, og, k, stride, padding, dilation, use_mask, seed, scale=2.0):
    kh, kw = k
    oh = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    ow = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    x = _rand(n, c, h, w, seed=seed)
    weight = _rand(o, c // groups, kh, kw, seed=seed + 1)
    offset = _rand(n, og * 2 * kh * kw, oh, ow, seed=seed + 2) * scale
    mask = torch.sigmoid(_rand(n, og * kh * kw, oh, ow, seed=seed + 3)) if use_mask else None
    bias = _rand(o, seed=seed + 4)
    return x, offset, weight, bias, mask


DEFORM_CASES = [
    # n, c, h, w, o, groups, og, kernel, stride, padding, dilation, mask
    (1, 2, 6, 7, 3, 1, 1, (3, 3), 1, 1, 1, False),
    (2, 4, 7, 6, 4, 2, 2, (3, 3), 2, 1, 1, True),
    (1, 4, 9, 8, 2, 1, 2, (3, 3), 1, 2, 2, True),
    (3, 2, 5, 5, 2, 2, 1, (1, 1), 1, 0, 1, False),
    (1, 2, 8, 9, 2, 1, 1, (2, 3), 2, 0, 1, True),
    (1, 2, 9, 9, 2, 1, 1, (5, 5), 1, 2, 1, False),
]


@pytest.mark.parametrize("case", DEFORM_CASES)
def test_deform_conv2d_matches_slow_numpy_loop(case):
    n, c, h, w, o, groups, og, k, stride, padding, dilation, use_mask = case
    x, offset, weight, bias, mask = _deform_case(*case[:-1], use_mask, seed=7)
    ours = EF.deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)
    expected = deform_conv2d_numpy(
        *(t.numpy() if t is not None else None for t in (x, offset, weight, bias, mask)),
        (stride, stride), (padding, padding), (dilation, dilation),
    )
    np.testing.assert_allclose(ours.numpy(), expected, **TOL64)


def _onnx_deform_conv(x, offset, weight, bias, mask, stride, padding, dilation, og):
    names = ["X", "W", "offset", "B", "mask"]
    node = helper.make_node(
        "DeformConv", names, ["Y"], strides=[stride] * 2, pads=[padding] * 4,
        dilations=[dilation] * 2, group=x.shape[1] // weight.shape[1], offset_group=og,
    )
    inputs = [helper.make_tensor_value_info(nm, onnx.TensorProto.DOUBLE, None) for nm in names]
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("Y", onnx.TensorProto.DOUBLE, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    feeds = dict(zip(names, (t.numpy() for t in (x, offset, weight, bias, mask))))
    feeds["X"], feeds["W"], feeds["offset"] = x.numpy(), weight.numpy(), offset.numpy()
    return ReferenceEvaluator(model).run(None, feeds)[0]


@pytest.mark.parametrize("case", DEFORM_CASES[:3])
def test_deform_conv2d_matches_onnx_reference_deformconv(case):
    n, c, h, w, o, groups, og, k, stride, padding, dilation, _ = case
    x, offset, weight, bias, mask = _deform_case(*case[:-1], True, seed=11)
    ours = EF.deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)
    expected = _onnx_deform_conv(x, offset, weight, bias, mask, stride, padding, dilation, og)
    # onnx.reference's DeformConv samples through GridSample on normalised coordinates and loses
    # precision there (measured up to 2e-5 relative against the float64 loop above): 1e-4.
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_deform_conv2d_far_and_non_finite_offsets_contribute_zero():
    x, offset, weight, bias, mask = _deform_case(1, 2, 6, 6, 2, 1, 1, (3, 3), 1, 1, 1, True, seed=3)
    offset[0, 0, 0, 0] = float("nan")
    offset[0, 3, 1, 1] = float("inf")
    offset[0, 4, 2, 2] = -float("inf")
    offset[0, 6, 3, 3] = 1e30
    offset[0, 7, 4, 4] = -1e9
    offset[0, 8, 5, 5] = 6.0  # lands exactly on the bottom border: y == H counts as outside
    ours = EF.deform_conv2d(x, offset, weight, bias, 1, 1, 1, mask)
    assert torch.isfinite(ours).all()
    expected = deform_conv2d_numpy(
        *(t.numpy() for t in (x, offset, weight, bias, mask)), (1, 1), (1, 1), (1, 1)
    )
    np.testing.assert_allclose(ours.numpy(), expected, **TOL64)


def test_deform_conv2d_zero_offset_is_plain_conv_float32():
    x = _rand(2, 4, 10, 9, seed=1).float()
    weight, bias = _rand(6, 2, 3, 3, seed=2).float(), _rand(6, seed=3).float()
    offset = torch.zeros(2, 2 * 18, 5, 5)
    ours = EF.deform_conv2d(x, offset, weight, bias, stride=2, padding=1)
    # fp32 sums of 18 products: relative error ~1e-6, 1e-5 leaves a margin.
    torch.testing.assert_close(ours, EF.correlate2d(x, weight, bias, 2, 1, 1, 2), rtol=1e-5, atol=1e-5)


def test_deform_conv2d_gradcheck():
    x, offset, weight, bias, mask = _deform_case(2, 4, 4, 5, 2, 2, 2, (3, 3), 2, 1, 1, True, seed=5, scale=1.3)
    args = [t.clone().requires_grad_() for t in (x, offset, weight, bias, mask)]
    fn = lambda x, o, w, b, m: EF.deform_conv2d(x, o, w, b, 2, 1, 1, m)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args)


def test_deform_conv2d_is_one_node_under_torch_export_with_dynamic_batch():
    weight = _rand(4, 2, 3, 3).float()

    class Net(torch.nn.Module):
        def forward(self, x, offset):
            return EF.deform_conv2d(x, offset, weight, None, 1, 1)

    batch = torch.export.Dim("batch", min=1)
    ep = torch.export.export(
        Net(), (torch.randn(2, 2, 6, 6), torch.randn(2, 18, 6, 6)),
        dynamic_shapes=({0: batch}, {0: batch}),
    )
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.edgeconv.deform_conv2d.default) == 1
    out = ep.module()(torch.randn(5, 2, 6, 6), torch.zeros(5, 18, 6, 6))
    assert out.shape == (5, 4, 6, 6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(x=torch.randn(2, 6, 6)), "input must be a 4-D"),
        (dict(offset=torch.randn(1, 17, 6, 6)), "offset must have offset_groups"),
        (dict(offset=torch.randn(1, 18, 5, 6)), "offset must have shape"),
        (dict(weight=torch.randn(4, 3, 3, 3)), "multiple of weight.shape[1]"),
        (dict(mask=torch.randn(1, 8, 6, 6)), "mask must have shape"),
        (dict(bias=torch.randn(3)), "bias must have shape"),
        (dict(stride=0), "stride must be positive"),
        (dict(x=torch.randn(1, 2, 6, 6, dtype=torch.float16)), "float32 or float64"),
    ],
)
def test_deform_conv2d_bad_input_names_the_argument(kwargs, message):
    args = dict(x=torch.randn(1, 2, 6, 6), offset=torch.randn(1, 18, 6, 6),
                weight=torch.randn(4, 2, 3, 3), bias=None, mask=None, stride=1)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message.replace("[", r"\[").replace("]", r"\]")):
        EF.deform_conv2d(args["x"], args["offset"], args["weight"], args["bias"], args["stride"], 1, 1, args["mask"])


# -------------------------------------------------------------------------------------- dynamic


def dynamic_conv2d_numpy(x, weight, attention, bias, stride, padding, groups):
    """Chen et al. 2020 formula, sample by sample: W~ = sum_k a_k W_k, y = W~ * x + sum_k a_k b_k."""
    n = x.shape[0]
    k, o, cpg, kh, kw = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (xp.shape[2] - kh) // stride + 1
    ow = (xp.shape[3] - kw) // stride + 1
    out = np.zeros((n, o, oh, ow))
    for b in range(n):
        w_mix = np.tensordot(attention[b], weight, axes=1)
        b_mix = attention[b] @ bias if bias is not None else np.zeros(o)
        for oc in range(o):
            g = oc // (o // groups)
            for r in range(oh):
                for s in range(ow):
                    patch = xp[b, g * cpg:(g + 1) * cpg, r * stride:r * stride + kh, s * stride:s * stride + kw]
                    out[b, oc, r, s] = np.sum(patch * w_mix[oc]) + b_mix[oc]
    return out


@pytest.mark.parametrize("groups, stride, padding, with_bias", [(1, 1, 1, True), (2, 2, 0, False), (4, 1, 1, True)])
def test_dynamic_conv2d_matches_numpy_formula(groups, stride, padding, with_bias):
    x = _rand(3, 4, 7, 6, seed=1)
    weight = _rand(4, 8, 4 // groups, 3, 3, seed=2)
    attention = torch.softmax(_rand(3, 4, seed=3), dim=1)
    bias = _rand(4, 8, seed=4) if with_bias else None
    ours = EF.dynamic_conv2d(x, weight, attention, bias, stride, padding, 1, groups)
    expected = dynamic_conv2d_numpy(
        x.numpy(), weight.numpy(), attention.numpy(), None if bias is None else bias.numpy(), stride, padding, groups
    )
    np.testing.assert_allclose(ours.numpy(), expected, **TOL64)


def test_dynamic_conv2d_gradcheck():
    # Small on purpose: gradcheck perturbs every element; batch 2 and groups 2 keep the
    # batch-as-groups indexing of the reference under test.
    x, weight = _rand(2, 2, 3, 3, seed=1), _rand(2, 2, 1, 3, 3, seed=2)
    attention, bias = torch.softmax(_rand(2, 2, seed=3), 1), _rand(2, 2, seed=4)
    args = [t.clone().requires_grad_() for t in (x, weight, attention, bias)]
    fn = lambda x, w, a, b: EF.dynamic_conv2d(x, w, a, b, 1, 1, 1, 2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args)


def test_dynamic_conv2d_empty_batch_and_export():
    weight = _rand(4, 3, 2, 3, 3).float()
    assert EF.dynamic_conv2d(torch.zeros(0, 2, 5, 5), weight, torch.zeros(0, 4), padding=1).shape == (0, 3, 5, 5)

    class Net(torch.nn.Module):
        def forward(self, x, a):
            return EF.dynamic_conv2d(x, weight, a, None, 1, 1)

    batch = torch.export.Dim("batch", min=1)
    ep = torch.export.export(Net(), (torch.randn(2, 2, 5, 5), torch.rand(2, 4)), dynamic_shapes=({0: batch}, {0: batch}))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.edgeconv.dynamic_conv2d.default) == 1
    assert ep.module()(torch.randn(6, 2, 5, 5), torch.rand(6, 4)).shape == (6, 3, 5, 5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(weight=torch.randn(4, 3, 2, 3)), "weight must be a 5-D"),
        (dict(attention=torch.randn(2, 3)), r"attention must have shape \[2, 4\]"),
        (dict(bias=torch.randn(4)), r"bias must have shape \[4, 3\]"),
        (dict(groups=2), "weight.shape\\[2\\] \\* groups"),
        (dict(x=torch.randn(2, 2, 1, 1)), "input too small"),
    ],
)
def test_dynamic_conv2d_bad_input_names_the_argument(kwargs, message):
    args = dict(x=torch.randn(2, 2, 5, 5), weight=torch.randn(4, 3, 2, 3, 3), attention=torch.rand(2, 4), bias=None, groups=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        EF.dynamic_conv2d(args["x"], args["weight"], args["attention"], args["bias"], groups=args["groups"])


def test_correlate2d_bad_groups():
    with pytest.raises(ValueError, match="divisible by groups"):
        EF.correlate2d(torch.randn(1, 4, 5, 5), torch.randn(3, 2, 3, 3), groups=2)
    with pytest.raises(ValueError, match="channels"):
        EF.channel_shuffle(torch.randn(1, 5, 2, 2), 2)
