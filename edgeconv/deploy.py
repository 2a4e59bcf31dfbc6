"""``edgeconv deploy``: one model from PyTorch to every backend, verified and timed, with a report.

Pipeline (each stage is recorded with status, wall time, parity and latency; a failing stage
records its error and the pipeline goes on with whatever does not depend on it):

============== ================================================================================
stage           what it does
============== ================================================================================
torch           reference outputs on a seeded random input; eager latency; per-kind latency
profile         :func:`edgeconv.analysis.profile`: params/MACs per layer and per kind
export          :func:`edgeconv.export_onnx` -> ``model.onnx``
onnx-check      ``onnx.checker.check_model(full_check=True)`` + strict shape inference
ort             onnxruntime with the edgeconv kernel library (target ``ort``)
ort-nolib       onnxruntime without it: custom ops run their model-local fallback functions
tvm-x86         :func:`edgeconv.compile_tvm` for the host, run, parity, latency (``tvm-x86``)
tvm-arm64       cross-compile for aarch64 -> ``model_arm64.so`` (target ``tvm-arm64``)
tvm-arm64-run   run that library under qemu via the ARM helper (:mod:`edgeconv.arm`), parity
ort-arm64-run   (opt-in target ``ort-arm64``) aarch64 onnxruntime + the aarch64 kernel build under
                qemu via ``edgeconv.arm.verify_arm``, parity
tvm-rpc         (``--rpc``) upload/load/run the library on an RPC server, parity, latency
============== ================================================================================

Parity: ``max|y - y_torch| / max|y_torch| <= tol`` (default ``1e-4``) over all outputs.
Latency: median (and p10/p90) of ``repeats`` timed runs after warm-up, at ``threads`` threads.

Exit-code rule (:func:`exit_code`): **0** iff every stage passed or was *legitimately skipped*,
else **1**. Legitimate skips:

* a target's optional dependency is missing (TVM not installed -> ``tvm-*``; the kernel library
  not built -> ``ort``) **and** the target was not named with ``--targets`` (i.e. it came from the
  default list). A target named explicitly must run: the same condition is then a failure;
* ``tvm-arm64-run`` when the ARM helper (``edgeconv.arm``) cannot be imported or reports that its
  runner cannot run here (no qemu-user/cross toolchain): the cross-compilation itself still
  has to pass.

A stage skipped because a stage it needs was skipped legitimately is a legitimate skip too; one
skipped because a stage it needs failed ("upstream failed") is not, but its upstream failure
already makes the exit code 1. Usage errors (unknown model, malformed shape,
bad target) never get here: the CLI exits 2 before the pipeline starts.

Outputs in ``outdir``: ``report.md``, ``report.json``, ``latency.png`` (matplotlib Agg),
``model.onnx``, compiled libraries, ``input.npy`` and ``torch_output.npy``.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import platform
import statistics
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "DeployConfig",
    "StageResult",
    "DeployResult",
    "run_deploy",
    "exit_code",
    "time_callable",
    "make_ort_session",
    "export_model",
    "parity",
    "kind_summary",
    "kind_latency_torch",
    "run_rpc",
    "STAGES",
]

#: all stage names, in pipeline order
STAGES = ("torch", "profile", "export", "onnx-check", "ort", "ort-nolib", "tvm-x86", "tvm-arm64",
          "tvm-arm64-run", "ort-arm64-run", "tvm-rpc")
#: deploy target -> its stages
TARGET_STAGES = {"ort": ("ort", "ort-nolib"), "tvm-x86": ("tvm-x86",), "tvm-arm64": ("tvm-arm64", "tvm-arm64-run"),
                 "ort-arm64": ("ort-arm64-run",)}
#: targets run when none are named (``ort-arm64`` is opt-in: its first use cross-builds the kernels)
DEFAULT_TARGETS = ("ort", "tvm-x86", "tvm-arm64")
ALL_TARGETS = ("ort", "tvm-x86", "tvm-arm64", "ort-arm64")

# backend label used in the latency table/plot, per runnable stage
BACKEND_LABELS = {
    "torch": "PyTorch eager",
    "ort": "onnxruntime + edgeconv kernels",
    "ort-nolib": "onnxruntime (fallback functions)",
    "tvm-x86": "TVM x86 (host)",
    "tvm-arm64-run": "TVM arm64 (qemu, emulated)",
    "ort-arm64-run": "onnxruntime arm64 + kernels (qemu, emulated)",
    "tvm-rpc": "TVM via RPC",
}


# ------------------------------------------------------------------------------------------
# small utilities (also used by the CLI and edgeconv.bench.model)
# ------------------------------------------------------------------------------------------


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
    """Compare outputs with the PyTorch reference: ``rel = max|diff| / max|ref|`` over all outputs."""
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


def _to_numpy_list(out: Any) -> List[np.ndarray]:
    import torch

    if isinstance(out, torch.Tensor):
        return [out.detach().cpu().numpy()]
    if isinstance(out, (list, tuple)):
        res: List[np.ndarray] = []
        for o in out:
            res.extend(_to_numpy_list(o))
        return res
    if isinstance(out, dict):
        res = []
        for o in out.values():
            res.extend(_to_numpy_list(o))
        return res
    return [np.asarray(out)]


def make_ort_session(path: os.PathLike | str, use_library: bool = True, threads: Optional[int] = None):
    """onnxruntime session for ``path`` via :func:`edgeconv.ort_session`, with (``use_library``:
    required, ``FileNotFoundError`` if it is not built) or without the edgeconv kernel library
    (custom ops then run their model-local fallback functions)."""
    from edgeconv.exporters.onnx import ort_session

    return ort_session(str(path), threads=threads, custom_ops="require" if use_library else False)


def export_model(model, input_shape: Sequence[int], path, *, opset: Optional[int] = None,
                 deform: Optional[str] = None, fallback: Optional[str] = None, example=None, **options: Any):
    """:func:`edgeconv.export_onnx` on a seeded random input of ``input_shape`` (dynamic batch);
    ``fallback`` is the exporter's ``deform_fallback``; ``options`` go to ``export_onnx`` as they
    are (``input_names``, ...). Returns the ``ModelProto``."""
    import torch

    from edgeconv.exporters.onnx import export_onnx

    if example is None:
        gen = torch.Generator().manual_seed(0)
        example = torch.randn(tuple(input_shape), generator=gen)
    kwargs: Dict[str, Any] = {}
    if opset is not None:
        kwargs["opset"] = opset
    if deform is not None:
        kwargs["deform"] = deform
    if fallback is not None:
        kwargs["deform_fallback"] = fallback
    kwargs.update(options)
    return export_onnx(model, (example,), str(path), **kwargs)


def kind_summary(prof) -> Dict[str, Dict[str, Any]]:
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


# ------------------------------------------------------------------------------------------
# RPC
# ------------------------------------------------------------------------------------------


def rpc_connect(rpc: Dict[str, Any], timeout: int = 60):
    """``tvm.rpc`` session for ``{"host", "port", "key"}`` (key -> via a tracker)."""
    from tvm import rpc as tvm_rpc

    if rpc.get("key"):
        tracker = tvm_rpc.connect_tracker(rpc["host"], int(rpc["port"]))
        return tracker.request(rpc["key"], priority=1, session_timeout=timeout)
    return tvm_rpc.connect(rpc["host"], int(rpc["port"]), session_timeout=timeout)


def run_rpc(lib_path, rpc: Dict[str, Any], inputs: Sequence[np.ndarray], repeats: int = 10,
            number: int = 1) -> Dict[str, Any]:
    """Upload ``lib_path`` to the RPC device, load it in a Relax VM, run and time ``main``.

    Returns ``{"outputs": [np.ndarray], "latency": summarize_ms(...)}``; the latency comes from
    the remote ``time_evaluator`` (device-side timing, no network in the measurement).
    """
    import tvm
    from tvm import relax

    remote = rpc_connect(rpc)
    name = Path(lib_path).name
    remote.upload(str(lib_path))
    rlib = remote.load_module(name)
    dev = remote.cpu()
    vm = relax.VirtualMachine(rlib, dev)
    args = [tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in inputs]
    out = vm["main"](*args)
    outputs = _tvm_outputs(out)
    vm.set_input("main", *args)
    timer = vm.time_evaluator("invoke_stateful", dev, number=number, repeat=max(1, repeats))
    res = timer("main")
    return {"outputs": outputs, "latency": summarize_ms([t * 1e3 for t in res.results])}


def _tvm_outputs(out: Any) -> List[np.ndarray]:
    if hasattr(out, "numpy"):
        return [out.numpy()]
    if isinstance(out, (list, tuple)) or type(out).__name__ in ("Array", "Tuple"):
        res: List[np.ndarray] = []
        for o in out:
            res.extend(_tvm_outputs(o))
        return res
    return [np.asarray(out)]


# ------------------------------------------------------------------------------------------
# pipeline
# ------------------------------------------------------------------------------------------


@dataclass
class DeployConfig:
    """Inputs of :func:`run_deploy` (the CLI fills it from its arguments)."""

    model: Any
    model_name: str
    input_shape: Tuple[int, ...]
    outdir: Path
    targets: Optional[List[str]] = None  # None = DEFAULT_TARGETS, not named explicitly
    repeats: int = 20
    warmup: int = 3
    threads: int = 1
    tol: float = 1e-4
    rpc: Optional[Dict[str, Any]] = None
    rpc_target: str = "arm64"
    opset: Optional[int] = None
    quiet: bool = False
    tune_trials: int = 0
    seed: int = 0


@dataclass
class StageResult:
    """One pipeline stage: ``status`` is ``passed``, ``failed`` or ``skipped``."""

    name: str
    status: str = "pending"
    reason: str = ""
    legit: bool = False  # for skipped stages: does the skip keep the exit code 0?
    seconds: Optional[float] = None
    parity: Optional[Dict[str, Any]] = None
    latency: Optional[Dict[str, Any]] = None
    artifacts: List[str] = field(default_factory=list)
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "passed" or (self.status == "skipped" and self.legit)


@dataclass
class DeployResult:
    config: DeployConfig
    stages: List[StageResult]
    profile: Any = None
    kinds: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    kind_latency_ms: Dict[str, float] = field(default_factory=dict)
    report_files: List[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return exit_code(self.stages)

    def stage(self, name: str) -> Optional[StageResult]:
        return next((s for s in self.stages if s.name == name), None)

    def summary_text(self) -> str:
        lines = [f"{self.config.model_name} {'x'.join(map(str, self.config.input_shape))}:"]
        for s in self.stages:
            extra = []
            if s.parity and "rel" in s.parity:
                extra.append(f"rel err {s.parity['rel']:.2e}")
            if s.latency:
                extra.append(f"{s.latency['median_ms']:.3f} ms")
            if s.reason:
                extra.append(s.reason if len(s.reason) < 120 else s.reason[:117] + "...")
            lines.append(f"  {s.name:<14} {s.status:<8} {'; '.join(extra)}")
        lines.append(f"exit code {self.exit_code} ({'all requested stages passed or legitimately skipped' if self.exit_code == 0 else 'a stage failed'})")
        return "\n".join(lines)


def exit_code(stages: Sequence[StageResult]) -> int:
    """0 iff every stage passed or was legitimately skipped (see the module docstring), else 1."""
    return 0 if all(s.ok for s in stages) else 1


class _Skip(Exception):
    def __init__(self, reason: str, legit: bool) -> None:
        super().__init__(reason)
        self.reason, self.legit = reason, legit


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else ""
    if len(msg) > 300:
        msg = msg[:297] + "..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


class _CaptureFd2:
    """Redirect file descriptor 2 (C/C++ stderr, e.g. TVM's LOG(WARNING)) to a temporary file;
    ``text`` holds what was written. Used with ``quiet`` so that ``-q`` really is quiet."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.text = enabled, ""

    def __enter__(self):
        if self.enabled:
            import sys
            import tempfile

            sys.stderr.flush()
            self._tmp = tempfile.TemporaryFile(mode="w+b")
            self._saved = os.dup(2)
            os.dup2(self._tmp.fileno(), 2)
        return self

    def __exit__(self, *exc):
        if self.enabled:
            import sys

            sys.stderr.flush()
            os.dup2(self._saved, 2)
            os.close(self._saved)
            self._tmp.seek(0)
            self.text = self._tmp.read().decode(errors="replace")
            self._tmp.close()
        return False


def _tvm_available() -> Tuple[bool, str]:
    try:
        importlib.import_module("tvm")
        importlib.import_module("edgeconv.exporters.tvm")
        return True, ""
    except Exception as exc:  # ImportError, or a broken install raising something else
        return False, f"TVM not available ({_one_line(exc)})"


def _library_available() -> Tuple[bool, str]:
    try:
        from edgeconv._library import get_library_path

        get_library_path()
        return True, ""
    except Exception as exc:
        return False, f"edgeconv kernel library not built ({_one_line(exc)})"


class _Progress:
    """rich progress bar on stderr (one step per stage), or nothing with ``quiet``."""

    def __init__(self, total: int, quiet: bool) -> None:
        self._progress = None
        if not quiet:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(), TextColumn("[bold]deploy[/bold] {task.description}"), BarColumn(),
                TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                console=Console(stderr=True), transient=False,
            )
            self._task = self._progress.add_task("", total=total)

    def __enter__(self):
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()
        return False

    def start(self, name: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=name)

    def done(self, stage: StageResult) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)
            self._progress.console.print(f"  {stage.name}: {stage.status}" + (f" ({stage.reason})" if stage.reason else ""))


def run_deploy(cfg: DeployConfig) -> DeployResult:
    """Run the pipeline for ``cfg`` and write the report; never raises for a stage failure."""
    import torch

    outdir = Path(cfg.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    explicit = cfg.targets is not None
    targets = list(cfg.targets) if explicit else list(DEFAULT_TARGETS)
    names = ["torch", "profile", "export", "onnx-check"]
    for t in ALL_TARGETS:
        if t in targets:
            names += TARGET_STAGES[t]
    if cfg.rpc:
        names.append("tvm-rpc")
    stages = {n: StageResult(n) for n in names}
    result = DeployResult(cfg, [stages[n] for n in names])
    state: Dict[str, Any] = {}
    model = cfg.model.eval()

    prev_threads = torch.get_num_threads()

    def needs(*deps: str) -> None:
        for d in deps:
            st = stages.get(d)
            if st is not None and st.status != "passed":
                # legitimate when the upstream skip is (TVM not installed skips tvm-arm64-run too)
                upstream = " (upstream failed)" if st.status == "failed" else ""
                raise _Skip(f"needs stage {d!r}, which {st.status}{upstream}", st.status == "skipped" and st.legit)

    def run(name: str, fn: Callable[[StageResult], None], progress: _Progress) -> None:
        st = stages[name]
        progress.start(name)
        t0 = time.perf_counter()
        try:
            fn(st)
            if st.parity is not None and not st.parity.get("ok", False):
                st.status = "failed"
                st.reason = st.parity.get("error") or (
                    f"parity: rel err {st.parity.get('rel', float('nan')):.3e} > tol {cfg.tol:g}")
            else:
                st.status = "passed"
        except _Skip as sk:
            st.status, st.reason, st.legit = "skipped", sk.reason, sk.legit
        except Exception as exc:  # a stage failure is data, not a crash
            st.status, st.reason = "failed", _one_line(exc)
            st.info["traceback"] = traceback.format_exc(limit=8)
        st.seconds = time.perf_counter() - t0
        progress.done(st)

    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(tuple(cfg.input_shape), generator=gen)
    x_np = x.numpy().copy()
    np.save(outdir / "input.npy", x_np)

    def st_torch(st: StageResult) -> None:
        torch.set_num_threads(cfg.threads)
        with torch.no_grad():
            ref = _to_numpy_list(model(x))
        state["ref"] = ref
        np.save(outdir / "torch_output.npy", ref[0])
        st.artifacts += ["input.npy", "torch_output.npy"]
        with torch.no_grad():
            st.latency = time_callable(lambda: model(x), cfg.repeats, cfg.warmup)
        st.info["output_shapes"] = [list(r.shape) for r in ref]

    def st_profile(st: StageResult) -> None:
        from edgeconv.analysis import profile

        prof = profile(model, cfg.input_shape)
        result.profile = prof
        result.kinds = kind_summary(prof)
        st.info.update(total_params=prof.total_params, total_macs=prof.total_macs, layers=len(prof.rows))
        torch.set_num_threads(cfg.threads)
        result.kind_latency_ms = kind_latency_torch(model, x, prof, repeats=max(3, cfg.repeats // 2))

    def st_export(st: StageResult) -> None:
        path = outdir / "model.onnx"
        export_model(model, cfg.input_shape, path, opset=cfg.opset, example=x)
        state["onnx"] = path
        st.artifacts.append(path.name)
        import onnx

        m = onnx.load(str(path), load_external_data=False)
        st.info["opset"] = {o.domain or "ai.onnx": o.version for o in m.opset_import}
        st.info["nodes"] = len(m.graph.node)
        st.info["ops"] = sorted({(n.domain + "::" if n.domain else "") + n.op_type for n in m.graph.node})
        state["input_names"] = [i.name for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}]

    def st_check(st: StageResult) -> None:
        needs("export")
        import onnx

        importlib.import_module("edgeconv.exporters.onnx")  # registers the edgeconv op schemas
        path = state["onnx"]
        onnx.checker.check_model(str(path), full_check=True)
        inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path)), check_type=True, strict_mode=True)
        outs = inferred.graph.output
        st.info["output_shapes"] = [
            [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in o.type.tensor_type.shape.dim]
            for o in outs
        ]

    def ort_stage(use_library: bool) -> Callable[[StageResult], None]:
        def fn(st: StageResult) -> None:
            needs("torch", "export")
            if use_library:
                ok, why = _library_available()
                if not ok:
                    raise _Skip(why, legit=not explicit) if not explicit else RuntimeError(why)
            sess = make_ort_session(state["onnx"], use_library=use_library, threads=cfg.threads)
            feeds = {sess.get_inputs()[0].name: x_np}
            outs = sess.run(None, feeds)
            st.parity = parity(state["ref"], outs, cfg.tol)
            st.latency = time_callable(lambda: sess.run(None, feeds), cfg.repeats, cfg.warmup)
            st.info["threads"] = cfg.threads
        return fn

    def _tvm_or_skip() -> None:
        ok, why = _tvm_available()
        if not ok:
            if explicit:
                raise RuntimeError(why)
            raise _Skip(why, legit=True)

    def tvm_compile(st: StageResult, target: str, lib: Path, tune_trials: int = 0):
        """compile_tvm on model.onnx (its edgeconv ops are compiled from their standard-op form)."""
        from edgeconv.exporters.tvm import compile_tvm

        with _CaptureFd2(cfg.quiet) as cap:
            cm = compile_tvm(str(state["onnx"]), target=target, output=str(lib), tune_trials=tune_trials,
                             input_shapes=_shape_dict(state, cfg), work_dir=str(outdir / "tvm-tuning"))
        _note_log(st, cap.text)
        return cm

    def st_tvm_x86(st: StageResult) -> None:
        needs("torch", "export")
        _tvm_or_skip()
        from edgeconv.exporters.tvm import set_num_threads

        set_num_threads(cfg.threads)
        lib = outdir / "model_x86.so"
        t0 = time.perf_counter()
        cm = tvm_compile(st, "x86", lib, cfg.tune_trials)
        st.info["compile_s"] = time.perf_counter() - t0
        st.artifacts.append(lib.name)
        state["tvm-x86-lib"] = lib
        outs = cm(x_np)
        st.parity = parity(state["ref"], outs, cfg.tol)
        times = cm.benchmark(x_np, number=1, repeat=cfg.repeats)
        st.latency = summarize_ms([t * 1e3 for t in times])
        st.info["threads"] = cfg.threads

    def st_tvm_arm(st: StageResult) -> None:
        needs("export")
        _tvm_or_skip()
        lib = outdir / "model_arm64.so"
        t0 = time.perf_counter()
        tvm_compile(st, "arm64", lib)
        st.info["compile_s"] = time.perf_counter() - t0
        st.artifacts.append(lib.name)
        state["tvm-arm64-lib"] = lib

    def emulated_run(st: StageResult, artifact: Path, backend: str, workdir: Path) -> None:
        """Run ``artifact`` on ``backend`` ("tvm" or "ort") under qemu and check its parity."""
        try:
            arm = importlib.import_module("edgeconv.arm")
        except Exception as exc:
            raise _Skip(f"ARM helper unavailable (edgeconv.arm: {_one_line(exc)})", legit=True)
        res = _call_arm(arm, artifact, backend, x_np, state["ref"], cfg, workdir)
        if res.get("skipped"):
            raise _Skip(str(res["skipped"]), legit=True)
        st.parity = parity(state["ref"], res["outputs"], cfg.tol)
        if res.get("latency"):
            st.latency = res["latency"]
        st.info.update({k: v for k, v in res.items() if k not in ("outputs", "latency")})

    def st_arm_run(st: StageResult) -> None:
        needs("torch", "tvm-arm64")
        emulated_run(st, state["tvm-arm64-lib"], "tvm", outdir / "arm")

    def st_ort_arm_run(st: StageResult) -> None:
        needs("torch", "export")
        emulated_run(st, state["onnx"], "ort", outdir / "arm-ort")

    def st_rpc(st: StageResult) -> None:
        needs("torch", "export")
        ok, why = _tvm_available()
        if not ok:
            raise RuntimeError(why)  # --rpc is always explicit
        target = cfg.rpc_target
        key = "tvm-arm64-lib" if target == "arm64" else ("tvm-x86-lib" if target == "x86" else None)
        lib = state.get(key) if key else None
        if lib is None:
            lib = outdir / f"model_rpc_{target}.so"
            tvm_compile(st, target, lib)
            st.artifacts.append(lib.name)
        res = run_rpc(lib, cfg.rpc, [x_np], repeats=cfg.repeats)
        st.parity = parity(state["ref"], res["outputs"], cfg.tol)
        st.latency = res["latency"]
        st.info.update(target=target, remote=f"{cfg.rpc['host']}:{cfg.rpc['port']}" + (f"/{cfg.rpc['key']}" if cfg.rpc.get("key") else ""))

    fns = {
        "torch": st_torch, "profile": st_profile, "export": st_export, "onnx-check": st_check,
        "ort": ort_stage(True), "ort-nolib": ort_stage(False), "tvm-x86": st_tvm_x86,
        "tvm-arm64": st_tvm_arm, "tvm-arm64-run": st_arm_run, "ort-arm64-run": st_ort_arm_run, "tvm-rpc": st_rpc,
    }
    try:
        with _Progress(len(names), cfg.quiet) as progress:
            for n in names:
                run(n, fns[n], progress)
    finally:
        torch.set_num_threads(prev_threads)
    _write_report(result)
    return result


def _note_log(st: StageResult, text: str) -> None:
    """Keep captured compiler stderr (``-q``) in the stage info (report.json), deduplicated."""
    lines = [l for l in text.splitlines() if l.strip()]
    if lines:
        uniq = list(dict.fromkeys(l.split("] ", 1)[-1] for l in lines))
        st.info.setdefault("compiler_log", []).extend(uniq[:20])


def _shape_dict(state: Dict[str, Any], cfg: DeployConfig) -> Optional[Dict[str, List[int]]]:
    names = state.get("input_names") or []
    return {names[0]: list(cfg.input_shape)} if names else None


def _call_arm(arm, artifact: Path, backend: str, x_np: np.ndarray, ref: List[np.ndarray], cfg: DeployConfig,
              workdir: Path) -> Dict[str, Any]:
    """Run ``backend`` under qemu with the ARM helper's ``edgeconv.arm.verify_arm``: ``"tvm"``
    (``artifact`` = the arm64 TVM library) or ``"ort"`` (``artifact`` = the ONNX model; aarch64
    onnxruntime with the aarch64 build of the edgeconv kernels).

    Returns ``{"outputs": [...], "latency": {...} | None}`` or ``{"skipped": reason}`` when the
    helper reports that its tools (cross toolchain, qemu-user) are missing or nothing could run.
    """
    tools = getattr(arm, "tools_available", None) or getattr(arm, "arm_available", None)
    if callable(tools):
        ok, why = tools()
        if not ok:
            return {"skipped": f"aarch64 tools missing: {why}"}
    try:
        res = arm.verify_arm(str(artifact), inputs=[x_np], tvm=backend == "tvm", ort=backend == "ort", workdir=str(workdir),
                             rtol=cfg.tol, threads=cfg.threads, repeat=max(1, min(cfg.repeats, 5)),
                             reference=ref)
    except getattr(arm, "ArmToolError", ()) as exc:  # a host tool is missing
        return {"skipped": f"aarch64 tools missing: {exc}"}
    if res.skipped:
        return {"skipped": res.skipped}
    b = res.backends.get(backend)
    if b is not None and not b.ok:
        raise RuntimeError(f"aarch64 {backend} run {b.status}: {b.message}".strip())
    outputs = res.outputs
    if not outputs:
        raise RuntimeError("the aarch64 run produced no outputs")
    info: Dict[str, Any] = {"outputs": outputs, "latency": res.latency, "emulated": True}
    if b is not None:
        info["emulation_wall_s"] = b.wall_s
        info["arm_rel_err_vs_reference"] = b.max_rel_err
    return info


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------


def _versions() -> Dict[str, str]:
    out = {"python": platform.python_version(), "machine": platform.machine()}
    for mod in ("torch", "onnx", "onnxruntime", "onnxscript", "tvm"):
        try:
            out[mod] = getattr(importlib.import_module(mod), "__version__", "?")
        except Exception:
            out[mod] = "not installed"
    try:
        from edgeconv import __version__

        out["edgeconv"] = __version__
    except Exception:  # pragma: no cover
        pass
    return out


def _fmt_count(n: float) -> str:
    n = float(n)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{int(n)}"


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


def _write_report(result: DeployResult) -> None:
    cfg = result.config
    outdir = Path(cfg.outdir)
    data = report_dict(result)
    (outdir / "report.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    plot_note = _write_plot(result, outdir / "latency.png")
    (outdir / "report.md").write_text(_markdown(result, data, plot_note))
    result.report_files = ["report.md", "report.json"] + (["latency.png"] if (outdir / "latency.png").exists() else [])


def _markdown(result: DeployResult, data: Dict[str, Any], plot_note: str) -> str:
    cfg = result.config
    shape = "x".join(map(str, cfg.input_shape))
    lines = [f"# edgeconv deploy: `{cfg.model_name}` on {shape}", ""]
    prof = result.profile
    v = data["versions"]
    lines += [
        f"- created {data['created']}; host {v.get('machine')}, {os.cpu_count()} cores; "
        f"threads {cfg.threads}; {cfg.repeats} timed runs per backend (median)",
        f"- torch {v.get('torch')}, onnx {v.get('onnx')}, onnxruntime {v.get('onnxruntime')}, tvm {v.get('tvm')}",
        f"- targets: {', '.join(data['targets'])} ({'named explicitly' if data['targets_explicit'] else 'default'});"
        f" parity tolerance: max|y - y_torch| / max|y_torch| <= {cfg.tol:g}",
    ]
    if prof is not None:
        lines.append(f"- {prof.total_params:,} parameters, {prof.total_macs:,} MACs ({_fmt_count(prof.total_macs)})")
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
            if s.name == "export" and s.info.get("ops"):
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


def _write_plot(result: DeployResult, path: Path) -> str:
    """latency.png: (left) median latency per backend with p10-p90 bars; (right) PyTorch time
    per layer kind (hooks) with the MAC share annotated. Returns "ok <caption>" or the reason."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:
        return f"matplotlib unavailable ({_one_line(exc)})"
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
                     f"latency per backend ({result.config.threads} thread(s))", fontsize=10)
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
        return f"plot failed ({_one_line(exc)})"
    return ("ok Left: median latency of every backend that ran (bars: p10-p90; log scale when an emulated "
            "run is included). Right: time per layer kind in PyTorch eager, measured with forward hooks "
            "around each layer (median over runs), annotated with each kind's share of the MACs.")
