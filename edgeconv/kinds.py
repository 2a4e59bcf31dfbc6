"""One definition per convolution kind: the name a layer is profiled and reported under and its
MAC formula, found by the layer's class.

Every edgeconv layer class carries its ``kind`` and a ``macs(x, y)`` method and is registered
with :func:`layer_kind`. Other classes register with :func:`register_kind`, keyed by module path
and qualified name (``"torchvision.ops.deform_conv.DeformConv2d"``), so that no third-party
package is imported to recognise its layers; a module's kind is the entry of the first class of
its MRO that has one (a subclass of a registered layer is that kind). Registered here:
``nn.Conv2d`` (``depthwise`` when ``groups == in_channels``, ``group`` for other ``groups > 1``,
``pointwise``, ``dilated``, ``conv``), ``nn.Linear``, torchvision ``DeformConv2d`` and timm
``CondConv2d`` / ``MixedConv2d``.

MAC conventions (for the whole batch; one MAC = one multiply + one add; additions of separate
branches, activations, softmax/sigmoid and bias adds are not counted):

* conv (any ``nn.Conv2d``, group/depthwise/GDC/dilated, :class:`~edgeconv.layers.TrueConv2d`):
  ``out_elems * (C / groups) * kh * kw``.
* ``nn.Linear``: ``out_elems * in_features``.
* composite layers: the sum of their convolutions (depthwise separable, MixConv, spatially
  separable with its ``mid_ch`` intermediate, flattened, shuffled group: the shuffle is free).
* HetConv: the MACs that run in the efficient form, ``B*oh*ow*N*((C/P)*K*K + C)``: the dense
  masked 1x1 executes ``C`` (not ``C - C/P``) MACs per output (see :mod:`edgeconv.layers.hetconv`).
* deformable (v1/v2): main conv ``out_elems * (C/g) * kh*kw`` + offset conv (+ mask conv for v2)
  + bilinear sampling: every sampled value (one per input channel, kernel tap and output
  position: ``B*C*kh*kw*oh*ow``, shared by all output channels, im2col style) costs 4 MACs (four
  weighted corner reads); v2 adds 1 MAC per sampled value for the modulation ``* m_k``.
  torchvision's layer takes the offsets (and mask) as inputs: their convs are separate modules.
* dynamic: attention (GAP: 1 MAC per input element, ``fc1``, ``fc2``) + kernel mixing
  ``K * |W_k|`` (+ ``K * O`` for the bias) per sample + the conv with the mixed kernel; timm's
  CondConv takes its routing weights as an input (the routing layer is a separate module).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

from torch import nn

__all__ = ["KindEntry", "class_key", "register_kind", "layer_kind", "lookup", "kind_of", "macs_of", "conv_macs",
           "conv2d_macs"]

#: a MAC formula: (module, the call's positional inputs, output) -> MACs per part
MacFormula = Callable[[nn.Module, Tuple[Any, ...], Any], Dict[str, int]]


@dataclass(frozen=True)
class KindEntry:
    kind: Callable[[nn.Module], str]
    macs: MacFormula


_ENTRIES: Dict[str, KindEntry] = {}


def class_key(cls: type) -> str:
    """``module.qualname`` of ``cls``: the registry key."""
    return f"{cls.__module__}.{cls.__qualname__}"


def register_kind(cls: Union[type, str], kind: Union[str, Callable[[nn.Module], str]], macs: MacFormula) -> None:
    """Recognise ``cls`` (a class or its ``"module.qualname"``) as ``kind`` (a name, or a function
    of the module) costing ``macs(module, inputs, output)`` MACs per part."""
    key = cls if isinstance(cls, str) else class_key(cls)
    _ENTRIES[key] = KindEntry(kind if callable(kind) else (lambda m, _k=kind: _k), macs)


def layer_kind(cls: type) -> type:
    """Class decorator of the edgeconv layers: register ``cls.kind`` and ``cls.macs(x, y)``."""
    register_kind(cls, cls.kind, lambda m, inputs, y: m.macs(inputs[0], y))
    return cls


def lookup(module: nn.Module) -> Optional[KindEntry]:
    """The entry of the first class in ``type(module).__mro__`` that has one, or ``None``."""
    for cls in type(module).__mro__:
        entry = _ENTRIES.get(class_key(cls))
        if entry is not None:
            return entry
    return None


def kind_of(module: nn.Module) -> str:
    entry = lookup(module)
    if entry is None:
        raise KeyError(f"no conv kind registered for {class_key(type(module))}")
    return entry.kind(module)


def macs_of(module: nn.Module, inputs: Tuple[Any, ...], output) -> Dict[str, int]:
    """MACs of one call of ``module`` on ``inputs`` with ``output``, split by part."""
    entry = lookup(module)
    if entry is None:
        raise KeyError(f"no MAC formula registered for {class_key(type(module))}")
    return {k: int(v) for k, v in entry.macs(module, inputs, output).items()}


def conv_macs(out: Sequence[int], in_per_group: int, kernel: Sequence[int]) -> int:
    """A convolution's MACs: ``out_elems * (C / groups) * kh * kw``."""
    return math.prod(out) * in_per_group * math.prod(kernel)


def conv2d_macs(m: nn.Conv2d, x, y) -> Dict[str, int]:
    """The MACs of an ``nn.Conv2d`` (and of the layers that are one: group, depthwise, ...)."""
    return {"conv": conv_macs(y.shape, m.in_channels // m.groups, m.kernel_size)}


def _spatial(y) -> int:
    return math.prod(y.shape[2:]) if y.dim() == 4 else 1


# ------------------------------------------------------------------------------------------
# torch.nn and third-party layers
# ------------------------------------------------------------------------------------------


def _conv2d_kind(m: nn.Conv2d) -> str:
    if m.groups > 1 and m.groups == m.in_channels and m.out_channels % m.in_channels == 0:
        return "depthwise"
    if m.groups > 1:
        return "group"
    if m.kernel_size == (1, 1):
        return "pointwise"
    if m.dilation != (1, 1):
        return "dilated"
    return "conv"


def _torchvision_deform_macs(m, inputs, y) -> Dict[str, int]:
    """torchvision.ops.DeformConv2d(input, offset, mask=None): main conv + bilinear sampling
    (+ modulation when a mask is given); the offset/mask convs are separate modules."""
    x = inputs[0]
    sampled = x.shape[0] * x.shape[1] * math.prod(m.kernel_size) * _spatial(y)
    parts = {"conv": conv_macs(y.shape, m.in_channels // m.groups, m.kernel_size), "sampling": 4 * sampled}
    if len(inputs) > 2 and inputs[2] is not None:
        parts["modulation"] = sampled
    return parts


def _timm_condconv_macs(m, inputs, y) -> Dict[str, int]:
    """timm CondConv2d(x, routing_weights): expert mixing per sample + the conv."""
    b = inputs[0].shape[0]
    mixed = m.weight.shape[1] + (m.bias.shape[1] if m.bias is not None else 0)  # weight [E, params]
    return {"kernel_mixing": b * m.num_experts * mixed,
            "conv": conv_macs(y.shape, m.in_channels // m.groups, m.kernel_size)}


def _timm_mixedconv_macs(m, inputs, y) -> Dict[str, int]:
    """timm MixedConv2d: one conv per channel split (a ModuleDict of convs), outputs concatenated."""
    b, spatial = y.shape[0], _spatial(y)
    parts: Dict[str, int] = {}
    for conv in m.values():
        kh, kw = conv.kernel_size
        key = f"{'depthwise' if conv.groups == conv.in_channels > 1 else 'conv'}_{kh}x{kw}"
        parts[key] = parts.get(key, 0) + b * conv.out_channels * spatial * (conv.in_channels // conv.groups) * kh * kw
    return parts


register_kind(nn.Conv2d, _conv2d_kind, lambda m, inputs, y: conv2d_macs(m, inputs[0], y))
register_kind(nn.Linear, "linear", lambda m, inputs, y: {"linear": y.numel() * m.in_features})
register_kind("torchvision.ops.deform_conv.DeformConv2d", "deform", _torchvision_deform_macs)
for _module in ("timm.layers.cond_conv2d", "timm.models.layers.cond_conv2d"):  # timm >= 0.9 / older
    register_kind(f"{_module}.CondConv2d", "dynamic", _timm_condconv_macs)
for _module in ("timm.layers.mixed_conv2d", "timm.models.layers.mixed_conv2d"):
    register_kind(f"{_module}.MixedConv2d", "mixconv", _timm_mixedconv_macs)
