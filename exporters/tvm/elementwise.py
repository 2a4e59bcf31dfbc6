"""Schedules for the kernels TVM's legalization leaves unscheduled: elementwise chains and
reductions (activations, squeeze-excite multiplies, residual adds, global average pools).

After ``LegalizeOps`` + ``FuseOps`` + ``FuseTIR`` a fused elementwise chain (hardswish
``x * min(max(x + 3, 0), 6) / 6``, SiLU ``x * sigmoid(x)``, ...) is one PrimFunc whose every op
is a separate loop nest writing a full intermediate buffer, single-threaded: five passes over
memory for a hardswish (0.15 ms for 1x72x56x56 at 1 thread, measured). A global average pool
reduces with the channel-block axis outermost. Both are dlight schedule rules
(:class:`ScheduleRule`, applied with ``dlight.ApplyDefaultSchedule``):

* :class:`Elementwise`: inline every producer into its consumers, fuse the loops of each output
  block, split off one vector of lanes (vectorised) and run the rest in parallel: one pass
  over memory per output.
* :class:`InnerSpatialReduction`: a reduction whose innermost spatial axis is the innermost
  axis of its input (NCHW[b]c pools over H, W) runs the reduction loops outside that axis,
  vectorised over it, parallel over the other spatial axes, epilogue fused.

Our own kernels (``op_pattern`` opaque) are left alone.

:func:`LegalizeVectorMath` legalizes ``sigmoid`` (SiLU/swish, squeeze-excite gates) with TOPI's
``fast_exp`` (a polynomial, relative error ~1e-7 measured against float64) instead of ``exp``,
which LLVM leaves as one scalar ``expf`` call per element: SiLU took 59% of EfficientNet-B0.
"""

from __future__ import annotations

import math

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.dlight import ApplyDefaultSchedule
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import ScheduleRule

from ._relax import OPAQUE

__all__ = ["Elementwise", "InnerSpatialReduction", "ScheduleGenericOps", "LegalizeVectorMath"]

# below this many output elements the parallel launch costs more than it saves
_PARALLEL_MIN = 4096


def _ours(func: tirx.PrimFunc) -> bool:
    return "op_pattern" in func.attrs and int(func.attrs["op_pattern"]) == OPAQUE


def _extent(sch, loop) -> int | None:
    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tirx.IntImm) else None


def _vector_parallel(sch, loops, lanes: int) -> None:
    """Vectorise ``lanes`` elements of the innermost axes and parallelise the fused rest.

    The vector is cut from the innermost axis itself when it holds whole vectors (the channel
    block of NCHW[b]c, most widths), so that every access stays an affine, unit-stride index;
    else from the two innermost axes (H x W of a 28x28 plane), so that the outer indices (a
    concat's channel select) stay uniform across the vector."""
    extents = [_extent(sch, loop) for loop in loops]
    if None in extents:
        return
    # the shortest innermost run of axes that holds whole vectors (memory-contiguous: the
    # buffers are row-major); one axis alone keeps the indices affine
    cut = next((k for k in range(len(loops) - 1, max(len(loops) - 3, -1), -1)
                if math.prod(extents[k:]) % lanes == 0), None)
    vec = 1 if cut is None else lanes
    if cut is None:
        # no whole vectors in a plane (14x14): the plane stays a serial loop with affine
        # indices, which LLVM vectorises with a remainder; the outer axes run in parallel
        outer = loops[:-2] if len(loops) > 2 else loops[:1]
        vec = math.prod(extents[len(outer):])
        if len(loops) - len(outer) > 1:
            sch.fuse(*loops[len(outer):])
    else:
        suffix = sch.fuse(*loops[cut:]) if cut < len(loops) - 1 else loops[cut]
        suffix_o, suffix_i = sch.split(suffix, [None, lanes])
        sch.vectorize(suffix_i)
        outer = loops[:cut] + [suffix_o]
    par = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    total = _extent(sch, par)
    if total is not None and total * vec >= _PARALLEL_MIN:
        sch.parallel(par)


class _GenericOpRule(ScheduleRule):
    """A rule for the PrimFuncs of TVM's legalization (ours are skipped); ``_apply`` returns the
    schedule or None, and a rule that fails leaves the function as legalized (correct, slower)."""

    def __init__(self, lanes: int):
        self.lanes = lanes

    def apply(self, func, target, _tunable):
        if not isinstance(func, tirx.PrimFunc) or _ours(func):
            return None
        try:
            return self._apply(func)
        except Exception:  # a primitive refused this function's structure
            return None

    def _apply(self, func):
        raise NotImplementedError

    def is_target_available(self, target) -> bool:
        return "llvm" in target.keys or "cpu" in target.keys


class Elementwise(_GenericOpRule):
    """Fused injective chains: inline into the last block, one parallel vectorised pass."""

    def _apply(self, func):
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if not infos or any(not info.is_injective() for info in infos):
            return None
        kept = []
        for info in infos[:-1]:
            try:
                sch.compute_inline(info.block_rv)
            except Exception:  # an output (split, multi-output fusion): a pass of its own
                kept.append(info.block_rv)
        for block in kept + [infos[-1].block_rv]:
            _vector_parallel(sch, sch.get_loops(block), self.lanes)
        return sch


class InnerSpatialReduction(_GenericOpRule):
    """One reduction (+ injective epilogue) whose innermost spatial axis is contiguous in memory:
    reduce outside it, vectorised over it (NCHW[b]c global average pool)."""

    def _apply(self, func):
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if not infos:
            return None
        reductions = [i for i, info in enumerate(infos) if info.is_reduction()]
        if len(reductions) != 1 or any(not info.is_injective() for i, info in enumerate(infos) if i != reductions[0]):
            return None
        red = infos[reductions[0]]
        kinds = "".join(it.kind for it in red.iters)
        if not kinds.endswith("R") or "S" not in kinds or kinds.index("R") < kinds.rindex("S"):
            return None  # expect spatial axes, then reduction axes
        # every epilogue block after the reduction is inlined into the next; prologues into it
        for i, info in enumerate(infos):
            if i < reductions[0]:
                try:
                    sch.compute_inline(info.block_rv)
                except Exception:
                    return None
        block = red.block_rv
        loops = sch.get_loops(block)
        n_spatial = kinds.index("R")
        spatial, reduce = loops[:n_spatial], loops[n_spatial:]
        inner = spatial[-1]
        ext = _extent(sch, inner)
        if ext is None or ext % self.lanes != 0 or not _inner_is_contiguous(sch, block):
            return None
        sch.reorder(*spatial[:-1], *reduce, inner)
        outer = (sch.fuse(*spatial[:-1]) if n_spatial > 2 else spatial[0]) if n_spatial > 1 else None
        vo, vi = sch.split(inner, [None, self.lanes])
        sch.reorder(*([outer] if outer is not None else []), vo, *reduce, vi)
        sch.vectorize(vi)
        if outer is not None and (_extent(sch, outer) or 1) > 1:
            sch.parallel(outer)
        for info in infos[reductions[0] + 1:]:
            sch.reverse_compute_at(info.block_rv, vo, preserve_unit_loops=True)
            sch.vectorize(sch.get_loops(info.block_rv)[-1])
        sch.decompose_reduction(block, reduce[0])
        return sch


def _inner_is_contiguous(sch, block) -> bool:
    """The block's innermost spatial iterator indexes the last axis of every buffer it reads."""
    stmt = sch.get(block)
    last = stmt.iter_vars[[i for i, iv in enumerate(stmt.iter_vars) if iv.iter_type == 0][-1]].var
    for region in stmt.reads:
        idx = region.region[-1].min
        if not (isinstance(idx, tirx.Var) and idx.same_as(last)):
            return False
    return True


def LegalizeVectorMath() -> tvm.transform.Pass:
    """``LegalizeOps`` with float32 ``sigmoid`` on ``fast_exp`` (vectorisable); other ops as stock."""
    from tvm import topi

    stock = tvm.ir.Op.get("relax.sigmoid").get_attr("FLegalize")

    def _sigmoid(x):
        one = tirx.const(1, x.dtype)
        return topi.divide(one, topi.add(one, topi.fast_exp(topi.negative(x))))

    def _legalize(bb, call):
        if call.args[0].ty.dtype != "float32":
            return stock(bb, call)
        return bb.call_te(_sigmoid, call.args[0], primfunc_name_hint="sigmoid")

    return tvm.relax.transform.LegalizeOps({"relax.sigmoid": _legalize})


def ScheduleGenericOps(lanes: int) -> tvm.transform.Pass:
    """Schedule the legalized elementwise chains and reductions of a module (see module doc)."""
    return ApplyDefaultSchedule(Elementwise(lanes), InnerSpatialReduction(lanes))
