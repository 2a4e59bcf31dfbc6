"""Blocked layout (NCHW[b]c) for whole conv chains, with layout transforms at the graph edges.

``BlockedLayout`` decides which convs run blocked and lets relax's ``ConvertLayout`` carry the
layout through the graph; ``SplitAsSections`` works around a ``ConvertLayout`` gap for channel
splits; ``BlockedChannelShuffle`` keeps ShuffleNet's channel shuffle inside the blocked layout;
``ScheduleLayoutTransforms`` runs the transforms that remain as our scheduled kernels;
``FoldConstantOnHost`` folds constant weights/biases on the host. The blocked kernels themselves are in :mod:`.conv_blocked`.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from ._relax import OPAQUE, batch_shape, conv_spec, functions_pass, static_shape
from .conv import TargetInfo
from .conv_blocked import blocked_supported, layout_primfunc, shuffle_blocked_primfunc

__all__ = ["FoldConstantOnHost", "FoldConstants", "BlockedLayout", "SplitAsSections", "BlockedChannelShuffle",
           "ScheduleLayoutTransforms"]


def SplitAsSections() -> tvm.transform.Pass:
    """Channel ``split`` at explicit indices -> split into equal sections (+ concat of neighbours).

    relax's ``ConvertLayout`` moves a split into NCHW[b]c but keeps its indices in channels
    (TVM 0.27 ``InferLayoutSplit`` rewrites only the axis), which breaks MixConv-style graphs.
    A split into equal sections is converted correctly; unequal sizes become sections of their
    greatest common divisor, re-joined by ``concat``.
    """
    pattern = is_op("relax.split")(wildcard())

    def _rewriter(orig, _m):
        shape = static_shape(orig.args[0])
        cuts = orig.attrs.indices_or_sections
        if shape is None or len(shape) != 4 or int(orig.attrs.axis) % 4 != 1 or isinstance(cuts, tvm.tirx.IntImm):
            return orig
        bounds = [0] + [int(c) for c in cuts] + [shape[1]]
        sizes = [b - a for a, b in zip(bounds, bounds[1:])]
        if min(sizes) <= 0:
            return orig
        unit = functools.reduce(math.gcd, sizes)
        parts = relax.op.split(orig.args[0], shape[1] // unit, axis=1)
        if len(set(sizes)) == 1:
            return parts
        pieces = [relax.TupleGetItem(parts, i) for i in range(shape[1] // unit)]
        outs = []
        for a, b in zip(bounds, bounds[1:]):
            group = pieces[a // unit:b // unit]
            outs.append(group[0] if len(group) == 1 else relax.op.concat(group, axis=1))
        return relax.Tuple(outs)

    return functions_pass("edgeconv.SplitAsSections", lambda f, _b: rewrite_call(pattern, _rewriter, f))


def _blockable(call: relax.Call, b: int) -> bool:
    spec = conv_spec(call)
    return spec is not None and not spec.block and blocked_supported(spec, b)


def _calls(mod: tvm.ir.IRModule, keep) -> list[relax.Call]:
    """Every call in the module's Relax functions for which ``keep(call)`` holds."""
    found = []
    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, lambda e: found.append(e) if isinstance(e, relax.Call) and keep(e)
                                            else None)
    return found


def _count_blockable(mod: tvm.ir.IRModule, b: int) -> int:
    return len(_calls(mod, lambda e: isinstance(e.op, tvm.ir.Op) and e.op.name == "relax.nn.conv2d"
                      and _blockable(e, b)))


def _host_layout_transform(index_map, arr: np.ndarray) -> np.ndarray | None:
    """``arr`` moved by an index map that only splits axes (``x // b``, ``x % b``) and reorders
    them (every layout ConvertLayout writes: OIHW -> OIHW8i8o, NCHW -> NCHW8c), as a numpy
    reshape + transpose (+ unit axes); None for any other map. (``IndexMap.map_tensor`` evaluates the map per
    element: 9.6 s for one 512x512x3x3 weight.)"""
    src = list(index_map.initial_indices)

    def _axis(var):
        return next((i for i, v in enumerate(src) if v.same_as(var)), None)

    parts, factor, units = [], {}, []
    for pos, e in enumerate(index_map.final_indices):
        if isinstance(e, tirx.Var):
            parts.append((_axis(e), "all"))
            continue
        if isinstance(e, tirx.IntImm) and int(e) == 0:
            units.append(pos)  # a unit axis: the simplified ``i % 1`` of a depthwise OIHW1i8o
            continue
        if not isinstance(e, (tirx.FloorDiv, tirx.FloorMod)) or not isinstance(e.a, tirx.Var) \
                or not isinstance(e.b, tirx.IntImm):
            return None
        axis, b = _axis(e.a), int(e.b)
        if axis is None or factor.setdefault(axis, b) != b or arr.shape[axis] % b:
            return None
        parts.append((axis, "outer" if isinstance(e, tirx.FloorDiv) else "inner"))
    shape, where = [], {}
    for i, n in enumerate(arr.shape):
        if i in factor:
            where[(i, "outer")], where[(i, "inner")] = len(shape), len(shape) + 1
            shape += [n // factor[i], factor[i]]
        else:
            where[(i, "all")] = len(shape)
            shape.append(n)
    order = [where.get(p) for p in parts]
    if None in order or sorted(order) != list(range(len(shape))):
        return None
    moved = arr.reshape(shape).transpose(order)
    return np.ascontiguousarray(np.expand_dims(moved, units))


# exact in numpy and in TVM's LLVM code alike (IEEE-754 correctly rounded, or no rounding):
# folding them on the host gives the very bits the folded kernel would. BatchNorm's ``var + eps``
# and ``sqrt`` after DecomposeOpsForInference, the ONNX frontend's ``where(isnan(c), -inf, c)``
# for Clip bounds.
_EXACT_UNARY = {"relax.sqrt": np.sqrt, "relax.negative": np.negative, "relax.isnan": np.isnan}
_EXACT_BINARY = {"relax.add": np.add, "relax.subtract": np.subtract, "relax.multiply": np.multiply,
                 "relax.divide": np.divide}
_EXACT = {**_EXACT_UNARY, **_EXACT_BINARY, "relax.where": np.where}


def FoldConstantOnHost() -> tvm.transform.Pass:
    """Constant data movement (reshape, expand_dims, squeeze, permute_dims, layout_transform)
    and exactly rounded arithmetic on constants -> the resulting constant, computed by numpy.

    ``FoldConstant`` would legalize and LLVM-compile one kernel per folded call (MixNet-S: 78
    bias expand_dims/reshapes from the ONNX frontend, 153 weight layout transforms, 26
    BatchNorm ``add``/``sqrt``: 15 of its 27 s of compile); numpy gives the same values without
    codegen.
    """
    movement = (is_op("relax.layout_transform")(is_const()) | is_op("relax.permute_dims")(is_const())
                | is_op("relax.expand_dims")(is_const()) | is_op("relax.squeeze")(is_const())
                | is_op("relax.reshape")(is_const(), wildcard()))
    arithmetic = functools.reduce(lambda a, b: a | b, [
        *(is_op(op)(is_const()) for op in _EXACT_UNARY),
        *(is_op(op)(is_const(), is_const()) for op in _EXACT_BINARY),
        is_op("relax.where")(is_const(), is_const(), is_const())])

    folded = []  # one entry per folded call

    def _rewriter(orig, _m):
        new = _folded(orig)
        if new is not orig:
            folded.append(1)
        return new

    def _folded(orig):
        shape, dtype = static_shape(orig), str(orig.ty.dtype)
        if shape is None:
            return orig
        op = orig.op.name
        if op in _EXACT:
            with np.errstate(all="ignore"):  # inf / nan as the kernel would give them
                value = np.asarray(_EXACT[op](*(a.value.numpy() for a in orig.args)))
            # numpy's type promotion is not relax's: keep only what has relax's result type
            return relax.const(value.reshape(shape), dtype) if str(value.dtype) == dtype else orig
        arr = orig.args[0].value.numpy()
        if op == "relax.layout_transform":
            moved = None if orig.attrs.pad_value is not None else _host_layout_transform(orig.attrs.index_map, arr)
            return orig if moved is None or list(moved.shape) != shape else relax.const(moved, dtype)
        if op == "relax.permute_dims":
            axes = None if orig.attrs.axes is None else [int(a) for a in orig.attrs.axes]
            arr = np.transpose(arr, axes)
        return relax.const(np.ascontiguousarray(arr.reshape(shape)), dtype)

    def _fold(func, _builder):
        # a folded call makes its user foldable (permute_dims then reshape of a weight): repeat
        # while anything folds
        while True:
            before = len(folded)
            func = rewrite_call(movement | arithmetic, _rewriter, func)
            if len(folded) == before:
                return func

    return functions_pass("edgeconv.FoldConstantOnHost", _fold)


def _constant_like(expr) -> bool:
    """Known at compile time: a constant, shape, immediate, a tuple of those, or a function
    (the callee of ``call_tir``: the ONNX frontend's Clip bounds are call_tir on constants)."""
    if isinstance(expr, relax.Tuple):
        return all(_constant_like(f) for f in expr.fields)
    # TVM 0.27: prim values are IntImm / FloatImm, subclasses of Constant
    return isinstance(expr, (tvm.ir.GlobalVar, tvm.ir.expr.Constant, tvm.ir.expr.StringImm, relax.ShapeExpr))


def _has_constant_call(mod: tvm.ir.IRModule) -> bool:
    return bool(_calls(mod, lambda e: e.args and all(_constant_like(a) for a in e.args)))


def FoldConstants() -> tvm.transform.Pass:
    """``FoldConstantOnHost``, then relax's ``FoldConstant`` only if a call on constants is left
    (its traversal alone costs ~1 s on MixNet-S with nothing to fold)."""

    @tvm.transform.module_pass(opt_level=0, name="edgeconv.FoldConstants")
    def _pass(mod: tvm.ir.IRModule, _ctx) -> tvm.ir.IRModule:
        mod = FoldConstantOnHost()(mod)
        return relax.transform.FoldConstant()(mod) if _has_constant_call(mod) else mod

    return _pass


def BlockedLayout(tinfo: TargetInfo, min_convs: int = 2) -> tvm.transform.Pass:
    """Every conv2d the blocked kernel covers -> NCHW[b]c (b = vector lanes), via relax's
    ``ConvertLayout``: it propagates the layout through elementwise ops, split/concat and
    reductions, so layout transforms remain only at the graph edges and around ops without a
    blocked form; the weight transforms are constant-folded.

    Entering and leaving the layout costs two memory passes over the edge tensors, which one
    conv alone does not pay back (a lone depthwise conv is memory-bound itself, a lone grouped
    conv gains ~10%); so a graph is converted only with at least ``min_convs`` such convs.
    """
    b = tinfo.lanes

    def _desired(call):
        if call.op.name != "relax.nn.conv2d":
            return {}
        if _blockable(call, b):
            kernel = f"OIHW1i{b}o" if conv_spec(call).Cg == 1 else f"OIHW{b}i{b}o"
            return {"relax.nn.conv2d": [f"NCHW{b}c", kernel]}
        # explicit: with {} the conv would inherit its (converted) input's layout
        return {"relax.nn.conv2d": [str(call.attrs.data_layout), str(call.attrs.kernel_layout)]}

    convert = tvm.transform.Sequential([relax.transform.ConvertLayout({}, _desired), FoldConstants()])

    @tvm.transform.module_pass(opt_level=0, name="edgeconv.BlockedLayout")
    def _pass(mod: tvm.ir.IRModule, _ctx) -> tvm.ir.IRModule:
        return convert(mod) if _count_blockable(mod, b) >= min_convs else mod

    return _pass


def _blocking(call: relax.Call):
    """(N, C, H, W, b, to_blocked) if ``call`` is a float32 layout_transform between NCHW and
    NCHW[b]c (either way), static but maybe in the batch (N None), else None."""
    src, dst = batch_shape(call.args[0]), batch_shape(call)
    if src is None or dst is None or call.attrs.pad_value is not None or call.args[0].ty.dtype != "float32":
        return None
    to_blocked = len(src) == 4
    plain, blocked = (src, dst) if to_blocked else (dst, src)
    if len(plain) != 4 or len(blocked) != 5:
        return None
    N, C, H, W = plain
    b = blocked[4]
    if C % b or blocked != [N, C // b, H, W, b]:
        return None
    # probe the index map at the far corner: it must be the channel (un)blocking
    n = 0 if N is None else N - 1
    corner_plain = [n, C - 1, H - 1, W - 1]
    corner_blocked = [n, (C - 1) // b, H - 1, W - 1, (C - 1) % b]
    probe, want = (corner_plain, corner_blocked) if to_blocked else (corner_blocked, corner_plain)
    got = [int(v) for v in call.attrs.index_map.map_indices(probe)]
    return (N, C, H, W, b, to_blocked) if got == want else None


def ScheduleLayoutTransforms() -> tvm.transform.Pass:
    """layout_transform NCHW <-> NCHW[b]c -> call_tir of our scheduled, parallel kernels."""

    def _rewrite(func: relax.Function, builder: relax.BlockBuilder) -> relax.Function:
        def _rewriter(orig, _m):
            how = _blocking(orig)
            if how is None:
                return orig
            pf = layout_primfunc(*how).with_attr("op_pattern", OPAQUE)
            gv = builder.add_func(pf, pf.attrs["global_symbol"])
            return relax.call_tir(gv, [orig.args[0]], orig.ty)

        return rewrite_call(is_op("relax.layout_transform")(wildcard()), _rewriter, func)

    return functions_pass("edgeconv.ScheduleLayoutTransforms", _rewrite)


def _shuffle_groups(first: relax.Call, permute: relax.Call, second: relax.Call, size) -> int | None:
    """g if reshape(N,g,C/g,H,W) -> permute(0,2,1,3,4) -> reshape(N,C,H,W) is a channel shuffle."""
    N, C, H, W = size
    split, merged = static_shape(first), static_shape(second)
    axes = [int(a) for a in permute.attrs.axes] if permute.attrs.axes is not None else None
    if split is None or merged != [N, C, H, W] or axes != [0, 2, 1, 3, 4]:
        return None
    if len(split) != 5 or split[0] != N or split[1] * split[2] != C or split[3:] != [H, W]:
        return None
    return split[1]


def BlockedChannelShuffle() -> tvm.transform.Pass:
    """from-blocked -> reshape/transpose/reshape (channel shuffle) -> to-blocked => one kernel.

    ``ConvertLayout`` has no blocked form for the 5-D reshape, so it leaves the shuffle in NCHW
    between two layout transforms (three passes over the tensor; 0.067 of 0.53 ms in the
    benchmark's small model); the shuffle is one gather in the blocked layout.
    """
    out_of = is_op("relax.layout_transform")(wildcard())
    split = is_op("relax.reshape")(out_of, wildcard())
    swap = is_op("relax.permute_dims")(split)
    merge = is_op("relax.reshape")(swap, wildcard())
    pattern = is_op("relax.layout_transform")(merge)

    def _rewrite(func: relax.Function, builder: relax.BlockBuilder) -> relax.Function:
        def _rewriter(orig, m):
            into, back = _blocking(orig), _blocking(m[out_of])
            if into is None or back is None or not into[5] or back[5] or into[:5] != back[:5]:
                return orig
            groups = _shuffle_groups(m[split], m[swap], m[merge], into[:4])
            if groups is None:
                return orig
            pf = shuffle_blocked_primfunc(*into[:4], groups, into[4]).with_attr("op_pattern", OPAQUE)
            gv = builder.add_func(pf, pf.attrs["global_symbol"])
            return relax.call_tir(gv, [m[out_of].args[0]], orig.ty)

        return rewrite_call(pattern, _rewriter, func)

    return functions_pass("edgeconv.BlockedChannelShuffle", _rewrite)
