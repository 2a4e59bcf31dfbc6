"""``report.md`` and ``report.json`` of a deploy run (``latency.png``: :mod:`.plot`).

The report opens with its decision (:func:`recommend`): per device and thread count, the fastest
backend that passed parity, its margin over the runner-up and whether that margin is inside the
run-to-run noise (:data:`NOISE_METHOD`). Then sizes (:func:`sizes`), stages, latency per thread
count, peak memory (:data:`MEMORY_METHOD`) and the runtimes' own per-kernel profiles.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

import numpy as np

from edgeconv import __version__
from edgeconv.cli_common import fmt_count

from .plot import write_plot
from .stages import BACKEND_LABELS, DEFAULT_TARGETS, DEVICES, StageResult

if TYPE_CHECKING:
    from .pipeline import DeployResult

__all__ = ["report_dict", "write_report", "recommend", "sizes", "NOISE_METHOD", "MEMORY_METHOD"]

NOISE_METHOD = ("run-to-run noise = (p90 - median) of the winner + (median - p10) of the runner-up, over each "
                "one's timed runs: the margin is inside the noise iff their p10-p90 ranges overlap")
MEMORY_METHOD = ("peak RSS (VmHWM) of the fresh process that timed the backend, and its increase over the "
                 "same process's peak after importing the runtime, before loading the model")
#: how the recommendation names its devices
_DEVICE_NAMES = {"host": "host", "rpc": "RPC device"}


def _latency_at(st: StageResult, threads: int, first: int) -> Optional[Dict[str, Any]]:
    """``st``'s latency at ``threads`` (a stage timed at one thread count only has it at ``first``)."""
    if st.by_threads:
        return st.by_threads.get(threads)
    return st.latency if threads == first else None


def recommend(stages: Sequence[StageResult], threads: Sequence[int]) -> List[Dict[str, Any]]:
    """The decision: per device (:data:`~edgeconv.deploy.stages.DEVICES`; emulated runs are no
    candidates) and thread count, the fastest backend whose stage passed with parity within the
    tolerance, the runner-up, the margin and whether it is inside the run-to-run noise
    (:data:`NOISE_METHOD`). One dict per (device, thread count) with a ``text`` line."""
    out = []
    for device in dict.fromkeys(DEVICES.values()):
        if not any(DEVICES.get(s.name) == device for s in stages):
            continue
        for n in threads:
            cands = []
            for s in stages:
                lat = _latency_at(s, n, threads[0])
                if DEVICES.get(s.name) == device and s.status == "passed" and (s.parity or {}).get("ok") and lat:
                    cands.append((lat["median_ms"], s.name, lat))
            cands.sort(key=lambda c: c[0])
            where = f"{_DEVICE_NAMES.get(device, device)}, {n} thread{'s' if n > 1 else ''}"
            rec: Dict[str, Any] = {"device": device, "threads": n, "backend": None}
            if not cands:
                rec["text"] = f"{where}: no backend passed parity: nothing to recommend"
                out.append(rec)
                continue
            ms, name, lat = cands[0]
            rec.update(backend=name, label=BACKEND_LABELS.get(name, name), median_ms=ms)
            text = f"{where}: **{rec['label']}** (`{name}`), {ms:.3f} ms"
            if len(cands) == 1:
                text += "; the only backend here that passed parity"
            else:
                ms2, name2, lat2 = cands[1]
                margin = ms2 - ms
                noise = (lat.get("p90_ms", ms) - ms) + (ms2 - lat2.get("p10_ms", ms2))
                inside = margin <= noise
                rec.update(runner_up=name2, runner_up_ms=ms2, margin_ms=margin, speedup=ms2 / ms if ms > 0 else None,
                           noise_ms=noise, inside_noise=inside)
                text += (f"; runner-up {BACKEND_LABELS.get(name2, name2)} {ms2:.3f} ms ({ms2 / ms:.2f}x): "
                         f"margin {margin:.3f} ms is {'inside' if inside else 'outside'} the run-to-run noise "
                         f"({noise:.3f} ms)" + (": a tie, either will do" if inside else ""))
            rec["text"] = text
            out.append(rec)
    return out


def sizes(result: DeployResult) -> Dict[str, Any]:
    """Parameters (PyTorch's count; the ONNX file's initializer elements) and the bytes on disk of
    every ``.onnx`` and ``.so`` the stages wrote."""
    import onnx

    outdir = Path(result.config.outdir)
    files = {}
    for s in result.stages:
        for a in s.artifacts:
            if a.endswith((".onnx", ".so")) and (outdir / a).exists():
                files[a] = os.path.getsize(outdir / a)
    out: Dict[str, Any] = {"parameters": result.profile.total_params if result.profile is not None else None,
                           "files_bytes": files}
    if "model.onnx" in files:
        model = onnx.load(str(outdir / "model.onnx"), load_external_data=False)
        out["onnx_initializer_elements"] = int(sum(
            int(np.prod(t.dims)) if len(t.dims) else 1 for t in model.graph.initializer))
    return out


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
        "threads": list(cfg.threads),
        "repeats": cfg.repeats,
        "recommendation": recommend(result.stages, cfg.threads),
        "noise_method": NOISE_METHOD,
        "memory_method": MEMORY_METHOD,
        "sizes": sizes(result),
        "omitted": result.omitted,
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


def _sizes_md(sz: Dict[str, Any]) -> List[str]:
    lines = ["", "## Sizes", "", "| what | size |", "|---|---:|"]
    if sz.get("parameters") is not None:
        lines.append(f"| parameters (PyTorch) | {sz['parameters']:,} |")
    if sz.get("onnx_initializer_elements") is not None:
        lines.append(f"| ONNX initializer elements (model.onnx) | {sz['onnx_initializer_elements']:,} |")
    for name, nbytes in sz["files_bytes"].items():
        lines.append(f"| `{name}` | {nbytes:,} bytes ({nbytes / 2**20:.2f} MiB) |")
    return lines


def _latency_md(result: DeployResult) -> List[str]:
    threads = result.config.threads
    rows = [s for s in result.stages if s.latency]
    lines = ["", "## Latency per backend", ""]
    if not rows:
        return lines + ["(no backend ran)"]
    base = result.stage("torch")
    cols = [f"{n} thread{'s' if n > 1 else ''}: median (p10-p90) ms" for n in threads]
    lines += ["| backend | stage | " + " | ".join(cols) + " | runs | vs PyTorch |",
              "|---|---|" + "---:|" * len(cols) + "---:|---:|"]
    for s in rows:
        label = BACKEND_LABELS.get(s.name, s.name)
        cells = []
        for n in threads:
            L = _latency_at(s, n, threads[0])
            cells.append(f"{L['median_ms']:.3f} ({L.get('p10_ms', L['median_ms']):.3f}-{L.get('p90_ms', L['median_ms']):.3f})"
                         if L else "")
        # speed-up vs PyTorch at the same thread count: the first one
        b = base.latency if base and base.latency else None
        speed = f"{b['median_ms'] / s.latency['median_ms']:.2f}x" if b and s.latency["median_ms"] > 0 and "emulated" not in label else ""
        lines.append(f"| {label} | {s.name} | " + " | ".join(cells) + f" | {s.latency.get('repeats', '')} | {speed} |")
    lines += ["", f"vs PyTorch: at {threads[0]} thread(s). Deployed backends (onnxruntime, TVM, OpenVINO) are timed in a "
              "fresh process per backend and thread count (TVM's thread pool is sized at first use); PyTorch in the "
              "pipeline's process. Emulated (qemu) times measure the emulator, not an ARM core."]
    return lines


def _memory_md(result: DeployResult) -> List[str]:
    rows = [s for s in result.stages if s.memory]
    if not rows:
        return []
    threads = result.config.threads
    lines = ["", "## Peak memory per backend", "",
             "| backend | " + " | ".join(f"{n} thread{'s' if n > 1 else ''}: peak RSS (MiB) | increase (MiB)"
                                         for n in threads) + " |",
             "|---|" + "---:|---:|" * len(threads)]
    for s in rows:
        cells = []
        for n in threads:
            m = s.memory.get(n)
            cells += [f"{m['peak_rss_mb']:.1f}", f"{m['increase_mb']:.1f}"] if m else ["", ""]
        lines.append(f"| {BACKEND_LABELS.get(s.name, s.name)} | " + " | ".join(cells) + " |")
    lines += ["", MEMORY_METHOD[0].upper() + MEMORY_METHOD[1:] + ": the increase is what loading and running the model "
              "costs in that runtime (weights, arena, compiled code, workspace)."]
    return lines


def _kernels_md(result: DeployResult, top: int = 8) -> List[str]:
    rows = [s for s in result.stages if s.kernels]
    if not rows:
        return []
    lines = ["", "## Per-kernel time in the deployed runtimes", "",
             f"Top {top} kernels per backend, from the runtime's own profiler at {result.config.threads[0]} thread(s): "
             "TVM: `VirtualMachine.set_instrument` around every VM call; onnxruntime: its profiler's JSON trace "
             "(`SessionOptions.enable_profiling`), per node. ms per run (median over the profiled runs).", ""]
    for s in rows:
        k = s.kernels
        total = max(k["sum_of_calls_ms"], 1e-12)
        lines += [f"**{BACKEND_LABELS.get(s.name, s.name)}** (`{s.name}`): sum of kernels {k['sum_of_calls_ms']:.3f} ms"
                  + (f", median run {s.latency['median_ms']:.3f} ms" if s.latency else ""), "",
                  "| kernel | op / kind | calls | ms | share |", "|---|---|---:|---:|---:|"]
        for r in k["kernels"][:top]:
            lines.append(f"| `{_md_escape(r['name'][:80])}` | {_md_escape(r['kind'][:40])} | {r['calls']} | {r['ms']:.3f} | "
                         f"{100 * r['ms'] / total:.1f}% |")
        lines.append("")
    return lines


def _markdown(result: DeployResult, data: Dict[str, Any], plot_note: str) -> str:
    cfg = result.config
    shape = "x".join(map(str, cfg.input_shape))
    lines = [f"# edgeconv deploy: `{cfg.model_name}` on {shape}", ""]
    for rec in data["recommendation"]:
        lines.append(f"**Recommendation** ({rec['text'].split(': ', 1)[0]}): {rec['text'].split(': ', 1)[1]}")
        lines.append("")
    if data["recommendation"]:
        lines += [f"(fastest backend that passed parity; emulated runs are not candidates; {NOISE_METHOD}. The "
                  "backends are timed one after another: on a shared machine a load change between their timings is "
                  "not in this band -- compare with the per-kernel sums below, and rerun on a quiet machine to decide "
                  "a close call)", ""]
    prof = result.profile
    v = data["versions"]
    ref = "ref" if cfg.onnx_model is not None else "torch"
    lines += [
        f"- created {data['created']}; host {v.get('machine')}, {os.cpu_count()} cores; "
        f"threads {','.join(map(str, cfg.threads))}; {cfg.repeats} timed runs per backend and thread count (median)",
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

    for name, why in result.omitted.items():
        lines.append(f"| {name} | not run | | | | | {_md_escape(why)} |")

    lines += _sizes_md(data["sizes"])
    lines += _latency_md(result)
    lines += _memory_md(result)
    lines += _kernels_md(result)

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
