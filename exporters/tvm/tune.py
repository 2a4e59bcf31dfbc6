"""MetaSchedule tuning on top of edgeconv's schedules (``compile_tvm(..., tune_trials=N)``).

What is tuned: the PrimFuncs that ``edgeconv_stage1`` leaves unscheduled (stock legalization of
everything but our convs: elementwise chains, gathers, pooling, matmul), in their unscheduled form.
Our kernels carry ``tirx.is_scheduled`` from where they are created (:func:`.conv.scheduled`) and
data-movement-only functions are not worth trials; both are left alone.

What is applied: for each task, the best measured record **only if it beats the schedule the
untuned pipeline gives that function** (``ScheduleGenericOps``, else TVM's default loops), timed
by the same builder and runner. A few trials therefore never make a model slower than untuned.

Builder: MetaSchedule's ``LocalBuilder`` with our build function. The stock one imports
``tvm.s_tir.tensor_intrin`` in every fresh worker (measured: 38 s on this 2-core machine under
load, more than the builder's 30 s timeout), so every sample was a "Build error".

Runner: the local CPU, or ``rpc={"host", "port", "key"}``: MetaSchedule's ``RPCRunner`` through
a TVM RPC tracker, one worker per board registered under the key (measurements spread across them).

Everything MetaSchedule writes (JSON database, logs) goes to ``work_dir``; its console logging is
off unless ``EDGECONV_VERBOSE=1``. The database is reused across runs.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import tvm

from .conv import DEFAULT_OVERRIDES, PlanOverrides
from .elementwise import ScheduleGenericOps
from .passes import edgeconv_stage1, edgeconv_stage2, target_info

__all__ = ["tune_and_build", "TuningSummary"]

_LAYOUT_OPS = ("reshape", "transpose", "squeeze", "expand_dims", "concatenate", "split", "strided_slice", "fused")
_MS_LOGGER = "tvm.s_tir.meta_schedule"
# Per build / per measurement (s): a fresh builder worker imports TVM first (~4-8 s under load).
_BUILD_TIMEOUT_S = 120
_RUN_TIMEOUT_S = 120


def _pure_layout(name: str) -> bool:
    """Data-movement-only kernels (no FLOPs): not worth MetaSchedule trials."""
    parts = [p.rstrip("0123456789") for p in name.split("_")]
    return all(p in _LAYOUT_OPS or p in ("dims", "slice", "expand", "strided") for p in parts if p)


@dataclass
class TuningSummary:
    """What a tuning run did (``CompiledModel.tuning``)."""

    work_dir: str
    log_dir: str
    tasks: List[str] = field(default_factory=list)
    trials: int = 0  # candidates sent to the builder
    valid: int = 0  # candidates built and measured without error
    applied: Dict[str, float] = field(default_factory=dict)  # task -> speed-up over untuned
    kept: List[str] = field(default_factory=list)  # tasks whose untuned schedule stayed faster


# --- run in MetaSchedule's builder workers (imported there by reference) ---------------------
def build_candidate(mod: tvm.ir.IRModule, target: tvm.target.Target, _params):
    """MetaSchedule's ``default_build`` without its ``tvm.s_tir.tensor_intrin`` import (the
    candidates arrive tensorized already; registering the intrinsics costs a fresh worker ~38 s)."""
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm.compile(mod, target=target)


def _export(rt_mod, fcompile=None) -> str:
    import tempfile

    path = os.path.join(tempfile.mkdtemp(prefix="edgeconv-ms-"), "candidate.so")
    rt_mod.export_library(path, fcompile=fcompile)
    return path


def export_host(rt_mod) -> str:
    """A shared library for this host (the local runner or an RPC server of the same kind)."""
    return _export(rt_mod)


def export_aarch64(rt_mod) -> str:
    """A shared library for an aarch64 RPC board, linked by the cross toolchain."""
    from tvm.support import cc

    return _export(rt_mod, cc.cross_compiler("aarch64-linux-gnu-g++"))


# ----------------------------------------------------------------------------------------------
def _rpc_runner(ms, rpc: Dict, evaluator):
    if not rpc.get("key"):
        raise ValueError(f"tuning over RPC needs a tracker: rpc HOST:PORT/KEY, got {rpc['host']}:{rpc['port']} "
                         "without a key (a single RPC server cannot be shared by MetaSchedule's workers)")
    from tvm import rpc as tvm_rpc

    queue = tvm_rpc.connect_tracker(rpc["host"], int(rpc["port"])).summary()["queue_info"].get(rpc["key"])
    if not queue or queue["free"] + queue["pending"] < 1:
        raise RuntimeError(f"no RPC server is registered under key {rpc['key']!r} at tracker "
                           f"{rpc['host']}:{rpc['port']}")
    config = ms.runner.RPCConfig(tracker_host=rpc["host"], tracker_port=int(rpc["port"]), tracker_key=rpc["key"],
                                 session_timeout_sec=_RUN_TIMEOUT_S)
    return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator, max_workers=int(queue["free"]) or 1)


def _progress_callback(ms, summary: TuningSummary, on_trial: Optional[Callable[[int, int], None]], total: int):
    from tvm.ir.utils import derived_object

    @derived_object
    class _Count(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
            for built, ran in zip(builder_results, runner_results):
                summary.trials += 1
                if built.error_msg is None and ran.error_msg is None and ran.run_secs:
                    summary.valid += 1
            if on_trial is not None:
                on_trial(min(summary.trials, total), total)

    return _Count()


def _mean_seconds(run_secs) -> float:
    vals = [float(v) for v in run_secs or ()]
    return sum(vals) / len(vals) if vals else math.inf


def _measure(ms, builder, runner, target, funcs: List[tvm.tirx.PrimFunc]) -> List[float]:
    """Mean run time (s) of each function, with the builder and runner the tuning used (inf on error)."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    mods = [tvm.IRModule({"main": f.with_attr("global_symbol", "main")}) for f in funcs]
    built = builder.build([ms.builder.BuilderInput(m, target) for m in mods])
    times = [math.inf] * len(funcs)
    inputs, where = [], []
    for i, (b, f) in enumerate(zip(built, funcs)):
        if b.error_msg is None:
            inputs.append(ms.runner.RunnerInput(b.artifact_path, target.kind.name, ArgInfo.from_prim_func(f)))
            where.append(i)
    for i, future in zip(where, runner.run(inputs) if inputs else []):
        res = future.result()
        if res.error_msg is None:
            times[i] = _mean_seconds(res.run_secs)
    return times


def tune_and_build(mod: tvm.ir.IRModule, target: tvm.target.Target, family: str, trials: int, work_dir: str,
                   layout: str = "blocked", overrides: PlanOverrides = DEFAULT_OVERRIDES, *,
                   rpc: Optional[Dict] = None, on_trial: Optional[Callable[[int, int], None]] = None,
                   is_host: bool = True):
    """Tune, apply what beats the untuned schedules, build. Returns ``(executable, TuningSummary)``."""
    from tvm.s_tir import meta_schedule as ms

    from edgeconv._quiet import verbose

    target_d = dict(target.export())
    if "num-cores" not in target_d:  # MetaSchedule needs it; a board's count when given in the target
        target_d["num-cores"] = os.cpu_count() or 1
        target = tvm.target.Target(target_d)
    if rpc is None and not is_host:
        raise ValueError(f"tuning for {target_d.get('mtriple', target_d['kind'])} needs a board to measure on: "
                         "pass rpc={'host', 'port', 'key'} (an RPC tracker)")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    summary = TuningSummary(work_dir=str(work), log_dir=str(work / "logs"))
    with target:
        mod = edgeconv_stage1(family, layout=layout, overrides=overrides)(mod)
    tasks = {gv.name_hint: f for gv, f in mod.functions_items()
             if isinstance(f, tvm.tirx.PrimFunc) and not f.attrs.get("tirx.is_scheduled", False)
             and not _pure_layout(gv.name_hint)}
    with target:  # the untuned pipeline's schedules (dlight's pass updates the module in place)
        untuned = ScheduleGenericOps(target_info(target, family).lanes)(mod)
    summary.tasks = sorted(tasks)
    if not tasks:
        with target:
            return tvm.compile(edgeconv_stage2()(untuned), target=target, relax_pipeline=None), summary

    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=20)
    builder = ms.builder.LocalBuilder(f_build=build_candidate,
                                      f_export=export_aarch64 if family == "arm" else export_host,
                                      timeout_sec=_BUILD_TIMEOUT_S)
    runner = (_rpc_runner(ms, rpc, evaluator) if rpc is not None else
              ms.runner.LocalRunner(evaluator_config=evaluator, timeout_sec=_RUN_TIMEOUT_S))
    # An even share per task, and no more trials in all than that: a task whose search space is used
    # up otherwise gets picked again and again for the remainder, with no candidate to measure.
    per_task = max(1, trials // len(tasks))
    trials = min(trials, per_task * len(tasks))
    # MetaSchedule's default population (512 candidates sampled and post-processed per round) takes
    # minutes per round on one large fused function (measured: 8.5 min on DCNv2's sampling kernel);
    # a few trials need far fewer candidates to pick from.
    population = min(512, max(32, 16 * per_task))
    strategy = ms.search_strategy.EvolutionarySearch(population_size=population,
                                                     init_min_unmeasured=min(50, population // 2))
    ms_logger = logging.getLogger(_MS_LOGGER)
    if not verbose():  # console handler at WARNING; the task logs in work_dir/logs keep everything
        ms_logger.setLevel(logging.WARNING)
    # tune_tir's logging set-up (logging.dictConfig) lists this logger's handlers by name and fails
    # on an unnamed one (pytest's capture handler, from a second tuning in one process); it
    # replaces the logger's handlers anyway.
    for handler in [h for h in ms_logger.handlers if h.get_name() is None]:
        ms_logger.removeHandler(handler)
    database = ms.tir_integration.tune_tir(
        tvm.IRModule(dict(tasks)), target=target, work_dir=str(work), max_trials_global=trials,
        max_trials_per_task=per_task, num_trials_per_iter=min(64, per_task),
        builder=builder, runner=runner, strategy=strategy,
        measure_callbacks=list(ms.measure_callback.MeasureCallback.create("default"))
        + [_progress_callback(ms, summary, on_trial, trials)],
    )
    names = sorted(tasks)
    best = {}
    for name in names:
        sch = ms.tir_integration.compile_tir(database, tasks[name], target)
        if sch is not None:
            best[name] = sch.mod["main"]
    if best:
        baseline = _measure(ms, builder, runner, target, [untuned[n] for n in best])
        tuned = _measure(ms, builder, runner, target, list(best.values()))
        for (name, func), t_base, t_tuned in zip(best.items(), baseline, tuned):
            if t_tuned < t_base:
                summary.applied[name] = t_base / t_tuned if math.isfinite(t_base) else math.inf
                untuned.update_func(untuned.get_global_var(name),
                                    func.with_attr({"global_symbol": name, "tirx.is_scheduled": True}))
            else:
                summary.kept.append(name)
    with target:
        mod = edgeconv_stage2()(untuned)
    return tvm.compile(mod, target=target, relax_pipeline=None), summary
