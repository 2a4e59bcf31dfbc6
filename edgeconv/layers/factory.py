"""``create_conv2d``: build any edgeconv convolution kind by name (timm ``create_conv2d`` style)."""

from __future__ import annotations

from typing import Any, Callable, Dict

from torch import nn

from .._validate import check_positive, resolve_padding, to_pair
from .deform import DeformConv2d, ModulatedDeformConv2d
from .depthwise import DepthwiseConv2d, GlobalDepthwiseConv2d
from .dilated import DilatedConv2d
from .dynamic import DynamicConv2d
from .flattened import FlattenedConv2d
from .group_conv import GroupConv2d
from .hetconv import HetConv2d
from .mixconv import MixConv2d
from .separable import DepthwiseSeparableConv2d
from .shuffle import ChannelShuffle, ShuffledGroupConv2d
from .spatially_separable import SpatiallySeparableConv2d
from .true_conv import TrueConv2d

__all__ = ["create_conv2d", "CONV_KINDS"]


def _same_channels(kind: str, in_ch: int, out_ch: int) -> None:
    if in_ch != out_ch:
        raise ValueError(
            f"kind={kind!r} preserves channels: out_ch must equal in_ch ({in_ch}), got {out_ch}"
        )


def _conv(in_ch: int, out_ch: int, kernel_size=3, padding=None, dilation=1, **kw: Any) -> nn.Conv2d:
    check_positive("in_ch", in_ch)
    check_positive("out_ch", out_ch)
    k, d = to_pair("kernel_size", kernel_size), to_pair("dilation", dilation)
    return nn.Conv2d(in_ch, out_ch, k, padding=resolve_padding(padding, k, d), dilation=d, **kw)


def _true(in_ch: int, out_ch: int, kernel_size=3, padding=None, **kw: Any) -> TrueConv2d:
    return TrueConv2d(in_ch, out_ch, kernel_size, padding=padding, **kw)


def _group(in_ch: int, out_ch: int, kernel_size=3, **kw: Any) -> GroupConv2d:
    if "groups" not in kw:
        raise ValueError("kind='group' needs groups=<int>")
    return GroupConv2d(in_ch, out_ch, kernel_size, **kw)


def _depthwise(in_ch: int, out_ch: int, multiplier=None, **kw: Any) -> DepthwiseConv2d:
    check_positive("in_ch", in_ch)
    if multiplier is None:
        if out_ch % in_ch != 0:
            raise ValueError(
                f"kind='depthwise': out_ch ({out_ch}) must be a multiple of in_ch ({in_ch}) "
                "(out_ch = in_ch * multiplier)"
            )
        multiplier = out_ch // in_ch
    elif out_ch != in_ch * multiplier:
        raise ValueError(
            f"kind='depthwise': out_ch must equal in_ch * multiplier = {in_ch * multiplier}, got {out_ch}"
        )
    return DepthwiseConv2d(in_ch, multiplier=multiplier, **kw)


def _gdc(in_ch: int, out_ch: int, **kw: Any) -> GlobalDepthwiseConv2d:
    _same_channels("gdc", in_ch, out_ch)
    if "spatial_size" not in kw:
        raise ValueError("kind='gdc' needs spatial_size=<int or (H, W)>")
    return GlobalDepthwiseConv2d(in_ch, **kw)


def _shuffle(in_ch: int, out_ch: int, groups=None, **kw: Any) -> ChannelShuffle:
    _same_channels("shuffle", in_ch, out_ch)
    if groups is None:
        raise ValueError("kind='shuffle' needs groups=<int>")
    check_positive("groups", groups)
    if in_ch % groups:
        raise ValueError(f"in_ch ({in_ch}) must be divisible by groups ({groups})")
    return ChannelShuffle(groups, **kw)


def _shuffled_group(in_ch: int, out_ch: int, kernel_size=1, **kw: Any) -> ShuffledGroupConv2d:
    if "groups" not in kw:
        raise ValueError("kind='shuffled_group' needs groups=<int>")
    return ShuffledGroupConv2d(in_ch, out_ch, kernel_size, **kw)


def _mixconv(in_ch: int, out_ch: int, **kw: Any) -> MixConv2d:
    _same_channels("mixconv", in_ch, out_ch)
    return MixConv2d(in_ch, **kw)


def _dynamic(in_ch: int, out_ch: int, kernel_size=3, **kw: Any) -> DynamicConv2d:
    return DynamicConv2d(in_ch, out_ch, kernel_size, **kw)


# kind name (each layer class's ``kind``, :mod:`edgeconv.kinds`) -> builder
_FACTORIES: Dict[str, Callable[..., nn.Module]] = {
    "conv": _conv,
    TrueConv2d.kind: _true,
    GroupConv2d.kind: _group,
    DepthwiseConv2d.kind: _depthwise,
    GlobalDepthwiseConv2d.kind: _gdc,
    ChannelShuffle.kind: _shuffle,
    ShuffledGroupConv2d.kind: _shuffled_group,
    DepthwiseSeparableConv2d.kind: DepthwiseSeparableConv2d,
    MixConv2d.kind: _mixconv,
    DilatedConv2d.kind: DilatedConv2d,
    DeformConv2d.kind: DeformConv2d,
    ModulatedDeformConv2d.kind: ModulatedDeformConv2d,
    SpatiallySeparableConv2d.kind: SpatiallySeparableConv2d,
    FlattenedConv2d.kind: FlattenedConv2d,
    HetConv2d.kind: HetConv2d,
    DynamicConv2d.kind: _dynamic,
}

#: Valid ``kind`` names for :func:`create_conv2d`.
CONV_KINDS = tuple(_FACTORIES)


def create_conv2d(kind: str, in_ch: int, out_ch: int, **kwargs: Any) -> nn.Module:
    """Build a convolution layer of ``kind`` mapping ``in_ch -> out_ch`` channels.

    Kinds and what they build (extra keyword arguments go to the constructor):

    ============================ ===================================================
    ``"conv"``                   ``nn.Conv2d`` (``kernel_size=3``, ``padding=None`` = "same")
    ``"true"``                   :class:`TrueConv2d` (``kernel_size=3``, ``padding=None`` = "same")
    ``"group"``                  :class:`GroupConv2d` (needs ``groups``)
    ``"depthwise"``              :class:`DepthwiseConv2d` (``out_ch = in_ch * multiplier``)
    ``"gdc"``                    :class:`GlobalDepthwiseConv2d` (needs ``spatial_size``; ``in_ch == out_ch``)
    ``"shuffle"``                :class:`ChannelShuffle` (needs ``groups``; ``in_ch == out_ch``)
    ``"shuffled_group"``         :class:`ShuffledGroupConv2d` (needs ``groups``, ``kernel_size=1``)
    ``"separable"``              :class:`DepthwiseSeparableConv2d`
    ``"mixconv"``                :class:`MixConv2d` (``in_ch == out_ch``)
    ``"dilated"``                :class:`DilatedConv2d`
    ``"deform"`` / ``"deform_v2"`` :class:`DeformConv2d` / :class:`ModulatedDeformConv2d`
    ``"spatially_separable"``    :class:`SpatiallySeparableConv2d`
    ``"flattened"``              :class:`FlattenedConv2d`
    ``"hetconv"``                :class:`HetConv2d`
    ``"dynamic"``                :class:`DynamicConv2d` (``kernel_size=3``)
    ============================ ===================================================

    Raises:
        ValueError: unknown ``kind`` (the message lists the valid kinds), channel counts that
            the kind cannot map, or any invalid constructor argument.
    """
    factory = _FACTORIES.get(kind) if isinstance(kind, str) else None
    if factory is None:
        raise ValueError(f"unknown conv kind {kind!r}; expected one of: {', '.join(CONV_KINDS)}")
    return factory(in_ch, out_ch, **kwargs)
