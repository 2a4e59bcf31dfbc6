"""Relax passes and named pipelines that route every conv2d through edgeconv's scheduled kernels.

``LowerConv2d`` is a module pass built on ``relax.dpl`` pattern rewriting. It matches, in order,

1. ``act(add(conv2d(x, w), bias_const))``  -> one kernel with fused bias + activation, where
   ``act`` is relu, clip, or a max/min clamp with scalar constants (ONNX ``Clip`` with inputs)
2. ``act(conv2d(x, w))``                     -> one kernel with fused activation
3. ``add(conv2d(x, w), bias_const)``         -> one kernel with fused bias
4. ``conv2d(x, w)``                          -> one kernel
5. ``matmul(a, b)`` with unit leading dims   -> the pointwise kernel on reshaped views

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
from .conv import ConvSpec, TargetInfo, schedule_conv2d, schedule_separable, separable_name
from .conv_blocked import schedule_blocked
from .elementwise import LegalizeVectorMath, ScheduleGenericOps
from .gemv import is_gemv, lower_gemv
from .layout import BlockedChannelShuffle, BlockedLayout, ScheduleLayoutTransforms, SplitAsSections

__all__ = [
    "LowerConv2d",
    "ClampAsOps",
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


class LowerConv2dImpl:
    """Rewrites conv2d (+ bias + activation) into call_tir of scheduled TensorIR."""

    def __init__(self, tinfo: TargetInfo, builder: relax.BlockBuilder, fuse_separable: bool = True):
        self.tinfo = tinfo
        self.fuse_separable = fuse_separable
        self.builder = builder
        self.gvars: dict[str, tvm.ir.GlobalVar] = {}
        self.stats: dict[str, int] = {}
        self.specs: dict[str, ConvSpec] = {}
        self.unlowered: list[str] = []  # why a conv2d was left to TVM's generic lowering

    def _gvar(self, spec: ConvSpec) -> tvm.ir.GlobalVar:
        name = spec.name()
        if name not in self.gvars:
            func = schedule_blocked(spec, self.tinfo) if spec.block else schedule_conv2d(spec, self.tinfo)
            func = func.with_attr({"op_pattern": OPAQUE, "edgeconv.kind": spec.kind})
            self.gvars[name] = self.builder.add_func(func, name)
            self.specs[name] = spec
        self.stats[spec.kind] = self.stats.get(spec.kind, 0) + 1
        return self.gvars[name]

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
        out_shape = _data_shape(spec, spec.N, spec.O, spec.OH, spec.OW)
        if is_gemv(spec, conv.args[1]):
            return lower_gemv(conv, spec, self._gvar, bias_vec, out_shape, self.tinfo.lanes)
        if spec.KH == spec.KW == 1 and spec.stride == (1, 1) and spec.padding == (0, 0, 0, 0) \
                and spec.groups == 1 and spec.H > 1:
            # pointwise on the flattened spatial axis (a free reshape): the register tile is
            # not limited by the row width
            spec = dataclasses.replace(spec, H=1, W=spec.H * spec.W)
            args[0] = relax.op.reshape(args[0], _data_shape(spec, spec.N, spec.C, 1, spec.W))
        kernel_out = _data_shape(spec, spec.N, spec.O, spec.OH, spec.OW)
        call = relax.call_tir(self._gvar(spec), args, relax.TensorType(kernel_out, "float32"))
        return call if kernel_out == out_shape else relax.op.reshape(call, out_shape)


    def lower_matmul(self, call: relax.Call):
        """``matmul(a (.., M, K), b (.., K, N))`` with unit leading dims -> our pointwise kernel on
        ``b`` viewed as 1 x K x 1 x N, ``a`` as M x K x 1 x 1 weights (TVM legalizes matmul to an
        unscheduled loop nest: 2.8 ms for the 64x576x64 product of a decomposed deformable conv).
        """
        a, b = static_shape(call.args[0]), static_shape(call.args[1])
        out = static_shape(call)
        if a is None or b is None or out is None or len(a) < 2 or len(b) < 2:
            return None
        if any(arg.ty.dtype != "float32" for arg in call.args) or str(call.attrs.out_dtype) not in ("", "float32",
                                                                                                  "None"):
            return None
        if math.prod(a[:-2]) != 1 or math.prod(b[:-2]) != 1:
            return None
        (M, K), N = a[-2:], b[-1]
        spec = ConvSpec(1, K, 1, N, M, 1, 1)
        data = relax.op.reshape(call.args[1], [1, K, 1, N])
        weight = relax.op.reshape(call.args[0], [M, K, 1, 1])
        res = relax.call_tir(self._gvar(spec), [data, weight], relax.TensorType([1, M, 1, N], "float32"))
        return relax.op.reshape(res, out)


def _data_shape(spec: ConvSpec, n: int, c: int, h: int, w: int) -> list[int]:
    return [n, c // spec.block, h, w, spec.block] if spec.block else [n, c, h, w]


def _bias_shape(spec: ConvSpec) -> tuple:
    return (spec.O // spec.block, spec.block) if spec.block else (spec.O,)


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


def _fuse_separable(func: relax.Function, impl: LowerConv2dImpl) -> relax.Function:
    """call_tir(depthwise) -> reshape -> call_tir(pointwise, flattened) -> reshape  => one kernel."""
    counts = _use_counts(func)
    dwc = is_op("relax.call_tir")(wildcard(), wildcard())
    pw_in = is_op("relax.reshape")(dwc, wildcard())
    pwc = is_op("relax.call_tir")(wildcard(), TuplePattern([pw_in, wildcard(), wildcard()])) | is_op(
        "relax.call_tir"
    )(wildcard(), TuplePattern([pw_in, wildcard()]))
    root = is_op("relax.reshape")(pwc, wildcard())

    def _rewriter(orig, m):
        pw_call, dw_call, reshape_in = m[pwc], m[dwc], m[pw_in]
        dw = impl.specs.get(tir_name(dw_call))
        pw = impl.specs.get(tir_name(pw_call))
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
        if dw.N * dw.O * dw.OH * dw.OW * 4 < _SEPARABLE_FUSE_MIN_BYTES:
            return orig  # small intermediate stays in cache: separate kernels tile better
        pw2 = dataclasses.replace(pw, H=dw.OH, W=dw.OW)
        name = separable_name(dw, pw2)
        if name not in impl.gvars:
            pf = schedule_separable(dw, pw2, impl.tinfo)
            if pf is None:
                return orig
            pf = pf.with_attr({"op_pattern": OPAQUE, "edgeconv.kind": "separable"})
            impl.gvars[name] = impl.builder.add_func(pf, name)
        impl.stats["separable_fused"] = impl.stats.get("separable_fused", 0) + 1
        args = list(dw_call.args[1].fields) + list(pw_call.args[1].fields[1:])
        return relax.call_tir(impl.gvars[name], args, relax.TensorType([pw2.N, pw2.O, pw2.OH, pw2.OW], "float32"))

    return rewrite_call(root, _rewriter, func)


def _why_not_lowered(conv: relax.Call) -> str:
    x, w = conv.args[0].ty, conv.args[1].ty
    if static_shape(conv.args[0]) is None or static_shape(conv.args[1]) is None:
        return f"symbolic shape {x.shape} * {w.shape}"
    if x.dtype != "float32" or w.dtype != "float32":
        return f"dtype {x.dtype}"
    return f"layout {conv.attrs.data_layout}/{conv.attrs.kernel_layout}"


def _rewrite_function(func: relax.Function, impl: LowerConv2dImpl) -> relax.Function:
    """conv2d [+ bias] [+ relu | clip | max/min clamp] -> call_tir, longest match first."""
    x, b = wildcard(), is_const()
    conv = is_op("relax.nn.conv2d")(x, wildcard())
    add_cb, add_bc = is_op("relax.add")(conv, b), is_op("relax.add")(b, conv)
    biased = add_cb | add_bc
    uses: dict = {}  # bound value -> number of uses of its variable, of the function being rewritten

    def _shared(m, *pats) -> bool:
        """Whether an intermediate of the match is used elsewhere too (hardswish: y * clip(y + 3)):
        fusing would then compute the conv twice."""
        return any(uses.get(m[p], 0) > 1 for p in pats if p in m)
    c1, c2 = is_const(), is_const()

    def _acts(base):
        pats = {
            "relu": is_op("relax.nn.relu")(base),
            "clip": is_op("relax.clip")(base, wildcard(), wildcard()),
            "max": is_op("relax.maximum")(base, c1),
            "min": is_op("relax.minimum")(base, c1),
        }
        pats["minmax"] = is_op("relax.minimum")(pats["max"], c2) | is_op("relax.maximum")(pats["min"], c2)
        order = ["relu", "clip", "minmax", "max", "min"]
        pattern = pats[order[0]]
        for k in order[1:]:
            pattern = pattern | pats[k]
        return pattern, pats

    def _bound(kind: str, c):
        """('lo'|'hi', value) for a maximum/minimum with scalar constant c."""
        v = scalar(c)
        if v is None:
            return None
        if kind.startswith("maximum"):
            return "lo", v
        if kind.startswith("minimum"):
            return "hi", v
        return None

    def _act_of(orig, m, pats):
        op = orig.op.name
        if op == "relax.nn.relu":
            return "relu", None
        if op == "relax.clip":
            clp = _clip_bounds(orig)
            return ("clip", clp) if clp is not None else (None, None)
        # one or two max/min steps: collect (kind, const) from outer to inner
        steps = [(op.split(".")[-1], m[c2] if c2 in m else m[c1])]
        if c2 in m:
            inner = m[pats["max"]] if pats["max"] in m else m[pats["min"]]
            steps.append((inner.op.name.split(".")[-1], m[c1]))
        lo = hi = None
        for name, c in steps:
            got = _bound(name, c)
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

    def _make_act_rewriter(pats):
        def _rewriter(orig, m):
            act, clp = _act_of(orig, m, pats)
            if act is None or _shared(m, conv, add_cb, add_bc, pats["max"], pats["min"]):
                return orig
            new = impl.lower(m[conv], m[b] if b in m else None, act, clp)
            return orig if new is None else new

        return _rewriter

    def _bias_rewriter(orig, m):
        if _shared(m, conv):
            return orig
        new = impl.lower(m[conv], m[b])
        return orig if new is None else new

    def _conv_rewriter(orig, m):
        new = impl.lower(orig)
        if new is None:
            impl.unlowered.append(_why_not_lowered(orig))
        return orig if new is None else new

    def _matmul_rewriter(orig, _m):
        new = impl.lower_matmul(orig)
        return orig if new is None else new

    def _fused(pattern, rewriter, func):
        counts = _use_counts(func)
        uses.clear()
        uses.update({bd.value: counts.get(bd.var, 0) for blk in func.body.blocks for bd in blk.bindings})
        return rewrite_call(pattern, rewriter, func)

    pattern, pats = _acts(biased)
    func = _fused(pattern, _make_act_rewriter(pats), func)
    pattern, pats = _acts(conv)
    func = _fused(pattern, _make_act_rewriter(pats), func)
    func = _fused(biased, _bias_rewriter, func)
    func = rewrite_call(conv, _conv_rewriter, func)
    func = rewrite_call(is_op("relax.matmul")(wildcard(), wildcard()), _matmul_rewriter, func)
    if impl.fuse_separable:
        func = _fuse_separable(func, impl)
    return func


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


def LowerConv2d(tinfo: TargetInfo | None = None, family: str | None = None) -> tvm.transform.Pass:
    """Module pass: every static NCHW float32 conv2d -> scheduled TensorIR kernel (call_tir)."""

    @tvm.transform.module_pass(opt_level=0, name="edgeconv.LowerConv2d")
    def _pass(mod: tvm.ir.IRModule, _ctx) -> tvm.ir.IRModule:
        info = tinfo or target_info(family=family)
        builder = relax.BlockBuilder(mod)
        impl = LowerConv2dImpl(info, builder)
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                builder.update_func(gv, _rewrite_function(func, impl))
        mod = builder.get()
        # drop our kernels that a later match (separable fusion) made unused
        used = set()
        for _, func in mod.functions_items():
            if isinstance(func, relax.Function):
                used.update(gv.name_hint for gv in relax.analysis.all_global_vars(func))
        for name, gv in impl.gvars.items():
            if name not in used and name in [g.name_hint for g in mod.get_global_vars()]:
                del mod[gv]
        if impl.stats:
            mod = mod.with_attr("edgeconv.conv_kinds", {k: v for k, v in impl.stats.items()})
        if impl.unlowered:
            # not an error (the model still compiles and runs), but never a silent slow path
            warnings.warn(
                f"edgeconv: {len(impl.unlowered)} conv2d left to TVM's generic, unscheduled lowering "
                f"({'; '.join(sorted(set(impl.unlowered)))}); edgeconv's kernels need static float32 "
                "NCHW shapes: fix symbolic dims with compile_tvm(..., input_shapes={name: shape})",
                stacklevel=2,
            )
        return mod

    return _pass


def edgeconv_stage1(family: str | None = None, tinfo: TargetInfo | None = None, fuse: bool = True,
                    layout: str = "blocked"):
    """Our conv lowering, then stock legalization (and fusion) of every other op.

    ``layout``: ``"blocked"`` (NCHW[b]c wherever the blocked kernel applies) or ``"nchw"``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")

    @tvm.transform.module_pass(opt_level=0, name="edgeconv_stage1")
    def _stage1(mod: tvm.ir.IRModule, _ctx) -> tvm.ir.IRModule:
        target = tvm.target.Target.current(allow_none=True)
        info = tinfo or target_info(target, family)
        passes = [
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
            relax.transform.FoldConstant(),
            ClampAsOps(),
            *([SplitAsSections(), BlockedLayout(info), BlockedChannelShuffle()] if layout == "blocked" else []),
            LowerConv2d(info),
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
                      layout: str = "blocked"):
    """The full Relax pipeline: our conv lowering, then stock legalize/fuse/lower/finalize."""
    stage1 = edgeconv_stage1(family, tinfo, fuse, layout)

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
