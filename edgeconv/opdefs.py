"""The contract of each operator of the ONNX domain ``edgeconv``, stated once.

Name, torch op, inputs (order, optional), attributes (type, default) and element types of
``DeformConv2d`` and ``DynamicConv2d``. Derived from it: the ONNX schemas and their shape
inference defaults (:mod:`edgeconv.exporters.onnx._schemas`), the attributes the translations
write, the fallback functions' signatures and attribute defaults; ``docs/onnx-ops.md`` and the
C++ kernels (custom_ops/) keep their own text/checks and tests compare both with this module.
Pure Python: importing it costs nothing (the ARM helper and the benchmarks use :data:`DOMAIN`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple, Union

__all__ = ["DOMAIN", "DOMAIN_VERSION", "Input", "Attribute", "OpDef", "DEFORM_CONV2D", "DYNAMIC_CONV2D", "OPS"]

DOMAIN = "edgeconv"
DOMAIN_VERSION = 1


@dataclass(frozen=True)
class Input:
    name: str
    shape: str
    doc: str
    optional: bool = False


@dataclass(frozen=True)
class Attribute:
    name: str
    default: Union[int, Tuple[int, ...]]
    doc: str

    @property
    def is_list(self) -> bool:
        """``INTS`` (a tuple default) or ``INT``."""
        return isinstance(self.default, tuple)


@dataclass(frozen=True)
class OpDef:
    name: str
    torch_op: str  # the ``edgeconv::`` torch op that exports to it
    doc: str
    inputs: Tuple[Input, ...]
    attributes: Tuple[Attribute, ...]
    #: element types (numpy names): float32 only, like the kernels
    dtypes: Tuple[str, ...] = ("float32",)

    @property
    def input_names(self) -> Tuple[str, ...]:
        return tuple(i.name for i in self.inputs)

    @property
    def defaults(self) -> Dict[str, Union[int, Tuple[int, ...]]]:
        return {a.name: a.default for a in self.attributes}

    def signature(self) -> str:
        """``Name(X, W, offset, mask?, B?) -> Y``: the heading of the op in docs/onnx-ops.md."""
        return f"{self.name}({', '.join(i.name + ('?' if i.optional else '') for i in self.inputs)}) -> Y"

    def node_attributes(self, **values: Any) -> Dict[str, Union[int, list]]:
        """``values`` checked against the attributes (names, int vs list of ints), in their order."""
        known = {a.name: a for a in self.attributes}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{DOMAIN}.{self.name} has no attribute {', '.join(unknown)}; "
                             f"attributes: {', '.join(known)}")
        out: Dict[str, Union[int, list]] = {}
        for name, attr in known.items():
            if name not in values:
                continue
            v = values[name]
            if attr.is_list:
                if not isinstance(v, Sequence) or len(v) != len(attr.default) or not all(_is_int(i) for i in v):
                    raise ValueError(f"{DOMAIN}.{self.name}: {name} must be {len(attr.default)} ints, got {v!r}")
                out[name] = [int(i) for i in v]
            else:
                if not _is_int(v):
                    raise ValueError(f"{DOMAIN}.{self.name}: {name} must be an int, got {v!r}")
                out[name] = int(v)
        return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_CONV_ATTRIBUTES = (
    Attribute("strides", (1, 1), "Stride along H and W (default [1, 1])."),
    Attribute("pads", (0, 0, 0, 0), "Zero padding [top, left, bottom, right] (default 0)."),
    Attribute("dilations", (1, 1), "Dilation along H and W (default [1, 1])."),
    Attribute("group", 1, "Number of channel groups (default 1)."),
)

DEFORM_CONV2D = OpDef(
    name="DeformConv2d",
    torch_op="edgeconv::deform_conv2d",
    doc="Deformable 2-D convolution (DCNv1 without mask, DCNv2 with mask). Same semantics as "
        "ONNX DeformConv-19, whose input order is (X, W, offset, B, mask); here (X, W, offset, mask, B).",
    inputs=(
        Input("X", "[N, C, H, W]", "Input (N, C, H, W)."),
        Input("W", "[O, C/group, kh, kw]", "Weight (O, C/group, kh, kw)."),
        Input("offset", "[N, offset_group*2*kh*kw, oh, ow]", "Offsets (N, offset_group*2*kh*kw, oh, ow), (dy, dx) per tap."),
        Input("mask", "[N, offset_group*kh*kw, oh, ow]", "Modulation (N, offset_group*kh*kw, oh, ow); absent = DCNv1.",
              optional=True),
        Input("B", "[O]", "Bias (O).", optional=True),
    ),
    attributes=_CONV_ATTRIBUTES + (
        Attribute("offset_group", 1, "Number of offset groups: the C input channels are split in offset_group "
                                     "blocks, each with its own offsets and mask (default 1)."),
    ),
)

DYNAMIC_CONV2D = OpDef(
    name="DynamicConv2d",
    torch_op="edgeconv::dynamic_conv2d",
    doc="Dynamic convolution (Chen et al. 2020): per sample n, Y[n] = Conv(X[n], sum_k attention[n,k] W[k]) "
        "+ sum_k attention[n,k] B[k].",
    inputs=(
        Input("X", "[N, C, H, W]", "Input (N, C, H, W)."),
        Input("W", "[K, O, C/group, kh, kw]", "Kernel bank (K, O, C/group, kh, kw)."),
        Input("attention", "[N, K]", "Mixing weights (N, K)."),
        Input("B", "[K, O]", "Bias bank (K, O).", optional=True),
    ),
    attributes=_CONV_ATTRIBUTES,
)

#: op name -> definition
OPS: Dict[str, OpDef] = {op.name: op for op in (DEFORM_CONV2D, DYNAMIC_CONV2D)}
