"""Analytic cost model (parameters, MACs) and kernel separability analysis.

``profile(model, input_shape)`` runs one forward pass with hooks and counts, per layer, the
parameters and multiply-accumulates (MACs) from the layer's kind and its input/output shapes.

MACs and kinds: one definition per kind in :mod:`edgeconv.kinds` (its docstring states the MAC
conventions); third-party layers are recognised by registering them there.

``separable_approximation`` gives the best rank-``r`` factorisation of a kernel by SVD
(Eckart-Young) and its relative Frobenius error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from .kinds import kind_of, lookup, macs_of

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
    return total - sum(m.inactive_parameters() for m in module.modules() if hasattr(m, "inactive_parameters"))


def profile(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    dtype: torch.dtype = torch.float32,
    device: Optional[torch.device] = None,
) -> ProfileResult:
    """Per-layer parameters, MACs and output shapes of ``model`` on an input of ``input_shape``.

    Profiled units are the outermost modules of a registered kind (:mod:`edgeconv.kinds`: the
    edgeconv layers, ``nn.Conv2d``, ``nn.Linear``, registered third-party layers; children of a
    unit are not listed separately). One forward pass runs under
    ``torch.no_grad()`` in eval mode (the training flag is restored) on a random input; every call
    of a unit gives one row. MAC conventions: see :mod:`edgeconv.kinds`.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 2 or min(shape) <= 0:
        raise ValueError(f"input_shape must be a positive shape like (N, C, H, W), got {tuple(input_shape)}")
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")

    units: Dict[str, nn.Module] = {}
    for name, m in model.named_modules():
        if lookup(m) is not None and not any(
            name.startswith(u + ".") or u == "" for u in units
        ):
            units[name] = m

    rows: List[LayerProfile] = []
    handles = []

    def make_hook(name: str):
        def hook(mod: nn.Module, args: Tuple[Any, ...], output: torch.Tensor) -> None:
            parts = macs_of(mod, args, output)
            rows.append(
                LayerProfile(
                    name=name,
                    kind=kind_of(mod),
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
