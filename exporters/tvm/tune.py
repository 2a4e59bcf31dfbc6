"""Optional MetaSchedule tuning on top of edgeconv's schedules (``compile_tvm(..., tune_trials=N)``).

Our kernels carry ``tirx.is_scheduled`` from where they are created (:func:`.conv.scheduled`); MetaSchedule tunes the
PrimFuncs the stock legalization produced for everything else (elementwise, pooling, matmul,
layout ops), the database goes to ``work_dir`` (a JSON database reused across runs: tasks already
tuned there are applied without re-tuning).
"""

from __future__ import annotations

import os

import tvm
from tvm import relax

from .conv import DEFAULT_OVERRIDES, PlanOverrides
from .passes import edgeconv_stage1, edgeconv_stage2

__all__ = ["tune_and_build"]


_LAYOUT_OPS = ("reshape", "transpose", "squeeze", "expand_dims", "concatenate", "split", "strided_slice", "fused")


def _pure_layout(name: str) -> bool:
    """Data-movement-only kernels (no FLOPs): not worth MetaSchedule trials."""
    parts = [p.rstrip("0123456789") for p in name.split("_")]
    return all(p in _LAYOUT_OPS or p in ("dims", "slice", "expand", "strided") for p in parts if p)


def tune_and_build(mod: tvm.ir.IRModule, target: tvm.target.Target, family: str, trials: int, work_dir: str,
                   layout: str = "blocked", overrides: PlanOverrides = DEFAULT_OVERRIDES):
    from tvm.s_tir import meta_schedule as ms

    target_d = dict(target.export())
    if "num-cores" not in target_d:
        target_d["num-cores"] = os.cpu_count() or 1
        target = tvm.target.Target(target_d)
    with target:
        mod = edgeconv_stage1(family, layout=layout, overrides=overrides)(mod)
    tir_funcs = {gv: f for gv, f in mod.functions_items()
                 if isinstance(f, tvm.tirx.PrimFunc) and not f.attrs.get("tirx.is_scheduled", False)
                 and not _pure_layout(gv.name_hint)}
    os.makedirs(work_dir, exist_ok=True)
    ms.database.JSONDatabase(work_dir=work_dir)  # create / reuse the database files
    if tir_funcs:
        tune_mod = tvm.IRModule(tir_funcs)
        ms.tir_integration.tune_tir(
            tune_mod,
            target=target,
            work_dir=work_dir,
            max_trials_global=trials,
            max_trials_per_task=max(8, trials // max(1, len(tir_funcs))),
            num_trials_per_iter=min(64, max(8, trials // max(1, len(tir_funcs)))),
        )
        with target, ms.database.JSONDatabase(work_dir=work_dir):
            mod = relax.transform.MetaScheduleApplyDatabase(work_dir)(mod)
    with target:
        mod = edgeconv_stage2()(mod)
    return tvm.compile(mod, target=target, relax_pipeline=None)
