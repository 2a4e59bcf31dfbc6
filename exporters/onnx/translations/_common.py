from __future__ import annotations

from collections.abc import Sequence

import onnxscript

from .._schemas import DOMAIN, DOMAIN_VERSION, register_schemas

register_schemas()
edgeconv_opset = onnxscript.values.Opset(DOMAIN, DOMAIN_VERSION)


class TranslationError(ValueError):
    """A torch call that the edgeconv ONNX domain cannot express."""


def static_dim(value, axis: int, what: str, op: str) -> int:
    shape = getattr(value, "shape", None)
    if shape is None or len(shape) <= axis:
        raise TranslationError(f"{op}: rank of {what} is unknown")
    d = shape[axis]
    if not isinstance(d, int):
        try:
            d = int(d)
        except (TypeError, ValueError):
            raise TranslationError(f"{op}: dimension {axis} of {what} must be static, got {d!r}") from None
    return d


def pair(v: Sequence[int] | int, name: str, op: str) -> list[int]:
    if isinstance(v, int):
        return [v, v]
    v = [int(i) for i in v]
    if len(v) == 1:
        return v * 2
    if len(v) != 2:
        raise TranslationError(f"{op}: {name} must have 2 values, got {v}")
    return v


def conv_attrs(stride, padding, dilation, op: str) -> dict:
    """torch's stride / symmetric padding / dilation -> the ONNX strides, pads, dilations."""
    ph, pw = pair(padding, "padding", op)
    return {"strides": pair(stride, "stride", op), "pads": [ph, pw, ph, pw],
            "dilations": pair(dilation, "dilation", op)}
