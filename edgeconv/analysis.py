"""Analytic cost model (parameters, MACs) and kernel separability analysis.

``profile(model, input_shape)`` runs one forward pass with hooks and counts, per layer, the
parameters and multiply-accumulates (MACs) from the layer's kind and its input/output shapes.

MAC conventions (for the whole batch of ``input_shape``; one MAC = one multiply + one add;
additions of separate branches, activations, softmax/sigmoid and bias adds are not counted):

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
* dynamic: attention (GAP: 1 MAC per input element, ``fc1``, ``fc2``) + kernel mixing
  ``K * |W_k|`` (+ ``K * O`` for the bias) per sample + the conv with the mixed kernel.

``separable_approximation`` gives the best rank-``r`` factorisation of a kernel by SVD
(Eckart-Young) and its relative Frobenius error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from . import layers as L

__all__ = [
    "LayerProfile",
    "ProfileResult",
    "profile",
    "count_parameters",
    "kind_summary",
    "SeparableApproximation",
    "separable_approximation",
]


# --------------------------------------------------------------------------------------------
# Profiling
# --------------------------------------------------------------------------------------------


@dataclass
class LayerProfile:
    """One profiled layer call: ``name`` (module path), ``kind``, ``params``, ``macs``,
    ``output_shape`` and a per-part MAC ``detail`` (e.g. ``{"conv": .., "sampling": ..}``)."""

    name: str
    kind: str
    params: int
    macs: int
    output_shape: Tuple[int, ...]
    detail: Dict[str, int] = field(default_factory=dict)


@dataclass
class ProfileResult:
    """Result of :func:`profile`: ``rows`` in execution order plus totals.

    ``total_params`` is the true parameter count of the whole model (including modules that are
    not profiled rows, e.g. BatchNorm; HetConv's masked 1x1 entries excluded); ``total_macs``
    is the sum of the rows' MACs.
    """

    input_shape: Tuple[int, ...]
    rows: List[LayerProfile]
    total_params: int

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.rows)

    def as_dicts(self) -> List[Dict[str, Any]]:
        """Rows as plain dicts (JSON-serialisable)."""
        return [
            {
                "name": r.name,
                "kind": r.kind,
                "params": r.params,
                "macs": r.macs,
                "output_shape": list(r.output_shape),
                "detail": dict(r.detail),
            }
            for r in self.rows
        ]

    def to_table(self) -> str:
        """Fixed-width text table with a totals line."""
        header = ("layer", "kind", "params", "MACs", "output")
        body = [
            (r.name or "(model)", r.kind, f"{r.params:,}", f"{r.macs:,}", "x".join(map(str, r.output_shape)))
            for r in self.rows
        ]
        total = ("TOTAL", "", f"{self.total_params:,}", f"{self.total_macs:,}", "")
        widths = [max(len(row[i]) for row in [header, *body, total]) for i in range(5)]

        def fmt(row: Sequence[str]) -> str:
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
            cells += [row[i].rjust(widths[i]) for i in (2, 3)] + [row[4].ljust(widths[4])]
            return "  ".join(cells).rstrip()

        rule = "-" * len(fmt(header))
        return "\n".join([fmt(header), rule, *map(fmt, body), rule, fmt(total)])


def kind_summary(prof: ProfileResult) -> Dict[str, Dict[str, Any]]:
    """Profile rows aggregated per kind: layers, params, MACs and MAC share (sorted by MACs)."""
    total = max(1, prof.total_macs)
    out: Dict[str, Dict[str, Any]] = {}
    for r in prof.rows:
        k = out.setdefault(r.kind, {"layers": 0, "params": 0, "macs": 0})
        k["layers"] += 1
        k["params"] += r.params
        k["macs"] += r.macs
    for v in out.values():
        v["mac_share"] = v["macs"] / total
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["macs"]))


def count_parameters(module: nn.Module) -> int:
    """True parameter count: all parameters, with HetConv's masked 1x1 entries excluded."""
    total = sum(p.numel() for p in module.parameters())
    for m in module.modules():
        if isinstance(m, L.HetConv2d):
            total -= m.weight_1x1.numel() - int(m.mask_1x1.sum().item())
    return total


def _conv_kind(m: nn.Conv2d) -> str:
    if m.groups > 1 and m.groups == m.in_channels and m.out_channels % m.in_channels == 0:
        return "depthwise"
    if m.groups > 1:
        return "group"
    if m.kernel_size == (1, 1):
        return "pointwise"
    if m.dilation != (1, 1):
        return "dilated"
    return "conv"


_KIND_NAMES = {
    L.TrueConv2d: "true",
    L.GroupConv2d: "group",
    L.DepthwiseConv2d: "depthwise",
    L.GlobalDepthwiseConv2d: "gdc",
    L.ChannelShuffle: "shuffle",
    L.ShuffledGroupConv2d: "shuffled_group",
    L.DepthwiseSeparableConv2d: "separable",
    L.MixConv2d: "mixconv",
    L.DilatedConv2d: "dilated",
    L.DeformConv2d: "deform",
    L.ModulatedDeformConv2d: "deform_v2",
    L.SpatiallySeparableConv2d: "spatially_separable",
    L.FlattenedConv2d: "flattened",
    L.HetConv2d: "hetconv",
    L.DynamicConv2d: "dynamic",
}
_UNIT_TYPES = tuple(_KIND_NAMES) + (nn.Conv2d, nn.Linear)


def _kind(m: nn.Module) -> str:
    name = _KIND_NAMES.get(type(m))
    if name is not None:
        return name
    for cls, kind in _KIND_NAMES.items():  # subclasses of our layers
        if isinstance(m, cls):
            return kind
    if isinstance(m, nn.Conv2d):
        return _conv_kind(m)
    return "linear"


def _conv_macs(out: torch.Size, in_per_group: int, kernel: Sequence[int]) -> int:
    return math.prod(out) * in_per_group * math.prod(kernel)


def _macs(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Dict[str, int]:
    """MACs of one call of unit ``m`` on input ``x`` with output ``y``, split by part."""
    b, c = x.shape[0], x.shape[1]
    h, w = x.shape[-2], x.shape[-1]
    out = y.shape
    spatial = math.prod(out[2:]) if y.dim() == 4 else 1
    if isinstance(m, L.ChannelShuffle):
        return {"shuffle": 0}
    if isinstance(m, L.TrueConv2d):
        return {"conv": _conv_macs(out, c, m.kernel_size)}
    if isinstance(m, nn.Conv2d):  # also Group/Depthwise/GDC/Dilated subclasses
        return {"conv": _conv_macs(out, m.in_channels // m.groups, m.kernel_size)}
    if isinstance(m, nn.Linear):
        return {"linear": y.numel() * m.in_features}
    if isinstance(m, L.ShuffledGroupConv2d):
        return {"conv": _conv_macs(out, c // m.groups, m.conv.kernel_size), "shuffle": 0}
    if isinstance(m, L.DepthwiseSeparableConv2d):
        kk = math.prod(m.depthwise.kernel_size)
        return {"depthwise": b * spatial * c * kk, "pointwise": b * spatial * c * m.out_ch}
    if isinstance(m, L.MixConv2d):
        return {
            f"depthwise_{k}x{k}": b * spatial * ci * k * k for ci, k in zip(m.splits, m.kernel_sizes)
        }
    if isinstance(m, L.SpatiallySeparableConv2d):
        k, oh = m.kernel_size, out[2]
        return {
            "vertical": b * m.mid_ch * oh * w * c * k,  # [B, M, oh, W] x (C * k)
            "horizontal": math.prod(out) * m.mid_ch * k,
        }
    if isinstance(m, L.FlattenedConv2d):
        k, n = m.kernel_size, m.out_ch
        return {
            "lateral": b * n * h * w * c,
            "vertical": b * n * h * w * k,
            "horizontal": math.prod(out) * k,
        }
    if isinstance(m, L.HetConv2d):
        k = m.kernel_size
        return {
            "kxk_group": _conv_macs(out, c // m.p, (k, k)),
            "pointwise_masked": _conv_macs(out, c, (1, 1)),
        }
    if isinstance(m, (L.DeformConv2d, L.ModulatedDeformConv2d)):
        kk = math.prod(m.kernel_size)
        sampled = b * c * kk * spatial
        parts = {
            "conv": _conv_macs(out, c // m.groups, m.kernel_size),
            "offset_conv": b * m.conv_offset.out_channels * spatial * c * kk,
            "sampling": 4 * sampled,
        }
        if m.conv_mask is not None:
            parts["mask_conv"] = b * m.conv_mask.out_channels * spatial * c * kk
            parts["modulation"] = sampled
        return parts
    if isinstance(m, L.DynamicConv2d):
        w_k = m.weight[0].numel()
        return {
            "attention": b * (c * h * w + m.fc1.in_features * m.fc1.out_features
                              + m.fc2.in_features * m.fc2.out_features),
            "kernel_mixing": b * m.num_kernels * (w_k + (m.out_ch if m.bias is not None else 0)),
            "conv": _conv_macs(out, c // m.groups, m.kernel_size),
        }
    raise TypeError(f"no MAC formula for {type(m).__name__}")  # pragma: no cover


def profile(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    dtype: torch.dtype = torch.float32,
    device: Optional[torch.device] = None,
) -> ProfileResult:
    """Per-layer parameters, MACs and output shapes of ``model`` on an input of ``input_shape``.

    Profiled units are the outermost modules that are an edgeconv layer, an ``nn.Conv2d`` or an
    ``nn.Linear`` (children of a unit are not listed separately). One forward pass runs under
    ``torch.no_grad()`` in eval mode (the training flag is restored) on a random input; every call
    of a unit gives one row. MAC conventions: see the module docstring.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 2 or min(shape) <= 0:
        raise ValueError(f"input_shape must be a positive shape like (N, C, H, W), got {tuple(input_shape)}")
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")

    units: Dict[str, nn.Module] = {}
    for name, m in model.named_modules():
        if isinstance(m, _UNIT_TYPES) and not any(
            name.startswith(u + ".") or u == "" for u in units
        ):
            units[name] = m

    rows: List[LayerProfile] = []
    handles = []

    def make_hook(name: str):
        def hook(mod: nn.Module, args: Tuple[Any, ...], output: torch.Tensor) -> None:
            parts = _macs(mod, args[0], output)
            rows.append(
                LayerProfile(
                    name=name,
                    kind=_kind(mod),
                    params=count_parameters(mod),
                    macs=int(sum(parts.values())),
                    output_shape=tuple(output.shape),
                    detail={k: int(v) for k, v in parts.items()},
                )
            )

        return hook

    for name, m in units.items():
        handles.append(m.register_forward_hook(make_hook(name)))
    was_training = model.training
    try:
        model.eval()
        gen = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(shape, generator=gen, dtype=dtype).to(device)
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return ProfileResult(input_shape=shape, rows=rows, total_params=count_parameters(model))


# --------------------------------------------------------------------------------------------
# Separable (low-rank) approximation
# --------------------------------------------------------------------------------------------


class SeparableApproximation(NamedTuple):
    """``vertical [..., K, r]``, ``horizontal [..., r, K]`` and the relative Frobenius ``error [...]``."""

    vertical: torch.Tensor
    horizontal: torch.Tensor
    error: torch.Tensor


def separable_approximation(weight: torch.Tensor, rank: int = 1) -> SeparableApproximation:
    """Best rank-``rank`` separable approximation of a ``K x K`` kernel (or a batch of them) by SVD.

    ``W ~= vertical @ horizontal`` where, with ``W = U diag(s) V^T``,
    ``vertical = U[:, :r] * sqrt(s[:r])`` (``[..., K, r]``: column ``i`` is the ``K x 1`` filter of
    term ``i``) and ``horizontal = sqrt(s[:r])[:, None] * V^T[:r]`` (``[..., r, K]``: row ``i`` is
    the ``1 x K`` filter of term ``i``), so ``W ~= sum_i vertical[:, i] (outer) horizontal[i]``.
    By Eckart-Young this is optimal in the Frobenius norm, and the relative error is
    ``||W - vertical @ horizontal||_F / ||W||_F = sqrt(sum_{i >= r} s_i^2) / sqrt(sum_i s_i^2)``
    (0 for an all-zero kernel).

    Args:
        weight: ``[K, K]`` or batched ``[..., K, K]`` (any ``[..., A, B]`` matrix works, giving
            ``[..., A, r]`` and ``[..., r, B]``; :class:`~edgeconv.layers.SpatiallySeparableConv2d`
            uses it on the ``[C*K, N*K]`` reshaped weight of a multi-channel conv).
        rank: number of separable terms ``r``, ``1 <= r <= min(A, B)``.
    Returns:
        :class:`SeparableApproximation` ``(vertical, horizontal, error)``; factors in the dtype of
        ``weight``, ``error`` a float64 tensor of the batch shape (0-d for a single kernel).
        The SVD runs in float64.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a tensor [..., K, K] with at least 2 dims, got {got}")
    if not weight.is_floating_point():
        raise ValueError(f"weight must be floating point, got {weight.dtype}")
    a, b = weight.shape[-2], weight.shape[-1]
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= min(a, b):
        raise ValueError(f"rank must be an int in [1, min(K_rows, K_cols)] = [1, {min(a, b)}], got {rank!r}")
    w64 = weight.detach().to(torch.float64)
    u, s, vh = torch.linalg.svd(w64, full_matrices=False)
    root = s[..., :rank].sqrt()
    vertical = u[..., :, :rank] * root.unsqueeze(-2)
    horizontal = root.unsqueeze(-1) * vh[..., :rank, :]
    total = s.square().sum(-1)
    tail = s[..., rank:].square().sum(-1)
    error = torch.where(total > 0, (tail / total.clamp_min(torch.finfo(torch.float64).tiny)).sqrt(), torch.zeros_like(total))
    return SeparableApproximation(vertical.to(weight.dtype), horizontal.to(weight.dtype), error)
