"""Functional convolution ops, torchvision-compatible where torchvision has the op.

``deform_conv2d`` and ``dynamic_conv2d`` are ``torch.library.custom_op``s
(``edgeconv::deform_conv2d``, ``edgeconv::dynamic_conv2d``) with fake kernels and registered
autograd, so ``torch.export`` keeps each one as a single node (which the ONNX exporter maps to the
``edgeconv`` domain) and training works. The eager kernels are plain PyTorch tensor programs
(gather-based bilinear sampling + matmul); their backward differentiates that same program.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ._validate import (
    IntPair,
    check_divisible,
    check_dtype,
    check_pair_non_negative,
    check_pair_positive,
    check_positive,
    check_rank,
    conv_output_size,
)

__all__ = [
    "correlate2d",
    "convolve2d",
    "channel_shuffle",
    "deform_conv2d",
    "dynamic_conv2d",
]


def _check_conv_args(x: torch.Tensor, weight: torch.Tensor, groups: int) -> None:
    check_rank("input", x, 4, "[N, C, H, W]")
    check_rank("weight", weight, 4, "[O, C/groups, kh, kw]")
    check_positive("groups", groups)
    if x.shape[1] != weight.shape[1] * groups:
        raise ValueError(
            f"input has {x.shape[1]} channels but weight expects "
            f"weight.shape[1] * groups = {weight.shape[1] * groups}"
        )
    check_divisible("out channels (weight.shape[0])", weight.shape[0], "groups", groups)


def correlate2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """2-D cross-correlation, what CNN frameworks call "convolution".

    ``y[n, o, i, j] = sum_{c,u,v} w[o, c, u, v] * x[n, g(o)*C/G + c, i*s + u*d, j*s + v*d]``.

    Args:
        x: ``[N, C, H, W]``.
        weight: ``[O, C/groups, kh, kw]``.
        bias: ``[O]`` or ``None``.
    Returns:
        ``[N, O, oh, ow]``.
    """
    _check_conv_args(x, weight, groups)
    return F.conv2d(
        x,
        weight,
        bias,
        check_pair_positive("stride", stride),
        check_pair_non_negative("padding", padding),
        check_pair_positive("dilation", dilation),
        groups,
    )


def convolve2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """True 2-D convolution: correlation with the kernel flipped by 180 degrees.

    Same arguments and shapes as :func:`correlate2d`.
    """
    check_rank("weight", weight, 4, "[O, C/groups, kh, kw]")
    return correlate2d(x, weight.flip(-2, -1), bias, stride, padding, dilation, groups)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle: ``[N, G, C/G, H, W] -> transpose(1, 2) -> [N, C, H, W]``.

    Written with view/transpose (not ``aten::channel_shuffle``) so that it exports to
    Reshape/Transpose/Reshape with a dynamic batch.
    """
    check_rank("input", x, 4, "[N, C, H, W]")
    check_positive("groups", groups)
    n, c, h, w = x.shape
    check_divisible("channels", c, "groups", groups)
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


# --------------------------------------------------------------------------------------------
# Deformable convolution (DCNv1 / DCNv2)
# --------------------------------------------------------------------------------------------


def _bilinear_gather(
    x: torch.Tensor, py: torch.Tensor, px: torch.Tensor
) -> torch.Tensor:
    """Sample ``x [N, G, Cg, H, W]`` at fractional positions ``py, px [N, G, L]``.

    Zero outside the image (torchvision/ONNX rule: a sample with y <= -1, y >= H, x <= -1 or
    x >= W is 0; otherwise corners outside the image count as 0). A NaN or infinite position
    contributes zero. Corners outside the image (and all corners of a position that does not
    sample) are skipped, not multiplied by a zero weight, so that a NaN/Inf pixel elsewhere cannot
    leak in (docs/onnx-ops.md, "NaN and Inf"). Returns ``[N, G, Cg, L]``.
    """
    n, g, cg, h, w = x.shape
    inside = (py > -1) & (py < h) & (px > -1) & (px < w)  # False for NaN; +-Inf fail the bounds
    # Invalid positions are moved to 0 before floor() so no huge value is cast to an integer.
    py = torch.where(inside, py, torch.zeros_like(py))
    px = torch.where(inside, px, torch.zeros_like(px))
    y0f, x0f = py.floor(), px.floor()
    ly, lx = py - y0f, px - x0f
    y0, x0 = y0f.long(), x0f.long()
    flat = x.reshape(n, g, cg, h * w)
    out = x.new_zeros(n, g, cg, py.shape[-1])
    for dy, wy in ((0, 1 - ly), (1, ly)):
        for dx, wx in ((0, 1 - lx), (1, lx)):
            yy, xx = y0 + dy, x0 + dx
            valid = inside & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            index = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).unsqueeze(2)
            corner = torch.gather(flat, 3, index.expand(n, g, cg, index.shape[-1]))
            out = out + torch.where(valid.unsqueeze(2), corner * (wy * wx).unsqueeze(2), 0.0)
    return out


def _deform_conv2d_reference(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    mask: Optional[torch.Tensor],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
) -> torch.Tensor:
    """Differentiable PyTorch program behind ``edgeconv::deform_conv2d`` (shapes: see op)."""
    n, c, h, w = input.shape
    o, cpg, kh, kw = weight.shape
    groups, taps = c // cpg, kh * kw
    offset_groups = offset.shape[1] // (2 * taps)
    oh, ow = offset.shape[2], offset.shape[3]
    dev = input.device
    # Sample position of tap (i, j) at output (r, s): r*stride - pad + i*dilation + dy.
    base_y = (torch.arange(oh, device=dev) * stride[0] - padding[0]).view(1, oh, 1) + (
        torch.arange(kh, device=dev) * dilation[0]
    ).repeat_interleave(kw).view(taps, 1, 1)
    base_x = (torch.arange(ow, device=dev) * stride[1] - padding[1]).view(1, 1, ow) + (
        torch.arange(kw, device=dev) * dilation[1]
    ).repeat(kh).view(taps, 1, 1)
    off = offset.reshape(n, offset_groups, taps, 2, oh, ow)
    py = (base_y.to(input.dtype) + off[:, :, :, 0]).reshape(n, offset_groups, -1)
    px = (base_x.to(input.dtype) + off[:, :, :, 1]).reshape(n, offset_groups, -1)
    xg = input.reshape(n, offset_groups, c // offset_groups, h, w)
    cols = _bilinear_gather(xg, py, px).reshape(n, offset_groups, c // offset_groups, taps, oh * ow)
    if mask is not None:
        cols = cols * mask.reshape(n, offset_groups, 1, taps, oh * ow)
    cols = cols.reshape(n, groups, cpg * taps, oh * ow)
    out = torch.einsum("gok,ngkl->ngol", weight.reshape(groups, o // groups, cpg * taps), cols)
    out = out.reshape(n, o, oh, ow)
    if bias is not None:
        out = out + bias.view(1, o, 1, 1)
    return out


def _check_deform_args(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    mask: Optional[torch.Tensor],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> None:
    check_rank("input", x, 4, "[N, C, H, W]")
    check_rank("weight", weight, 4, "[O, C/groups, kh, kw]")
    check_rank("offset", offset, 4, "[N, offset_groups*2*kh*kw, oh, ow]")
    for name, t in (("input", x), ("offset", offset), ("weight", weight), ("bias", bias), ("mask", mask)):
        if t is not None:
            check_dtype(name, t)
    n, c, h, w = x.shape
    o, cpg, kh, kw = weight.shape
    if cpg == 0 or c % cpg:
        raise ValueError(f"input channels ({c}) must be a multiple of weight.shape[1] ({cpg})")
    groups = c // cpg
    check_divisible("out channels (weight.shape[0])", o, "groups inferred as C/weight.shape[1]", groups)
    taps = kh * kw
    if offset.shape[1] == 0 or offset.shape[1] % (2 * taps):
        raise ValueError(
            f"offset must have offset_groups*2*kh*kw channels (a multiple of {2 * taps}), "
            f"got {offset.shape[1]}"
        )
    offset_groups = offset.shape[1] // (2 * taps)
    check_divisible("input channels", c, "offset_groups", offset_groups)
    oh, ow = conv_output_size((h, w), (kh, kw), stride, padding, dilation)
    if oh < 1 or ow < 1:
        raise ValueError(f"output size would be {oh}x{ow} for input {h}x{w}: input too small")
    if tuple(offset.shape) != (n, offset.shape[1], oh, ow):
        raise ValueError(
            f"offset must have shape [{n}, {offset.shape[1]}, {oh}, {ow}] (batch and output size), "
            f"got {tuple(offset.shape)}"
        )
    if mask is not None and tuple(mask.shape) != (n, offset_groups * taps, oh, ow):
        raise ValueError(
            f"mask must have shape [{n}, {offset_groups * taps}, {oh}, {ow}] "
            f"(offset_groups*kh*kw channels), got {tuple(mask.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (o,):
        raise ValueError(f"bias must have shape [{o}], got {tuple(bias.shape)}")


# The custom op wraps the reference program; the plain function stays available for autograd.
_deform_conv2d_op = torch.library.custom_op("edgeconv::deform_conv2d", mutates_args=())(
    _deform_conv2d_reference
)


@_deform_conv2d_op.register_fake
def _(input, offset, weight, bias, mask, stride, padding, dilation):
    return input.new_empty((input.shape[0], weight.shape[0], offset.shape[2], offset.shape[3]))


def deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Deformable convolution v1 (Dai et al., ICCV 2017) and v2 with ``mask`` (Zhu et al., CVPR 2019).

    Same signature and semantics as ``torchvision.ops.deform_conv2d``:
    ``y(p) = sum_k w_k * x(p + p_k + dp_k) * m_k`` with bilinear sampling, zero outside the image;
    a NaN or infinite sample position contributes zero.

    Args:
        input: ``[N, C, H, W]``.
        offset: ``[N, offset_groups * 2 * kh * kw, oh, ow]``, ``(dy, dx)`` per tap, taps row-major.
        weight: ``[O, C / groups, kh, kw]``; ``groups = C // weight.shape[1]``.
        bias: ``[O]`` or ``None``.
        mask: ``[N, offset_groups * kh * kw, oh, ow]`` modulation scalars, or ``None`` (v1).
    Returns:
        ``[N, O, oh, ow]``.
    """
    stride_, padding_ = check_pair_positive("stride", stride), check_pair_non_negative("padding", padding)
    dilation_ = check_pair_positive("dilation", dilation)
    _check_deform_args(input, offset, weight, bias, mask, stride_, padding_, dilation_)
    return _deform_conv2d_op(
        input, offset, weight, bias, mask, list(stride_), list(padding_), list(dilation_)
    )


# --------------------------------------------------------------------------------------------
# Dynamic convolution (Chen et al., CVPR 2020)
# --------------------------------------------------------------------------------------------


def _dynamic_conv2d_reference(
    input: torch.Tensor,
    weight: torch.Tensor,
    attention: torch.Tensor,
    bias: Optional[torch.Tensor],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> torch.Tensor:
    """Differentiable PyTorch program behind ``edgeconv::dynamic_conv2d`` (shapes: see op)."""
    if input.shape[0] == 0:  # batch-as-groups needs at least one group
        return input.new_empty(_dynamic_output_shape(input, weight, stride, padding, dilation))
    n, c, h, w = input.shape
    k, o = weight.shape[:2]
    mixed = torch.einsum("nk,kocij->nocij", attention, weight)  # per-sample kernels
    # Batch-as-groups: one grouped conv computes every sample with its own kernel.
    y = F.conv2d(
        input.reshape(1, n * c, h, w),
        mixed.reshape(n * o, *weight.shape[2:]),
        None,
        stride,
        padding,
        dilation,
        n * groups,
    )
    y = y.reshape(n, o, y.shape[-2], y.shape[-1])
    if bias is not None:
        y = y + (attention @ bias).view(n, o, 1, 1)
    return y


def _dynamic_output_shape(x, weight, stride, padding, dilation):
    oh, ow = conv_output_size(
        (x.shape[2], x.shape[3]), tuple(weight.shape[3:]), stride, padding, dilation
    )
    return (x.shape[0], weight.shape[1], oh, ow)


_dynamic_conv2d_op = torch.library.custom_op("edgeconv::dynamic_conv2d", mutates_args=())(
    _dynamic_conv2d_reference
)


@_dynamic_conv2d_op.register_fake
def _(input, weight, attention, bias, stride, padding, dilation, groups):
    return input.new_empty(_dynamic_output_shape(input, weight, stride, padding, dilation))


def _check_dynamic_args(x, weight, attention, bias, groups, stride, padding, dilation) -> None:
    check_rank("input", x, 4, "[N, C, H, W]")
    check_rank("weight", weight, 5, "[K, O, C/groups, kh, kw]")
    check_rank("attention", attention, 2, "[N, K]")
    for name, t in (("input", x), ("weight", weight), ("attention", attention), ("bias", bias)):
        if t is not None:
            check_dtype(name, t)
    check_positive("groups", groups)
    n, c = x.shape[:2]
    k, o, cpg = weight.shape[:3]
    if c != cpg * groups:
        raise ValueError(
            f"input has {c} channels but weight expects weight.shape[2] * groups = {cpg * groups}"
        )
    check_divisible("out channels (weight.shape[1])", o, "groups", groups)
    if tuple(attention.shape) != (n, k):
        raise ValueError(f"attention must have shape [{n}, {k}] ([N, K]), got {tuple(attention.shape)}")
    if bias is not None and tuple(bias.shape) != (k, o):
        raise ValueError(f"bias must have shape [{k}, {o}] ([K, O]), got {tuple(bias.shape)}")
    oh, ow = conv_output_size(tuple(x.shape[2:]), tuple(weight.shape[3:]), stride, padding, dilation)
    if oh < 1 or ow < 1:
        raise ValueError(f"output size would be {oh}x{ow} for input {tuple(x.shape[2:])}: input too small")


def dynamic_conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    attention: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """Dynamic convolution (Chen et al., "Dynamic Convolution: Attention over Convolution Kernels",
    CVPR 2020): per sample ``W~ = sum_k a[n,k] W_k``, ``y_n = conv(x_n, W~) + sum_k a[n,k] b_k``.

    Args:
        input: ``[N, C, H, W]``.
        weight: ``[K, O, C / groups, kh, kw]``, the ``K`` parallel kernels.
        attention: ``[N, K]``, already normalised (e.g. a softmax).
        bias: ``[K, O]`` or ``None``.
    Returns:
        ``[N, O, oh, ow]``.
    """
    stride_, padding_ = check_pair_positive("stride", stride), check_pair_non_negative("padding", padding)
    dilation_ = check_pair_positive("dilation", dilation)
    _check_dynamic_args(input, weight, attention, bias, groups, stride_, padding_, dilation_)
    return _dynamic_conv2d_op(
        input, weight, attention, bias, list(stride_), list(padding_), list(dilation_), groups
    )


# --------------------------------------------------------------------------------------------
# Autograd: differentiate the same PyTorch program the eager kernel runs.
# --------------------------------------------------------------------------------------------


def _register_recompute_autograd(op, reference, tensor_args: int) -> None:
    """Register a backward that re-runs ``reference`` under autograd and takes its VJP.

    The first ``tensor_args`` positional inputs are tensors (or ``None``); the rest are attributes.
    """

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*[t for t in inputs[:tensor_args] if t is not None])
        ctx.present = [t is not None for t in inputs[:tensor_args]]
        ctx.attrs = inputs[tensor_args:]

    def backward(ctx, grad):
        saved = iter(ctx.saved_tensors)
        tensors = [next(saved) if present else None for present in ctx.present]
        wanted = [t is not None and needs for t, needs in zip(tensors, ctx.needs_input_grad)]
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(w) if t is not None else None for t, w in zip(tensors, wanted)]
            out = reference(*leaves, *ctx.attrs)
            targets = [t for t, w in zip(leaves, wanted) if w]
            grads = iter(torch.autograd.grad(out, targets, grad, allow_unused=True) if targets else ())
        tensor_grads = [next(grads) if w else None for w in wanted]
        return (*tensor_grads, *([None] * len(ctx.attrs)))

    op.register_autograd(backward, setup_context=setup_context)


_register_recompute_autograd(_deform_conv2d_op, _deform_conv2d_reference, tensor_args=5)
_register_recompute_autograd(_dynamic_conv2d_op, _dynamic_conv2d_reference, tensor_args=4)
