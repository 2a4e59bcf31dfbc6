"""The one timer, the one parity metric and the one output flattener of edgeconv.

Parity: ``rel = max|y - y_ref| / max|y_ref|`` over all outputs (norm-wise, so that outputs near
zero do not blow up an element-wise ratio); ``ok`` iff ``rel <= tol``. Latency: median (and
p10/p90) of ``repeats`` timed runs after warm-up.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List, Sequence

import numpy as np

__all__ = ["time_callable", "summarize_ms", "parity", "max_rel_err", "to_numpy_list", "one_line",
           "kind_latency_torch"]


def time_callable(fn: Callable[[], Any], repeats: int = 20, warmup: int = 3) -> Dict[str, Any]:
    """Run ``fn`` ``warmup`` times, then time ``repeats`` runs: median/p10/p90/mean in ms."""
    for _ in range(max(0, warmup)):
        fn()
    samples = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return summarize_ms(samples)


def summarize_ms(samples_ms: Sequence[float]) -> Dict[str, Any]:
    """Median/p10/p90/mean/min of samples in milliseconds."""
    arr = np.asarray(list(samples_ms), dtype=np.float64)
    return {
        "median_ms": float(np.median(arr)),
        "p10_ms": float(np.percentile(arr, 10)),
        "p90_ms": float(np.percentile(arr, 90)),
        "mean_ms": float(arr.mean()),
        "min_ms": float(arr.min()),
        "repeats": int(arr.size),
    }


def parity(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray], tol: float = 1e-4) -> Dict[str, Any]:
    """Compare outputs with the reference: ``rel = max|diff| / max|ref|`` over all outputs.

    An output with the reference's size but another shape is compared reshaped (a runtime may
    drop a unit dimension); a count or size mismatch or a non-finite value is an ``error``.
    """
    ref = [np.asarray(r, dtype=np.float64) for r in reference]
    out = [np.asarray(o, dtype=np.float64) for o in outputs]
    if len(ref) != len(out):
        return {"ok": False, "error": f"{len(out)} outputs, expected {len(ref)}", "tol": tol}
    max_abs, scale = 0.0, 0.0
    for r, o in zip(ref, out):
        if r.shape != o.shape:
            if r.size == o.size:
                o = o.reshape(r.shape)
            else:
                return {"ok": False, "error": f"shape {list(o.shape)} != reference {list(r.shape)}", "tol": tol}
        if not np.all(np.isfinite(o)):
            return {"ok": False, "error": "non-finite values in output", "tol": tol}
        if r.size:
            max_abs = max(max_abs, float(np.max(np.abs(r - o))))
            scale = max(scale, float(np.max(np.abs(r))))
    rel = max_abs / scale if scale > 0 else max_abs
    return {"ok": bool(rel <= tol), "max_abs": max_abs, "rel": rel, "tol": tol}


def max_rel_err(outputs: Any, reference: Any) -> float:
    """:func:`parity`'s ``rel`` as a number (``inf`` when the outputs cannot be compared)."""
    res = parity(to_numpy_list(reference), to_numpy_list(outputs), tol=float("inf"))
    return res["rel"] if "rel" in res else float("inf")


def to_numpy_list(out: Any) -> List[np.ndarray]:
    """Flatten a model's outputs (torch/TVM tensors, nested lists/tuples/TVM arrays, dicts) to a
    list of numpy arrays in order."""
    if hasattr(out, "detach"):  # torch.Tensor
        return [out.detach().cpu().numpy()]
    if isinstance(out, np.ndarray):
        return [out]
    if hasattr(out, "numpy"):  # tvm.runtime.Tensor
        return [out.numpy()]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)) or type(out).__name__ in ("Array", "Tuple"):
        return [a for o in out for a in to_numpy_list(o)]
    return [np.asarray(out)]


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters): a stage's failure reason."""
    text = str(exc).strip().splitlines()
    msg = text[0] if text else ""
    if len(msg) > 300:
        msg = msg[:297] + "..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def kind_latency_torch(model, x, prof, repeats: int = 10, warmup: int = 2) -> Dict[str, float]:
    """Median per-kind time (ms) of the profiled layers in PyTorch eager, measured with hooks.

    A forward pre-hook/hook pair around each profiled unit (the rows of ``prof``) accumulates
    ``perf_counter`` time per kind within one forward pass; the median over ``repeats`` passes
    is reported. ``"other"`` = median full forward time minus the sum (BN, activations, adds,
    pooling, hook overhead).
    """
    import torch

    units = {}
    for r in prof.rows:
        try:
            units[r.name] = (model.get_submodule(r.name) if r.name else model, r.kind)
        except AttributeError:
            continue
    acc: Dict[str, float] = {}
    starts: Dict[int, float] = {}
    handles = []
    for name, (mod, kind) in units.items():
        def pre(m, args, _key=id(mod)):
            starts[_key] = time.perf_counter()

        def post(m, args, out, _key=id(mod), _kind=kind):
            acc[_kind] = acc.get(_kind, 0.0) + time.perf_counter() - starts.pop(_key, time.perf_counter())

        handles.append(mod.register_forward_pre_hook(pre))
        handles.append(mod.register_forward_hook(post))
    per_kind: Dict[str, List[float]] = {}
    totals: List[float] = []
    try:
        with torch.no_grad():
            for i in range(warmup + repeats):
                acc.clear()
                t0 = time.perf_counter()
                model(x)
                total = time.perf_counter() - t0
                if i >= warmup:
                    totals.append(total)
                    for k, v in acc.items():
                        per_kind.setdefault(k, []).append(v)
    finally:
        for h in handles:
            h.remove()
    result = {k: statistics.median(v) * 1e3 for k, v in per_kind.items()}
    result = dict(sorted(result.items(), key=lambda kv: -kv[1]))
    result["other"] = max(0.0, statistics.median(totals) * 1e3 - sum(result.values())) if totals else 0.0
    return result
