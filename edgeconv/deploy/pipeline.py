"""Run a selection of :data:`~edgeconv.deploy.stages.TABLE`: skip/fail rules and the exit code.

A stage whose ``needs`` did not pass is skipped: legitimately when the need was skipped
legitimately, else not ("upstream failed" when one failed: the upstream failure already makes
the exit code 1). A stage whose probe reports
a missing optional dependency is, by its ``missing`` rule: skipped legitimately unless its target
was named explicitly (then failed), always skipped legitimately, or failed. An exception is a
failure recorded with its traceback; a parity above the tolerance fails the stage. A selected
stage whose ``applies(ctx)`` gives a reason (it would repeat another stage) is not run: it has no
result, and the reason is kept in ``Context.omitted`` (the report says why the row is missing).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .measure import one_line
from .stages import (
    FAIL, RPC, SKIP, TABLE, Context, DEFAULT_TARGETS, DeployConfig, Stage, StageResult, StageSkipped,
)

__all__ = ["DeployResult", "exit_code", "select", "onnx_inputs", "make_context", "run_stages", "run_deploy"]


def exit_code(stages: Sequence[StageResult]) -> int:
    """0 iff every stage passed or was legitimately skipped, else 1."""
    return 0 if all(s.ok for s in stages) else 1


@dataclass
class DeployResult:
    config: DeployConfig
    stages: List[StageResult]
    profile: Any = None
    kinds: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    kind_latency_ms: Dict[str, float] = field(default_factory=dict)
    omitted: Dict[str, str] = field(default_factory=dict)  # selected stages not run, and why
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


def select(stages: Sequence[Stage], targets: Sequence[str], rpc: bool, source: str = "torch") -> List[Stage]:
    """The stages that always run, those of ``targets`` and (``rpc``) the RPC stage, in table
    order, for a model of ``source`` (``"torch"`` or ``"onnx"``)."""
    return [s for s in stages if (s.target is None or s.target in targets or (rpc and s.target == RPC))
            and s.source in (None, source)]


def onnx_inputs(path, input_shape: Optional[Sequence[int]] = None, seed: int = 0) -> Dict[str, np.ndarray]:
    """Seeded standard-normal arrays for every graph input of the ONNX file ``path``: the first of
    ``input_shape`` (when given), the others of their static dims (symbolic dims 1)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds: Dict[str, np.ndarray] = {}
    for i, vi in enumerate(v for v in model.graph.input if v.name not in inits):
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tt.shape.dim]
        if i == 0 and input_shape:
            dims = list(input_shape)
        feeds[vi.name] = rng.standard_normal(dims).astype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
    return feeds


def make_context(cfg: DeployConfig) -> Context:
    """The seeded random input(s) (the first saved as ``input.npy``) and an empty context for
    ``cfg``: a PyTorch model's input of ``input_shape``, or every graph input of an ONNX file."""
    outdir = Path(cfg.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    if cfg.onnx_model is not None:
        feeds = onnx_inputs(cfg.onnx_model, cfg.input_shape, cfg.seed)
        ctx = Context(cfg=cfg, model=None, x=None, outdir=outdir, inputs=list(feeds.values()),
                      input_names=list(feeds))
    else:
        import torch

        x = torch.randn(tuple(cfg.input_shape), generator=torch.Generator().manual_seed(cfg.seed))
        ctx = Context(cfg=cfg, model=cfg.model.eval(), x=x, outdir=outdir, inputs=[x.numpy().copy()])
    np.save(outdir / "input.npy", ctx.inputs[0])
    return ctx


def _blocked(stage: Stage, done: Dict[str, StageResult], explicit: bool) -> Optional[StageSkipped]:
    """Why ``stage`` cannot run (a need that did not pass, a missing dependency), or ``None``."""
    for dep in stage.needs:
        st = done.get(dep)
        if st is not None and st.status != "passed":
            # legitimate when the upstream skip is (TVM not installed skips tvm-arm64-run too)
            return StageSkipped(f"needs stage {dep!r}, which {st.status}"
                                + (" (upstream failed)" if st.status == "failed" else ""),
                                st.status == "skipped" and st.legit)
    why = stage.probe() if stage.probe is not None else None
    if why is None:
        return None
    if stage.missing == FAIL or (stage.missing != SKIP and explicit):
        raise RuntimeError(why)
    return StageSkipped(why, legit=True)


def _run_one(stage: Stage, ctx: Context, done: Dict[str, StageResult], explicit: bool) -> StageResult:
    st = StageResult(stage.name)
    t0 = time.perf_counter()
    try:
        skip = _blocked(stage, done, explicit)
        if skip is not None:
            raise skip
        stage.run(ctx, st)
        if st.parity is not None and not st.parity.get("ok", False):
            st.status = "failed"
            st.reason = st.parity.get("error") or (
                f"parity: rel err {st.parity.get('rel', float('nan')):.3e} > tol {ctx.cfg.tol:g}")
        else:
            st.status = "passed"
    except StageSkipped as sk:
        st.status, st.reason, st.legit = "skipped", sk.reason, sk.legit
    except Exception as exc:  # a stage failure is data, not a crash
        st.status, st.reason = "failed", one_line(exc)
        st.info["traceback"] = traceback.format_exc(limit=8)
    st.seconds = time.perf_counter() - t0
    return st


def run_stages(ctx: Context, stages: Sequence[Stage], *, explicit: bool,
               on_start: Callable[[str], None] = lambda name: None,
               on_done: Callable[[StageResult], None] = lambda st: None) -> List[StageResult]:
    """Run ``stages`` in order on ``ctx``; never raises for a stage failure. The torch thread
    count the stages set is restored afterwards."""
    import torch

    prev_threads = torch.get_num_threads()
    done: Dict[str, StageResult] = {}
    try:
        for stage in stages:
            why_not = stage.applies(ctx) if stage.applies is not None else None
            if why_not:
                ctx.omitted[stage.name] = why_not
                continue
            on_start(stage.name)
            done[stage.name] = _run_one(stage, ctx, done, explicit)
            on_done(done[stage.name])
    finally:
        torch.set_num_threads(prev_threads)
    return list(done.values())


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


def run_deploy(cfg: DeployConfig, stages: Sequence[Stage] = TABLE) -> DeployResult:
    """Run the pipeline for ``cfg`` and write the report; never raises for a stage failure.

    ``stages`` is the table to select from (tests inject probes with
    :func:`~edgeconv.deploy.stages.with_probe`)."""
    from .report import write_report

    explicit = cfg.targets is not None
    chosen = select(stages, list(cfg.targets) if explicit else DEFAULT_TARGETS, bool(cfg.rpc),
                    "onnx" if cfg.onnx_model is not None else "torch")
    ctx = make_context(cfg)
    with _Progress(len(chosen), cfg.quiet) as progress:
        results = run_stages(ctx, chosen, explicit=explicit, on_start=progress.start, on_done=progress.done)
    result = DeployResult(cfg, results, profile=ctx.profile, kinds=ctx.kinds, kind_latency_ms=ctx.kind_latency_ms,
                          omitted=dict(ctx.omitted))
    write_report(result)
    return result
