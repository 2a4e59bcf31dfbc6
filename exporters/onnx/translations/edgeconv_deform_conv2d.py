"""Translation of ``edgeconv::deform_conv2d`` to ``edgeconv.DeformConv2d`` (domain version 1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from onnxscript.onnx_types import TensorType

from edgeconv.opdefs import DEFORM_CONV2D

from ._common import TranslationError, conv_attrs, edgeconv_opset, static_dim


def edgeconv_deform_conv2d(
    input: TensorType,
    offset: TensorType,
    weight: TensorType,
    bias: Optional[TensorType],
    mask: Optional[TensorType],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> TensorType:
    """edgeconv::deform_conv2d(Tensor input, Tensor offset, Tensor weight, Tensor? bias, Tensor? mask,
    int[2] stride, int[2] padding, int[2] dilation) -> Tensor"""
    op = DEFORM_CONV2D.torch_op
    c = static_dim(input, 1, "input", op)
    cg = static_dim(weight, 1, "weight", op)
    kh, kw = static_dim(weight, 2, "weight", op), static_dim(weight, 3, "weight", op)
    off_c = static_dim(offset, 1, "offset", op)
    if cg <= 0 or c % cg:
        raise TranslationError(f"{op}: input channels {c} not a multiple of weight.shape[1] = {cg}")
    if off_c % (2 * kh * kw):
        raise TranslationError(f"{op}: offset channels {off_c} not a multiple of 2*kh*kw = {2 * kh * kw}")
    return edgeconv_opset.DeformConv2d(
        input,
        weight,
        offset,
        mask,
        bias,
        **DEFORM_CONV2D.node_attributes(**conv_attrs(stride, padding, dilation, op), group=c // cg,
                                        offset_group=off_c // (2 * kh * kw)),
    )
