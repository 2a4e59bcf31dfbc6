"""``latency.png`` of a deploy run (matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .measure import one_line
from .stages import BACKEND_LABELS

if TYPE_CHECKING:
    from .pipeline import DeployResult

__all__ = ["write_plot"]


def write_plot(result: DeployResult, path: Path) -> str:
    """latency.png: (left) median latency per backend with p10-p90 bars; (right) PyTorch time
    per layer kind (hooks) with the MAC share annotated. Returns "ok <caption>" or the reason."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:
        return f"matplotlib unavailable ({one_line(exc)})"
    try:
        lat = [(BACKEND_LABELS.get(s.name, s.name), s.latency) for s in result.stages if s.latency]
        kl = {k: v for k, v in result.kind_latency_ms.items()}
        fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1, 1.2]})
        ax = axes[0]
        if lat:
            labels = [l for l, _ in lat]
            med = [d["median_ms"] for _, d in lat]
            lo = [max(0.0, d["median_ms"] - d.get("p10_ms", d["median_ms"])) for _, d in lat]
            hi = [max(0.0, d.get("p90_ms", d["median_ms"]) - d["median_ms"]) for _, d in lat]
            colors = ["#888888" if "PyTorch" in l else ("#d98c2b" if "emulated" in l else "#3b75af") for l in labels]
            y = np.arange(len(labels))
            ax.barh(y, med, xerr=[lo, hi], color=colors, capsize=3)
            ax.set_yticks(y, labels)
            ax.invert_yaxis()
            for yi, m, h in zip(y, med, hi):
                ax.text(m + h, yi, f"  {m:.2f} ms", va="center", fontsize=8)
            ax.margins(x=0.25)
            if any("emulated" in l for l in labels):
                ax.set_xscale("log")
            ax.set_xlabel("median latency (ms), bars p10-p90")
        else:
            ax.text(0.5, 0.5, "no backend ran", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{result.config.model_name} {'x'.join(map(str, result.config.input_shape))}: "
                     f"latency per backend ({result.config.threads[0]} thread(s))", fontsize=10)
        ax = axes[1]
        kinds = [k for k in kl if k != "other"]
        if kinds:
            vals = [kl[k] for k in kinds] + [kl.get("other", 0.0)]
            names = kinds + ["other (BN, act, add, pool)"]
            y = np.arange(len(names))
            ax.barh(y, vals, color=["#4c9a5b"] * len(kinds) + ["#bbbbbb"])
            ax.set_yticks(y, names, fontsize=8)
            ax.invert_yaxis()
            for yi, k, v in zip(y, names, vals):
                share = result.kinds.get(k, {}).get("mac_share")
                ax.text(v, yi, f" {v:.3f} ms" + (f" ({100 * share:.0f}% MACs)" if share is not None else ""),
                        va="center", fontsize=7)
            ax.set_xlabel("ms per forward (median; forward hooks)")
            ax.margins(x=0.35)
        else:
            ax.text(0.5, 0.5, "no per-kind timing (profile failed)", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("time per layer kind (PyTorch, hooks) with MAC share", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    except Exception as exc:
        return f"plot failed ({one_line(exc)})"
    return ("ok Left: median latency of every backend that ran (bars: p10-p90; log scale when an emulated "
            "run is included). Right: time per layer kind in PyTorch eager, measured with forward hooks "
            "around each layer (median over runs), annotated with each kind's share of the MACs.")
