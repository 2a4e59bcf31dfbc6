"""Translation of ``torchvision::deform_conv2d`` (``torchvision.ops.deform_conv2d`` and
``torchvision.ops.DeformConv2d``, DCNv1 and v2) to ``edgeconv.DeformConv2d`` (domain version 1).

The op exists in ``torch.ops`` only where torchvision's compiled library is loaded, so this
module never imports torchvision: :func:`..translation_table` adds the entry when the op exists.
torchvision always passes a mask and a bias (zeros when the user gave none, with ``use_mask``
false for "no mask"); only the mask is dropped, the bias becomes a constant initializer.
"""

from __future__ import annotations

from onnxscript.onnx_types import TensorType

from edgeconv.opdefs import DEFORM_CONV2D

from ._common import TranslationError, edgeconv_opset, static_dim


def _static_int(value, name: str, op: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise TranslationError(f"{op}: {name} must be a static int, got {value!r}") from None


def torchvision_deform_conv2d(
    input: TensorType,
    weight: TensorType,
    offset: TensorType,
    mask: TensorType,
    bias: TensorType,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dilation_h: int,
    dilation_w: int,
    groups: int,
    offset_groups: int,
    use_mask: bool,
) -> TensorType:
    """torchvision::deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask,
    Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h,
    SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) -> Tensor"""
    op = "torchvision::deform_conv2d"
    ints = {name: _static_int(v, name, op) for name, v in (
        ("stride_h", stride_h), ("stride_w", stride_w), ("pad_h", pad_h), ("pad_w", pad_w),
        ("dilation_h", dilation_h), ("dilation_w", dilation_w), ("groups", groups),
        ("offset_groups", offset_groups))}
    c, cg = static_dim(input, 1, "input", op), static_dim(weight, 1, "weight", op)
    if c != cg * ints["groups"]:
        raise TranslationError(f"{op}: input channels {c} != weight.shape[1] {cg} x groups {ints['groups']}")
    return edgeconv_opset.DeformConv2d(
        input,
        weight,
        offset,
        mask if use_mask else None,
        bias,
        **DEFORM_CONV2D.node_attributes(
            strides=[ints["stride_h"], ints["stride_w"]],
            pads=[ints["pad_h"], ints["pad_w"], ints["pad_h"], ints["pad_w"]],
            dilations=[ints["dilation_h"], ints["dilation_w"]],
            group=ints["groups"],
            offset_group=ints["offset_groups"],
        ),
    )
