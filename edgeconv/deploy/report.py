"""``report.md`` and ``report.json`` of a deploy run (``latency.png``: :mod:`.plot`)."""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict

from edgeconv import __version__
from edgeconv.cli_common import fmt_count

from .plot import write_plot
from .stages import BACKEND_LABELS, DEFAULT_TARGETS

if TYPE_CHECKING:
    from .pipeline import DeployResult

__all__ = ["report_dict", "write_report"]


def _versions() -> Dict[str, str]:
    out = {"python": platform.python_version(), "machine": platform.machine()}
    for mod in ("torch", "onnx", "onnxruntime", "onnxscript", "tvm"):
        try:
            out[mod] = getattr(importlib.import_module(mod), "__version__", "?")
        except Exception:
            out[mod] = "not installed"
    out["edgeconv"] = __version__
    return out


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def report_dict(result: DeployResult) -> Dict[str, Any]:
    """Everything in ``report.json``."""
    cfg = result.config
    stages = []
    for s in result.stages:
        d = asdict(s)
        d["ok"] = s.ok
        stages.append(d)
    latency = {s.name: s.latency for s in result.stages if s.latency}
    par = {s.name: s.parity for s in result.stages if s.parity}
    prof = result.profile
    return {
        "model": cfg.model_name,
        "input_shape": list(cfg.input_shape),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "targets": list(cfg.targets) if cfg.targets is not None else list(DEFAULT_TARGETS),
        "targets_explicit": cfg.targets is not None,
        "threads": cfg.threads,
        "repeats": cfg.repeats,
        "tolerance": cfg.tol,
        "exit_code": result.exit_code,
        "stages": stages,
        "parity": par,
        "latency_ms": latency,
        "total_params": prof.total_params if prof is not None else None,
        "total_macs": prof.total_macs if prof is not None else None,
        "kinds": result.kinds,
        "kind_latency_ms_torch": result.kind_latency_ms,
        "layers": prof.as_dicts() if prof is not None else [],
        "versions": _versions(),
    }


def write_report(result: DeployResult) -> None:
    cfg = result.config
    outdir = Path(cfg.outdir)
    data = report_dict(result)
    (outdir / "report.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    plot_note = write_plot(result, outdir / "latency.png")
    (outdir / "report.md").write_text(_markdown(result, data, plot_note))
    result.report_files = ["report.md", "report.json"] + (["latency.png"] if (outdir / "latency.png").exists() else [])


def _markdown(result: DeployResult, data: Dict[str, Any], plot_note: str) -> str:
    cfg = result.config
    shape = "x".join(map(str, cfg.input_shape))
    lines = [f"# edgeconv deploy: `{cfg.model_name}` on {shape}", ""]
    prof = result.profile
    v = data["versions"]
    ref = "ref" if cfg.onnx_model is not None else "torch"
    lines += [
        f"- created {data['created']}; host {v.get('machine')}, {os.cpu_count()} cores; "
        f"threads {cfg.threads}; {cfg.repeats} timed runs per backend (median)",
        f"- torch {v.get('torch')}, onnx {v.get('onnx')}, onnxruntime {v.get('onnxruntime')}, tvm {v.get('tvm')}",
        f"- targets: {', '.join(data['targets'])} ({'named explicitly' if data['targets_explicit'] else 'default'});"
        f" parity tolerance: max|y - y_{ref}| / max|y_{ref}| <= {cfg.tol:g}",
    ]
    if prof is not None:
        lines.append(f"- {prof.total_params:,} parameters, {prof.total_macs:,} MACs ({fmt_count(prof.total_macs)})")
    status = "PASS" if result.exit_code == 0 else "FAIL"
    lines += ["", f"**Result: {status}** (exit code {result.exit_code}: 0 iff every stage passed or was legitimately "
              "skipped -- a missing optional dependency of a default target, or no ARM emulator)", ""]

    lines += ["## Stages", "", "| stage | status | time (s) | parity (rel err) | max abs err | latency median (ms) | notes |",
              "|---|---|---:|---:|---:|---:|---|"]
    for s in result.stages:
        par = s.parity or {}
        rel = f"{par['rel']:.2e}" if "rel" in par else ("n/a" if not par else "-")
        mab = f"{par['max_abs']:.2e}" if "max_abs" in par else ""
        lat = f"{s.latency['median_ms']:.3f}" if s.latency else ""
        status = s.status + (" (ok)" if s.status == "skipped" and s.legit else "")
        note = s.reason
        if not note:
            if s.name in ("export", "optimize") and s.info.get("ops"):
                note = "ops: " + ", ".join(s.info["ops"])
            elif s.name.startswith("tvm") and "compile_s" in s.info:
                note = f"compile {s.info['compile_s']:.1f} s; " + ", ".join(s.artifacts)
            elif s.artifacts:
                note = ", ".join(s.artifacts)
        if s.info.get("note"):
            note = f"{note}. {s.info['note']}" if note else s.info["note"]
        lines.append(f"| {s.name} | {status} | {s.seconds or 0:.2f} | {rel} | {mab} | {lat} | {_md_escape(note)} |")

    lat_rows = [(s, BACKEND_LABELS.get(s.name, s.name)) for s in result.stages if s.latency]
    lines += ["", "## Latency per backend", ""]
    if lat_rows:
        base = result.stage("torch")
        base_ms = base.latency["median_ms"] if base and base.latency else None
        lines += ["| backend | stage | median (ms) | p10 (ms) | p90 (ms) | runs | vs PyTorch |", "|---|---|---:|---:|---:|---:|---:|"]
        for s, label in lat_rows:
            L = s.latency
            speed = f"{base_ms / L['median_ms']:.2f}x" if base_ms and L["median_ms"] > 0 and "emulated" not in label else ""
            lines.append(f"| {label} | {s.name} | {L['median_ms']:.3f} | {L.get('p10_ms', L['median_ms']):.3f} | "
                         f"{L.get('p90_ms', L['median_ms']):.3f} | {L.get('repeats', '')} | {speed} |")
        lines.append("")
        lines.append("Emulated (qemu) times measure the emulator, not an ARM core.")
    else:
        lines.append("(no backend ran)")

    lines += ["", "## Per layer kind", ""]
    if result.kinds:
        kl = result.kind_latency_ms
        lines += ["| kind | layers | params | MACs | MAC share | PyTorch time (ms, hooks) |", "|---|---:|---:|---:|---:|---:|"]
        for k, d in result.kinds.items():
            t = f"{kl[k]:.3f}" if k in kl else ""
            lines.append(f"| {k} | {d['layers']} | {d['params']:,} | {d['macs']:,} | {100 * d['mac_share']:.1f}% | {t} |")
        if "other" in kl:
            lines.append(f"| (other: BN, activations, adds, pooling) | | | | | {kl['other']:.3f} |")
        lines += ["", "Params per kind count the layers' own parameters (BatchNorm etc. excluded; the model total "
                  "includes them). PyTorch time per kind: forward pre-/post-hooks around each layer, median over runs."]
    else:
        lines.append("(profile failed)")

    lines += ["", "## Plot", "", "![latency](latency.png)" if plot_note.startswith("ok") else f"(no plot: {plot_note})", ""]
    if plot_note.startswith("ok"):
        lines += [plot_note[3:].strip(), ""]

    if prof is not None:
        lines += ["<details><summary>Per-layer profile</summary>", "", "| layer | kind | params | MACs | output |",
                  "|---|---|---:|---:|---|"]
        for r in prof.rows:
            lines.append(f"| {r.name or '(model)'} | {r.kind} | {r.params:,} | {r.macs:,} | {'x'.join(map(str, r.output_shape))} |")
        lines += ["", "</details>", ""]

    failed = [s for s in result.stages if s.status == "failed" and s.info.get("traceback")]
    if failed:
        lines += ["## Errors", ""]
        for s in failed:
            lines += [f"### {s.name}", "", "```", s.info["traceback"].rstrip(), "```", ""]
    return "\n".join(lines) + "\n"
