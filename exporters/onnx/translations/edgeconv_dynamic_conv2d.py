"""Translation of ``edgeconv::dynamic_conv2d`` to ``edgeconv.DynamicConv2d`` (domain version 1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from onnxscript.onnx_types import TensorType

from edgeconv.opdefs import DYNAMIC_CONV2D

from ._common import TranslationError, conv_attrs, edgeconv_opset, static_dim


def edgeconv_dynamic_conv2d(
    input: TensorType,
    weight: TensorType,
    attention: TensorType,
    bias: Optional[TensorType],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> TensorType:
    """edgeconv::dynamic_conv2d(Tensor input, Tensor weight, Tensor attention, Tensor? bias,
    int[2] stride, int[2] padding, int[2] dilation, int groups) -> Tensor"""
    op = DYNAMIC_CONV2D.torch_op
    c = static_dim(input, 1, "input", op)
    cg = static_dim(weight, 2, "weight", op)
    if groups <= 0 or c != cg * groups:
        raise TranslationError(f"{op}: input channels {c} != weight.shape[2] {cg} x groups {groups}")
    return edgeconv_opset.DynamicConv2d(
        input,
        weight,
        attention,
        bias,
        **DYNAMIC_CONV2D.node_attributes(**conv_attrs(stride, padding, dilation, op), group=int(groups)),
    )
