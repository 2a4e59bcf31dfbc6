"""Relax passes and named pipelines that route every conv2d through edgeconv's scheduled kernels.

``LowerConv2d`` is a module pass built on ``relax.dpl`` pattern rewriting. It matches, in order,

1. ``act(add(conv2d(x, w), bias_const))``  -> one kernel with fused bias + activation, where
   ``act`` is relu, clip, or a max/min clamp with scalar constants (ONNX ``Clip`` with inputs)
2. ``act(conv2d(x, w))``                     -> one kernel with fused activation
3. ``add(conv2d(x, w), bias_const)``         -> one kernel with fused bias
4. ``conv2d(x, w)``                          -> one kernel
5. ``matmul(a, b)`` with unit leading dims   -> the pointwise kernel on reshaped views (one row
   by a constant matrix, a classifier head: the blocked GEMV of :mod:`.gemv`)
6. ``call_tir`` of an imported ``edgeconv.DeformConv2d`` (:mod:`.deform`) -> our deformable
   columns kernel + the grouped pointwise kernel (bias fused)

for any ``groups`` / stride / dilation / kernel shape in NCHW/OIHW or NCHW[b]c/OIHW[b]i[b]o
float32 with static shapes, and replaces the match with ``R.call_tir`` of a TensorIR PrimFunc
from :mod:`.conv` (NCHW) or :mod:`.conv_blocked` (NCHW[b]c): one compute each, schedules per
target family. Pointwise 1x1 stride-1 convolutions run on the flattened ``N x C x 1 x (H*W)``
view (a free reshape) so that the register tile is not limited by the row width.

Depthwise-separable, MixConv (split + depthwise + concat), HetConv (group + pointwise), flattened
and spatially separable (kx1 then 1xk) blocks reach us as sequences of these convs after ONNX
export; each conv of the sequence takes the scheduled path. Before lowering, the ``blocked``
pipeline moves conv chains into NCHW[b]c (:mod:`.layout`).

Pipelines ``edgeconv_x86`` and ``edgeconv_arm`` are registered in ``relax.pipeline`` so that
``tvm.compile(mod, target, relax_pipeline="edgeconv_x86")`` works.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.relax.dpl import TuplePattern, is_const, is_op, rewrite_call, wildcard

from ._relax import OPAQUE, conv_spec, functions_pass, scalar, static_shape, tir_name
from .conv import (DEFAULT_OVERRIDES, ConvSpec, PlanOverrides, TargetInfo, schedule_conv2d, schedule_separable,
                   separable_name)
from .conv_blocked import blocked_supported, layout_primfunc, schedule_blocked
from .deform import DEFORM_ATTR, DeformSpec, blocked_ok, schedule_columns
from .elementwise import LegalizeVectorMath, ScheduleGenericOps
from .gemv import dense_weight, is_gemv, is_gemv_matmul, lower_gemv
from .layout import (BlockedChannelShuffle, BlockedLayout, FoldConstants, ScheduleLayoutTransforms,
                     SplitAsSections)

__all__ = [
    "LowerConv2d",
    "ClampAsOps",
    "TakeClipped",
    "BlockedLayout",
    "SplitAsSections",
    "LAYOUTS",
    "edgeconv_pipeline",
    "edgeconv_stage1",
    "edgeconv_stage2",
    "target_info",
    "register_pipelines",
    "PIPELINE_X86",
    "PIPELINE_ARM",
]

PIPELINE_X86 = "edgeconv_x86"
PIPELINE_ARM = "edgeconv_arm"
LAYOUTS = ("blocked", "nchw")

# Fuse depthwise + pointwise only when the depthwise result would not stay in L2 (measured on
# AVX2: 1x128x56x56 fused 1.54 ms vs 2.17 ms separate; 1x32x28x28 fused 0.18 vs 0.10 ms).
_SEPARABLE_FUSE_MIN_BYTES = 768 * 1024


def target_info(target: tvm.target.Target | None = None, family: str | None = None) -> TargetInfo:
    """Derive vector width / register count from a TVM target (or the current one)."""
    if target is None:
        target = tvm.target.Target.current(allow_none=True)
    mattr = []
    mcpu = ""
    triple = ""
    if target is not None:
        attrs = target.attrs
        mattr = [str(a) for a in attrs.get("mattr", [])] if "mattr" in attrs else []
        mcpu = str(attrs["mcpu"]) if "mcpu" in attrs else ""
        triple = str(attrs["mtriple"]) if "mtriple" in attrs else ""
    if family is None:
        family = "arm" if ("aarch64" in triple or "arm" in triple) else "x86"
    if family == "arm":
        return TargetInfo("arm", 4, 32)
    avx512 = any("avx512f" in a for a in mattr) or any(
        k in mcpu for k in ("avx512", "skylake-avx512", "cascadelake", "icelake", "sapphirerapids", "znver4", "znver5")
    )
    if avx512:
        return TargetInfo("x86", 16, 32)
    return TargetInfo("x86", 8, 16)


def _bias_vector(const, out_channels: int, block: int) -> np.ndarray | None:
    """A constant that broadcasts only along the channel axis -> (O,) vector in channel order.

    NCHW: (O,1,1) or (1,O,1,1) (an (O,) constant would broadcast along W, not C);
    NCHW[b]c: (1, O/b, 1, 1, b); any layout: a single value.
    """
    arr = const.value.numpy()
    if arr.dtype != np.float32:
        return None
    if arr.size == 1:
        return np.full((out_channels,), arr.reshape(()), np.float32)
    want = [1, out_channels // block, 1, 1, block] if block else [1, out_channels, 1, 1]
    have = [1] * (len(want) - arr.ndim) + list(arr.shape)
    return arr.reshape(out_channels) if have == want else None


def _clip_bounds(call: relax.Call):
    lo, hi = call.args[1], call.args[2]
    try:
        return float(lo.value.value), float(hi.value.value)
    except Exception:
        return None


class _Lowering:
    """State of one LowerConv2d run: the kernels added to the module, keyed by their spec."""

    def __init__(self, tinfo: TargetInfo, overrides: PlanOverrides, builder: relax.BlockBuilder):
        self.tinfo = tinfo
        self.overrides = overrides
        self.builder = builder
        # keyed by everything that changes the kernel's code (ConvSpec is a frozen dataclass:
        # shape, pads, strides, dilations, groups, epilogue, dtype, layout), never by a name
        self.gvars: dict = {}
        self.stats: dict[str, int] = {}
        self.specs: dict[tvm.ir.GlobalVar, ConvSpec] = {}
        # the import's deformable conv placeholders (deform.reference_primfunc) -> their spec
        self.deform_specs: dict[tvm.ir.GlobalVar, DeformSpec] = {
            gv: DeformSpec.from_attrs(f.attrs[DEFORM_ATTR]) for gv, f in builder.get().functions_items()
            if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and DEFORM_ATTR in f.attrs}

    def _kernel(self, key, build, name: str | None, kind: str) -> tvm.ir.GlobalVar | None:
        """The module's kernel for ``key``, built (``build() -> PrimFunc | None``) on first use
        and named ``name`` (None: its global symbol)."""
        if key not in self.gvars:
            func = build()
            if func is None:
                return None
            func = func.with_attr({"op_pattern": OPAQUE, "edgeconv.kind": kind})
            # the builder makes names unique
            self.gvars[key] = self.builder.add_func(func, name or str(func.attrs["global_symbol"]))
        self.stats[kind] = self.stats.get(kind, 0) + 1
        return self.gvars[key]

    def _gvar(self, spec: ConvSpec) -> tvm.ir.GlobalVar:
        def _build():
            return schedule_blocked(spec, self.tinfo) if spec.block else \
                schedule_conv2d(spec, self.tinfo, self.overrides)

        gv = self._kernel(spec, _build, spec.name(), spec.kind)
        self.specs[gv] = spec
        return gv

    def lower(self, conv: relax.Call, bias_const=None, act=None, clip=None):
        """Return the replacement expression, or None to keep the original."""
        spec = conv_spec(conv, bias_const is not None, act, clip)
        if spec is None:
            return None
        args = [conv.args[0], conv.args[1]]
        bias_vec = None
        if bias_const is not None:
            bias_vec = _bias_vector(bias_const, spec.O, spec.block)
            if bias_vec is None:
                return None
            args.append(relax.const(bias_vec.reshape(_bias_shape(spec)), "float32"))
        n = conv.args[0].ty.shape.values[0]  # static, or the model's symbolic batch
        out_shape = _data_shape(spec, n, spec.O, spec.OH, spec.OW)
        if is_gemv(spec, conv.args[1]):
            dense = dense_weight(conv.args[1].value.numpy(), spec)
            return lower_gemv(conv.args[0], dense, spec, self._gvar, bias_vec, out_shape, self.tinfo.lanes)
        flatten = spec.KH == spec.KW == 1 and spec.stride == (1, 1) and spec.padding == (0, 0, 0, 0) \
            and spec.groups == 1 and spec.H > 1
        if flatten:
            # pointwise on the flattened spatial axis (a free reshape): the register tile is
            # not limited by the row width
            spec = dataclasses.replace(spec, H=1, W=spec.H * spec.W)
            args[0] = relax.op.reshape(args[0], _data_shape(spec, n, spec.C, 1, spec.W))
        kernel_out = _data_shape(spec, n, spec.O, spec.OH, spec.OW)
        call = relax.call_tir(self._gvar(spec), args, relax.TensorType(kernel_out, "float32"))
        return relax.op.reshape(call, out_shape) if flatten else call

    def lower_matmul(self, call: relax.Call):
        """``matmul(a (.., M, K), b (.., K, N))`` -> our pointwise kernel (TVM legalizes matmul to
        an unscheduled loop nest: 2.8 ms for the 64x576x64 product of a decomposed deformable
        conv). ``b`` is the image (batch, G*K, 1, N), ``a`` the weights (G*M, K, 1, 1): leading
        dims of ``a`` (``G``, e.g. the groups of a decomposed grouped deformable conv) become conv
        groups, the leading dims of ``b`` beyond them the batch.
        """
        a, b = static_shape(call.args[0]), static_shape(call.args[1])
        out = static_shape(call)
        if a is None or b is None or out is None or len(a) < 2 or len(b) < 2:
            return None
        if any(arg.ty.dtype != "float32" for arg in call.args) or str(call.attrs.out_dtype) not in ("", "float32",
                                                                                                  "None"):
            return None
        if is_gemv_matmul(a, call.args[1]):
            K, N = b
            dense = call.args[1].value.numpy().T
            return lower_gemv(call.args[0], dense, ConvSpec(1, K, 1, 1, N, 1, 1), self._gvar, None, out, self.tinfo.lanes)
        layout = _matmul_as_conv(a, b)
        if layout is None:
            return None
        batch, groups, M = layout
        K, N = a[-1], b[-1]
        spec = ConvSpec(batch, groups * K, 1, N, groups * M, 1, 1, groups=groups)
        data = relax.op.reshape(call.args[1], [batch, groups * K, 1, N])
        weight = relax.op.reshape(call.args[0], [groups * M, K, 1, 1])
        res = relax.call_tir(self._gvar(spec), [data, weight], relax.TensorType([batch, groups * M, 1, N], "float32"))
        return relax.op.reshape(res, out)

    def lower_deform(self, call: relax.Call):
        """call_tir of a deformable conv placeholder -> our columns kernel, then the grouped
        pointwise conv kernel on the columns with the bias in its epilogue."""
        spec = self.deform_specs.get(call.args[0])
        if spec is None:
            return None
        args = list(call.args[1].fields)
        x, off = args[0], args[1]
        mask = args[2] if spec.mask else None
        w, b = args[2 + spec.mask], args[3 + spec.mask] if spec.bias else None
        lanes = self.tinfo.lanes
        if blocked_ok(spec, lanes) and isinstance(w, tvm.ir.expr.Constant) and \
                blocked_supported(dataclasses.replace(spec.gemm, block=lanes), lanes):
            return self._deform_blocked(spec, x, off, mask, w, b)
        gv = self._kernel(("deform", spec), lambda: schedule_columns(spec, self.tinfo), spec.name(),
                          "conv:deformable")
        cols = relax.call_tir(gv, [x, off] + ([mask] if mask is not None else []),
                              relax.TensorType([spec.N, spec.C, spec.K, spec.L], "float32"))
        gemm = spec.gemm
        data = relax.op.reshape(cols, [spec.N, gemm.C, 1, spec.L])
        weight = relax.op.reshape(w, [spec.O, gemm.Cg, 1, 1])
        res = relax.call_tir(self._gvar(gemm), [data, weight] + ([b] if b is not None else []),
                             relax.TensorType([spec.N, spec.O, 1, spec.L], "float32"))
        return relax.op.reshape(res, [spec.N, spec.O, spec.L])

    def _deform_blocked(self, spec: DeformSpec, x, off, mask, w: tvm.ir.expr.Constant, bias):
        """The channel-vectorised form: image and columns in NCHW[b]c, the blocked pointwise
        kernel on the columns (weights re-ordered to the columns' (tap, channel) order on the
        host), one layout transform in and one out (our kernels, ScheduleLayoutTransforms)."""
        b, N, C, O, K, L = self.tinfo.lanes, spec.N, spec.C, spec.O, spec.K, spec.L
        Cg, R = C // spec.groups, C // spec.groups * spec.K
        xb = relax.call_tir(self._layout(N, C, 1, spec.H * spec.W, b, True),
                            [relax.op.reshape(x, [N, C, 1, spec.H * spec.W])],
                            relax.TensorType([N, C // b, 1, spec.H * spec.W, b], "float32"))
        gv = self._kernel(("deform", spec, b), lambda: schedule_columns(spec, self.tinfo, blocked=True),
                          spec.name().replace("_cols", f"_cols{b}c"), "conv:deformable")
        cols = relax.call_tir(gv, [xb, off] + ([mask] if mask is not None else []),
                              relax.TensorType([N, spec.groups, K, Cg // b, L, b], "float32"))
        gemm = dataclasses.replace(spec.gemm, block=b)
        data = relax.op.reshape(cols, [N, C * K // b, 1, L, b])
        wt = w.value.numpy().reshape(O, Cg, K).transpose(0, 2, 1)  # (o, tap, channel): the columns' order
        wb = wt.reshape(O // b, b, R // b, b).transpose(0, 2, 3, 1).reshape(O // b, R // b, 1, 1, b, b)
        args = [data, relax.const(np.ascontiguousarray(wb), "float32")]
        if bias is not None:
            args.append(relax.op.reshape(bias, [O // b, b]))
        res = relax.call_tir(self._gvar(gemm), args, relax.TensorType([N, O // b, 1, L, b], "float32"))
        out = relax.call_tir(self._layout(N, O, 1, L, b, False), [res], relax.TensorType([N, O, 1, L], "float32"))
        return relax.op.reshape(out, [N, O, L])

    def _layout(self, *how) -> tvm.ir.GlobalVar:
        """Our NCHW <-> NCHW[b]c kernel (``how``: N, C, H, W, b, to_blocked)."""
        return self._kernel(("layout",) + how, lambda: layout_primfunc(*how), None, "layout")

    def separable(self, dw: ConvSpec, pw: ConvSpec) -> tvm.ir.GlobalVar | None:
        """The fused depthwise + pointwise kernel (None if its schedule fails)."""
        return self._kernel(("separable", dw, pw), lambda: schedule_separable(dw, pw, self.tinfo, self.overrides),
                            separable_name(dw, pw), "separable_fused")


def _data_shape(spec: ConvSpec, n: int, c: int, h: int, w: int) -> list[int]:
    return [n, c // spec.block, h, w, spec.block] if spec.block else [n, c, h, w]


def _bias_shape(spec: ConvSpec) -> tuple:
    return (spec.O // spec.block, spec.block) if spec.block else (spec.O,)


def _matmul_as_conv(a: tuple, b: tuple) -> tuple[int, int, int] | None:
    """(batch, groups, output channels per group) of ``matmul(a, b)`` as a grouped pointwise
    conv, or None when the leading (broadcast) dims are not ``b``'s batch dims followed by
    ``a``'s stack of matrices."""
    a_lead, b_lead, M = list(a[:-2]), list(b[:-2]), a[-2]
    while a_lead and a_lead[0] == 1:
        a_lead.pop(0)
    if math.prod(b_lead) == 1:  # one b for every matrix of a: a single, taller weight matrix
        return 1, 1, M * math.prod(a_lead)
    if a_lead and b_lead[-len(a_lead):] != a_lead:
        return None
    groups = math.prod(a_lead)
    return math.prod(b_lead) // groups, groups, M


def _use_counts(func: relax.Function) -> dict:
    counts: dict = {}

    def _count(expr):
        for v in relax.analysis.free_vars(expr):
            counts[v] = counts.get(v, 0) + 1

    for block in func.body.blocks:
        for binding in block.bindings:
            _count(binding.value)
    _count(func.body.body)
    return counts


# ops whose generic lowering is an unscheduled loop nest with FLOPs (reported when left there)
_HEAVY_OPS = {
    "relax.nn.conv1d": "1-D conv (edgeconv's kernels are 2-D)",
    "relax.nn.conv3d": "3-D conv (edgeconv's kernels are 2-D)",
    "relax.nn.conv1d_transpose": "transposed 1-D conv",
    "relax.nn.conv2d_transpose": "transposed conv",
    "relax.nn.conv3d_transpose": "transposed 3-D conv",
    "relax.nn.conv2d": None,  # reason from the call (see _why_generic)
    "relax.matmul": None,
}


def _why_generic(call: relax.Call) -> str:
    """The real reason why our lowering left ``call`` (a heavy op) alone."""
    op = call.op.name
    if _HEAVY_OPS.get(op):
        return _HEAVY_OPS[op]
    tensors = [a for a in call.args if isinstance(a.ty, relax.TensorType)]
    for arg in tensors:
        if arg.ty.dtype != "float32":
            return f"dtype {arg.ty.dtype}"
    for arg in tensors:
        if static_shape(arg) is None:
            return f"symbolic dim in shape {arg.ty.shape}"
    if op == "relax.matmul":
        return "matmul whose leading dims are neither a batch nor groups"
    return f"layout {call.attrs.data_layout}/{call.attrs.kernel_layout}"


def _generic_ops(mod: tvm.ir.IRModule) -> list[str]:
    """``"op: reason"`` for every heavy op still in the module's Relax functions."""
    found = []
    for _, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        for block in func.body.blocks:
            for binding in block.bindings:
                value = binding.value
                if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name in _HEAVY_OPS:
                    found.append(f"{value.op.name.split('.')[-1]} ({_why_generic(value)})")
    return found


def generic_ops_warning(found: list[str]) -> str | None:
    """One message naming every heavy op left on TVM's generic lowering, with counts."""
    if not found:
        return None
    counts: dict[str, int] = {}
    for item in found:
        counts[item] = counts.get(item, 0) + 1
    items = "; ".join(f"{k} x{v}" if v > 1 else k for k, v in sorted(counts.items()))
    hint = (" Fix symbolic dims with compile_tvm(..., input_shapes={name: shape})."
            if any("symbolic" in k for k in counts) else "")
    return (f"edgeconv: {len(found)} op(s) left to TVM's generic, unscheduled lowering (slow): {items}.{hint}")


def _max_min_bound(kind: str, c):
    """('lo'|'hi', value) for a maximum/minimum with scalar constant c."""
    v = scalar(c)
    if v is None:
        return None
    if kind.startswith("maximum"):
        return "lo", v
    if kind.startswith("minimum"):
        return "hi", v
    return None


class _ActPatterns:
    """``act(base)`` for act in relu, clip, one or two max/min steps with scalar constants."""

    def __init__(self, base):
        self.c1, self.c2 = is_const(), is_const()
        self.relu = is_op("relax.nn.relu")(base)
        self.clip = is_op("relax.clip")(base, wildcard(), wildcard())
        self.max = is_op("relax.maximum")(base, self.c1)
        self.min = is_op("relax.minimum")(base, self.c1)
        self.minmax = is_op("relax.minimum")(self.max, self.c2) | is_op("relax.maximum")(self.min, self.c2)
        self.pattern = self.relu | self.clip | self.minmax | self.max | self.min

    def act_of(self, orig: relax.Call, m):
        """(act, clip bounds) of a match, (None, None) when it is not a clamp we can fuse."""
        op = orig.op.name
        if op == "relax.nn.relu":
            return "relu", None
        if op == "relax.clip":
            clp = _clip_bounds(orig)
            return ("clip", clp) if clp is not None else (None, None)
        # one or two max/min steps: collect (kind, const) from outer to inner
        steps = [(op.split(".")[-1], m[self.c2] if self.c2 in m else m[self.c1])]
        if self.c2 in m:
            inner = m[self.max] if self.max in m else m[self.min]
            steps.append((inner.op.name.split(".")[-1], m[self.c1]))
        lo = hi = None
        for name, c in steps:
            got = _max_min_bound(name, c)
            if got is None:
                return None, None
            if got[0] == "lo":
                if lo is not None:
                    return None, None
                lo = got[1]
            else:
                if hi is not None:
                    return None, None
                hi = got[1]
        if lo is not None and hi is not None and len(steps) == 2 and steps[0][0].startswith("maximum"):
            # max(min(x, hi), lo) == min(max(x, lo), hi) only when lo <= hi
            if lo > hi:
                return None, None
        if lo == 0.0 and hi is None:
            return "relu", None
        return "clip", (lo, hi)


@tvm.transform.module_pass(opt_level=0, name="edgeconv.LowerConv2d")
class LowerConv2d:
    """Module pass: every float32 NCHW / NCHW[b]c conv2d -> scheduled TensorIR kernel (call_tir).

    conv2d [+ bias] [+ relu | clip | max/min clamp] are rewritten longest match first, then
    unit-batch matmuls, then (``fuse_separable``) depthwise + pointwise pairs. The patterns are
    built once per pass object; each run keeps its own kernel table (:class:`_Lowering`).
    Heavy ops left to TVM's generic lowering are reported in one warning.
    """

    def __init__(self, tinfo: TargetInfo | None = None, family: str | None = None,
                 overrides: PlanOverrides = DEFAULT_OVERRIDES, fuse_separable: bool = True):
        self.tinfo = tinfo
        self.family = family
        self.overrides = overrides
        self.fuse_separable = fuse_separable
        self.conv = is_op("relax.nn.conv2d")(wildcard(), wildcard())
        self.bias = is_const()
        self.add_cb, self.add_bc = is_op("relax.add")(self.conv, self.bias), is_op("relax.add")(self.bias, self.conv)
        self.biased = self.add_cb | self.add_bc
        self.biased_acts = _ActPatterns(self.biased)
        self.plain_acts = _ActPatterns(self.conv)
        self.matmul = is_op("relax.matmul")(wildcard(), wildcard())
        self.call_tir = is_op("relax.call_tir")(wildcard(), wildcard())
        # call_tir(depthwise) -> reshape -> call_tir(pointwise, flattened) -> reshape
        self.dw_call = is_op("relax.call_tir")(wildcard(), wildcard())
        self.pw_in = is_op("relax.reshape")(self.dw_call, wildcard())
        self.pw_call = is_op("relax.call_tir")(wildcard(), TuplePattern([self.pw_in, wildcard(), wildcard()])) | \
            is_op("relax.call_tir")(wildcard(), TuplePattern([self.pw_in, wildcard()]))
        self.separable = is_op("relax.reshape")(self.pw_call, wildcard())

    def transform_module(self, mod: tvm.ir.IRModule, _ctx) -> tvm.ir.IRModule:
        info = self.tinfo or target_info(family=self.family)
        state = _Lowering(info, self.overrides, relax.BlockBuilder(mod))
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                state.builder.update_func(gv, self._rewrite(func, state))
        mod = state.builder.get()
        # drop our kernels that a later match (separable fusion) made unused
        used = set()
        for _, func in mod.functions_items():
            if isinstance(func, relax.Function):
                used.update(relax.analysis.all_global_vars(func))
        for gv in list(state.gvars.values()) + list(state.deform_specs):
            if gv not in used and gv in mod.get_global_vars():
                del mod[gv]
        if state.stats:
            mod = mod.with_attr("edgeconv.conv_kinds", dict(state.stats))
        message = generic_ops_warning(_generic_ops(mod))
        if message:
            # not an error (the model still compiles and runs), but never a silent slow path
            warnings.warn(message, stacklevel=2)
        return mod

    def _rewrite(self, func: relax.Function, state: _Lowering) -> relax.Function:
        for acts in (self.biased_acts, self.plain_acts):
            uses = _bound_uses(func)
            func = rewrite_call(acts.pattern, lambda orig, m, acts=acts, uses=uses:
                                self._with_act(orig, m, acts, state, uses), func)
        uses = _bound_uses(func)
        func = rewrite_call(self.biased, lambda orig, m: orig if _shared(uses, m, self.conv) else
                            _or(orig, state.lower(m[self.conv], m[self.bias])), func)
        func = rewrite_call(self.conv, lambda orig, _m: _or(orig, state.lower(orig)), func)
        func = rewrite_call(self.matmul, lambda orig, _m: _or(orig, state.lower_matmul(orig)), func)
        if state.deform_specs:
            func = rewrite_call(self.call_tir, lambda orig, _m: _or(orig, state.lower_deform(orig)), func)
        if self.fuse_separable:
            counts = _use_counts(func)
            func = rewrite_call(self.separable, lambda orig, m: self._fuse(orig, m, state, counts), func)
        return func

    def _with_act(self, orig, m, acts: _ActPatterns, state: _Lowering, uses: dict):
        act, clp = acts.act_of(orig, m)
        if act is None or _shared(uses, m, self.conv, self.add_cb, self.add_bc, acts.max, acts.min):
            return orig
        return _or(orig, state.lower(m[self.conv], m[self.bias] if self.bias in m else None, act, clp))

    def _fuse(self, orig, m, state: _Lowering, counts: dict):
        """call_tir(depthwise) -> reshape -> call_tir(pointwise, flattened) -> reshape => one kernel."""
        pw_call, dw_call, reshape_in = m[self.pw_call], m[self.dw_call], m[self.pw_in]
        dw, pw = state.specs.get(dw_call.args[0]), state.specs.get(pw_call.args[0])
        if dw is None or pw is None:
            return orig
        if dw.block or pw.block:
            return orig  # the fused kernel is NCHW; blocked layouts run the two kernels
        if not (dw.depthwise_like and dw.groups == dw.C and pw.kind == "pointwise" and pw.H == 1):
            return orig
        if pw.C != dw.O or pw.W != dw.OH * dw.OW or pw.N != dw.N:
            return orig
        dw_var = reshape_in.args[0]
        if isinstance(dw_var, relax.Var) and counts.get(dw_var, 0) > 1:
            return orig  # the depthwise result is needed elsewhere too
        if (dw.N or 1) * dw.O * dw.OH * dw.OW * 4 < _SEPARABLE_FUSE_MIN_BYTES:
            return orig  # small intermediate stays in cache: separate kernels tile better
        pw2 = dataclasses.replace(pw, H=dw.OH, W=dw.OW)
        gv = state.separable(dw, pw2)
        if gv is None:
            return orig
        args = list(dw_call.args[1].fields) + list(pw_call.args[1].fields[1:])
        return relax.call_tir(gv, args, orig.ty)  # the reshape back to (N, O, OH, OW)


def _or(orig, new):
    return orig if new is None else new


def _bound_uses(func: relax.Function) -> dict:
    """bound value -> number of uses of the variable it is bound to."""
    counts = _use_counts(func)
    return {bd.value: counts.get(bd.var, 0) for blk in func.body.blocks for bd in blk.bindings}


def _shared(uses: dict, m, *pats) -> bool:
    """Whether an intermediate of the match is used elsewhere too (hardswish: y * clip(y + 3)):
    fusing would then compute the conv twice."""
    return any(uses.get(m[p], 0) > 1 for p in pats if p in m)


def ClampAsOps() -> tvm.transform.Pass:
    """``call_tir(maximum|minimum, x, scalar const)`` -> ``relax.maximum|minimum``.

    The ONNX frontend emits ``Clip`` (ReLU6) as call_tir of TOPI kernels; as Relax ops they
    keep their layout under ``ConvertLayout`` and fuse into our conv kernels.
    """
    pattern = is_op("relax.call_tir")(wildcard(), TuplePattern([wildcard(), is_const()]))
    ops = {"maximum": relax.op.maximum, "minimum": relax.op.minimum}

    def _rewriter(orig, _m):
        kind = tir_name(orig).rstrip("0123456789_")
        x, c = orig.args[1].fields
        if kind not in ops or scalar(c) is None or orig.ty.dtype != c.ty.dtype:
            return orig
        return ops[kind](x, c)

    return functions_pass("edgeconv.ClampAsOps", lambda f, _b: rewrite_call(pattern, _rewriter, f))


def TakeClipped() -> tvm.transform.Pass:
    """``take(x, i, mode="fast")`` -> ``mode="clip"``.

    TVM legalizes ``fast`` to unchecked loads and prints "Fast mode segfaults when there are
    out-of-bounds indices" for every such gather. ``clip`` is identical for in-bound indices
    (ONNX Gather requires them; the ONNX frontend already wraps negative ones; the deformable
    fallback's gathers use constant indices 0/1 on an axis of extent 2) and turns an
    out-of-bound index into a clamped read instead of a wild one, at one min/max per index.
    """
    pattern = is_op("relax.take")(wildcard(), wildcard())

    def _rewriter(orig, _m):
        if str(orig.attrs.mode) != "fast":
            return orig
        axis = orig.attrs.axis
        return relax.op.take(orig.args[0], orig.args[1], None if axis is None else int(axis), mode="clip")

    return functions_pass("edgeconv.TakeClipped", lambda f, _b: rewrite_call(pattern, _rewriter, f))


def edgeconv_stage1(family: str | None = None, tinfo: TargetInfo | None = None, fuse: bool = True,
                    layout: str = "blocked", overrides: PlanOverrides = DEFAULT_OVERRIDES):
    """Our conv lowering, then stock legalization (and fusion) of every other op.

    ``layout``: ``"blocked"`` (NCHW[b]c wherever the blocked kernel applies) or ``"nchw"``.
    ``overrides``: explicit planner choices for the NCHW kernels (experiments; part of the
    kernel cache key).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")

    @tvm.transform.module_pass(opt_level=0, name="edgeconv_stage1")
    def _stage1(mod: tvm.ir.IRModule, _ctx) -> tvm.ir.IRModule:
        target = tvm.target.Target.current(allow_none=True)
        info = tinfo or target_info(target, family)
        passes = [
            TakeClipped(),  # before FoldConstants, whose fallback legalizes what it folds
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
            FoldConstants(),
            ClampAsOps(),
            *([SplitAsSections(), BlockedLayout(info), BlockedChannelShuffle()] if layout == "blocked" else []),
            LowerConv2d(info, overrides=overrides),
            ScheduleLayoutTransforms(),
            relax.transform.DeadCodeElimination(),
            *cpu_generic.library_dispatch_passes(target),
            LegalizeVectorMath(),  # sigmoid on a vectorisable exp; the stock LegalizeOps does the rest
            # TVM's CPU legalization: LegalizeOps, then (with fuse) pattern annotation and fusion
            *(cpu_generic.legalize_passes(target) if fuse else [relax.transform.LegalizeOps()]),
        ]
        return tvm.transform.Sequential(passes)(mod)

    return _stage1


def edgeconv_stage2():
    """TVM's CPU dataflow lowering and finalization (memory planning, VM lowering)."""

    @tvm.transform.module_pass(opt_level=0, name="edgeconv_stage2")
    def _stage2(mod: tvm.ir.IRModule, _ctx) -> tvm.ir.IRModule:
        target = tvm.target.Target.current(allow_none=True)
        passes = cpu_generic.dataflow_lower_passes(target) + cpu_generic.finalize_passes(target)
        return tvm.transform.Sequential(passes)(mod)

    return _stage2


def edgeconv_pipeline(family: str | None = None, tinfo: TargetInfo | None = None, fuse: bool = True,
                      layout: str = "blocked", overrides: PlanOverrides = DEFAULT_OVERRIDES):
    """The full Relax pipeline: our conv lowering, then stock legalize/fuse/lower/finalize."""
    stage1 = edgeconv_stage1(family, tinfo, fuse, layout, overrides)

    @tvm.transform.module_pass(opt_level=0, name=f"edgeconv_pipeline_{family or 'auto'}")
    def _pipeline(mod: tvm.ir.IRModule, _ctx) -> tvm.ir.IRModule:
        mod = stage1(mod)
        # the elementwise chains and reductions that legalization leaves unscheduled
        lanes = (tinfo or target_info(tvm.target.Target.current(allow_none=True), family)).lanes
        mod = ScheduleGenericOps(lanes)(mod)
        return edgeconv_stage2()(mod)

    return _pipeline


def register_pipelines():
    """Register ``edgeconv_x86`` / ``edgeconv_arm`` in relax's pipeline map (idempotent)."""
    from tvm.relax import pipeline as _rp

    if PIPELINE_X86 not in _rp.PIPELINE_MAP:
        _rp.register_pipeline(PIPELINE_X86)(lambda **kw: edgeconv_pipeline("x86", **kw))
    if PIPELINE_ARM not in _rp.PIPELINE_MAP:
        _rp.register_pipeline(PIPELINE_ARM)(lambda **kw: edgeconv_pipeline("arm", **kw))


register_pipelines()
