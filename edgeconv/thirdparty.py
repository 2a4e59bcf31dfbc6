"""``edgeconv.convert(model)``: swap known third-party modules for edgeconv layers with the same
weights, so that they export to the ``edgeconv`` domain.

Known modules:

* timm's ``CondConv2d`` (``timm.layers.CondConv2d``, CondConv, Yang et al. 2019; used by
  ``efficientnet_cc_*``) -> :class:`RoutedDynamicConv2d`, which runs ``edgeconv::dynamic_conv2d``
  (ONNX ``edgeconv.DynamicConv2d``) with the routing weights as the attention and the expert
  biases mixed the same way.

Why a module swap and not a translation of the traced pattern: CondConv computes every sample
with its own kernel by folding the batch into the channels (``x.reshape(1, B*C, H, W)`` and a
conv with ``groups = groups * B``). Traced, that is a matmul, views and a grouped ``aten.conv2d``
whose groups are a batch-size expression: the same graph as any other grouped convolution fed by
a reshape, so a pattern matcher cannot tell it apart reliably; its exact ops (view vs reshape,
the final permute) have changed across timm versions; and with a dynamic batch torch.onnx fails
before a translation of the pattern could see it (ONNX ``Conv`` needs a constant group). The
module's own attributes (``weight [E, O*C/g*kh*kw]``, ``bias [E, O]``, stride, padding, dilation,
groups) are stable across timm releases and say exactly what it computes.

Third-party packages are never imported here: a module is recognised by its class, looked up in
the already imported modules (a model holding a timm layer has imported timm), so ``convert``
works, and changes nothing, where timm or torchvision are absent or broken.
torchvision's ``DeformConv2d`` needs no conversion: ``torchvision::deform_conv2d`` has an ONNX
translation of its own (``edgeconv.DeformConv2d``).
"""

from __future__ import annotations

import copy
import sys
from typing import Callable, Optional

import torch
from torch import nn

from . import functional as ecf
from .kinds import conv_macs, layer_kind

__all__ = ["convert", "RoutedDynamicConv2d"]


@layer_kind
class RoutedDynamicConv2d(nn.Module):
    """Dynamic convolution whose mixing weights come from outside: ``forward(x, routing_weights)``
    with ``routing_weights [N, num_experts]`` (the interface of timm's ``CondConv2d``).

    Per sample ``n``: ``y_n = conv(x_n, sum_e r[n,e] W_e) + sum_e r[n,e] b_e``, computed by
    ``edgeconv::dynamic_conv2d``. ``weight`` is ``[num_experts, out_ch, in_ch/groups, kh, kw]``,
    ``bias`` ``[num_experts, out_ch]`` or ``None``. ``same_pad``, when given, pads the input
    before the convolution (timm's TF-style dynamic "same" padding, ``padding`` is then 0).
    """

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], stride, padding, dilation,
                 groups: int, same_pad: Optional[Callable] = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = None if bias is None else nn.Parameter(bias)
        self.stride, self.padding, self.dilation = tuple(stride), tuple(padding), tuple(dilation)
        self.groups = groups
        self.same_pad = same_pad

    def forward(self, x: torch.Tensor, routing_weights: torch.Tensor) -> torch.Tensor:
        if self.same_pad is not None:
            x = self.same_pad(x, self.weight.shape[-2:], self.stride, self.dilation)
        return ecf.dynamic_conv2d(x, self.weight, routing_weights, self.bias, stride=self.stride,
                                  padding=self.padding, dilation=self.dilation, groups=self.groups)

    kind = "dynamic"

    def macs(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        """Expert mixing per sample (weights and biases) + the conv with the mixed kernel; the
        routing layer is a module of its own (see :mod:`edgeconv.kinds`)."""
        experts, out_ch = self.weight.shape[:2]
        mixed = self.weight[0].numel() + (out_ch if self.bias is not None else 0)
        return {"kernel_mixing": x.shape[0] * experts * mixed,
                "conv": conv_macs(y.shape, self.weight.shape[2], tuple(self.weight.shape[-2:]))}

    def extra_repr(self) -> str:
        k, o, cg, kh, kw = self.weight.shape
        return (f"{cg * self.groups}, {o}, kernel_size={(kh, kw)}, num_experts={k}, stride={self.stride}, "
                f"padding={'same (dynamic)' if self.same_pad else self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}")


def _from_timm_condconv(m: nn.Module) -> RoutedDynamicConv2d:
    experts = m.weight.shape[0]
    weight = m.weight.detach().reshape(experts, *m.weight_shape).clone()
    bias = None if m.bias is None else m.bias.detach().reshape(experts, m.out_channels).clone()
    same_pad = None
    if m.dynamic_padding:  # padding depends on the input size: timm's own function computes it
        same_pad = sys.modules["timm.layers.padding"].pad_same
    out = RoutedDynamicConv2d(weight, bias, m.stride, m.padding, m.dilation, m.groups, same_pad)
    out.weight.requires_grad_(m.weight.requires_grad)
    if out.bias is not None:
        out.bias.requires_grad_(m.bias.requires_grad)
    return out.train(m.training)


def _converters() -> list[tuple[type, Callable[[nn.Module], nn.Module]]]:
    """(third-party class, converter) for each known class whose package is already imported."""
    out = []
    timm_cond = sys.modules.get("timm.layers.cond_conv2d")
    if timm_cond is not None and hasattr(timm_cond, "CondConv2d"):
        out.append((timm_cond.CondConv2d, _from_timm_condconv))
    return out


def convert(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``model`` with every known third-party module replaced by its edgeconv equivalent
    (same weights, same outputs within float32 rounding; see the module docstring for the list).

    Convert after loading the weights: the replacements hold them in edgeconv's layout (e.g.
    ``[E, O, C/g, kh, kw]`` instead of timm's ``[E, O*C/g*kh*kw]``), so a state dict saved from
    the original model no longer loads. ``inplace=False`` (default) converts a deep copy.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert expects a torch.nn.Module, got {type(model).__name__}")
    converters = _converters()
    if not inplace:
        model = copy.deepcopy(model)
    if not converters:
        return model

    def replacement(m: nn.Module) -> Optional[nn.Module]:
        return next((fn(m) for cls, fn in converters if isinstance(m, cls)), None)

    root = replacement(model)
    if root is not None:
        return root
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            new = replacement(child)
            if new is not None:
                setattr(parent, child_name, new)
    return model
