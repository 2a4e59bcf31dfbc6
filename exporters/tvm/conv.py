"""One TE compute definition for every conv2d kind, and its CPU schedules.

The compute (:func:`conv2d_compute`) covers dense, grouped, depthwise (with channel multiplier),
pointwise, dilated, strided and spatially separable (kx1 / 1xk) convolutions in NCHW, with an
optional fused epilogue (per-channel bias and relu / clip). The output width is padded up to a
multiple of the vector width inside the kernel (a local accumulator stage) and cropped by the
epilogue, so that the vector loop never needs a tail predicate.

Schedules (:func:`schedule_conv2d`) are chosen by *kind* (depthwise-like = one input channel per
group, grouped/dense otherwise) and parameterised by the *target family* (:class:`TargetInfo`:
vector lanes, register budget), so x86 (AVX2/AVX-512) and arm (NEON) share the same compute and
the same schedule code:

* depthwise: parallel over (batch, channel); the zero-padded input plane is produced at the
  channel loop (stays in L1/L2); output rows are vectorised along W with several vectors of
  accumulators kept in registers, kernel taps fully unrolled.
* grouped / dense / pointwise: padded input produced once (parallel), then parallel over
  (batch, output-channel block, output row); register tile = ``ob`` output channels x ``wu``
  vectors along W; reduction over (input channel of the group, kh, kw) outside the tile.

Both variants write the epilogue (bias, activation, crop) straight from the register tile.
"""

from __future__ import annotations

import dataclasses
import functools

from tvm import te, tirx
from tvm import s_tir

__all__ = [
    "ConvSpec",
    "TargetInfo",
    "Plan",
    "PlanOverrides",
    "plan_conv2d",
    "conv2d_compute",
    "conv2d_primfunc",
    "schedule_conv2d",
    "separable_compute",
    "schedule_separable",
]


@dataclasses.dataclass(frozen=True)
class TargetInfo:
    """What a schedule needs to know about the target family."""

    family: str = "x86"  # "x86" or "arm"
    lanes: int = 8  # float32 lanes per vector register
    vregs: int = 16  # architectural vector registers

    @property
    def acc_budget(self) -> int:
        """How many vector accumulators a register tile may use."""
        return max(4, self.vregs // 2)


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """A conv2d (NCHW / OIHW) with its fused epilogue; every dim static but the batch
    (``N=None``: symbolic, the batch is the kernel's outermost loop)."""

    N: int | None
    C: int
    H: int
    W: int
    O: int
    KH: int
    KW: int
    stride: tuple = (1, 1)
    padding: tuple = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: tuple = (1, 1)
    groups: int = 1
    bias: bool = False
    act: str | None = None  # None, "relu", "clip"
    clip: tuple = (0.0, 6.0)  # (lo, hi) of "clip"; either may be None (one-sided)
    dtype: str = "float32"
    block: int = 0  # 0: NCHW / OIHW; b: NCHW[b]c / OIHW[b]i[b]o (see conv_blocked)

    @property
    def Cg(self) -> int:
        return self.C // self.groups

    @property
    def Og(self) -> int:
        return self.O // self.groups

    @property
    def OH(self) -> int:
        pt, _, pb, _ = self.padding
        return (self.H + pt + pb - (self.KH - 1) * self.dilation[0] - 1) // self.stride[0] + 1

    @property
    def OW(self) -> int:
        _, pl, _, pr = self.padding
        return (self.W + pl + pr - (self.KW - 1) * self.dilation[1] - 1) // self.stride[1] + 1

    @property
    def kind(self) -> str:
        if self.Cg == 1:
            return "depthwise" if self.groups > 1 or self.C == 1 else "dense"
        if self.groups > 1:
            return "group"
        if self.KH == 1 and self.KW == 1:
            return "pointwise"
        return "dense"

    @property
    def depthwise_like(self) -> bool:
        return self.Cg == 1

    def name(self) -> str:
        k = f"{self.KH}x{self.KW}"
        s = f"s{self.stride[0]}" if self.stride[0] == self.stride[1] else f"s{self.stride[0]}x{self.stride[1]}"
        d = "" if self.dilation == (1, 1) else f"_d{self.dilation[0]}x{self.dilation[1]}"
        p = "" if not any(self.padding) else "_p" + "x".join(str(v) for v in self.padding)
        g = f"_g{self.groups}" if self.groups > 1 else ""
        e = ("_b" if self.bias else "") + (f"_{self.act}" if self.act else "")
        if self.act == "clip":
            e += "_" + "_".join("n" if v is None else f"{v:g}".replace("-", "m").replace(".", "p") for v in self.clip)
        lay = f"_nchw{self.block}c" if self.block else ""
        t = "" if self.dtype == "float32" else f"_{self.dtype}"
        n = "n" if self.N is None else self.N
        return f"ec_{self.kind}_{k}_{s}{p}{d}{g}_{n}x{self.C}x{self.H}x{self.W}_to{self.O}{e}{lay}{t}"


def batch_extent(spec: ConvSpec):
    """The batch extent of a kernel's tensors: the static N, or one symbolic var per kernel."""
    return te.var("batch", "int64") if spec.N is None else spec.N


def _round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


@dataclasses.dataclass(frozen=True)
class PlanOverrides:
    """Explicit overrides of the NCHW planner's choices (experiments, benchmarks).

    Part of every schedule cache key: two compiles with different overrides never share a
    kernel. The defaults are the measured best choices on AVX2.
    """

    dw_max_wu: int = 2  # depthwise: most W vectors per register tile (the taps also need registers)
    dw_hb: int = 2  # depthwise: output rows per register tile (when OH allows)
    tile: tuple | None = None  # grouped/dense: force (ob, hb, wu)
    order: str = "wt_oo"  # grouped/dense: "wt_oo" (channel tiles inside W tiles) or "oo_wt"
    rc_unroll: int = 1  # 1x1: unroll of the channel reduction

    def __post_init__(self):
        if self.order not in ("wt_oo", "oo_wt"):
            raise ValueError(f"PlanOverrides.order must be 'wt_oo' or 'oo_wt', got {self.order!r}")
        if self.tile is not None and (len(self.tile) != 3 or min(self.tile) < 1):
            raise ValueError(f"PlanOverrides.tile must be (ob, hb, wu) >= 1, got {self.tile!r}")


DEFAULT_OVERRIDES = PlanOverrides()


@dataclasses.dataclass(frozen=True)
class Plan:
    """Tiling decisions shared by the compute (padded width) and the schedule."""

    vec: int  # vector lanes along W (1: narrow rows, scalar)
    wu: int  # vectors per register tile along W
    ob: int  # output channels per register tile
    OWp: int  # output width padded to a multiple of vec * wu
    chunk: int  # register tiles per parallel chunk along W (cache blocking)
    hb: int = 1  # output rows per register tile
    order: str = "wt_oo"  # loop order of the grouped/dense tile loops (see PlanOverrides)
    rc_unroll: int = 1  # 1x1: unroll of the channel reduction


def plan_conv2d(spec: ConvSpec, tinfo: TargetInfo, overrides: PlanOverrides = DEFAULT_OVERRIDES) -> Plan:
    lanes = tinfo.lanes
    OW = spec.OW
    vec = lanes if OW >= lanes else 1
    budget = tinfo.acc_budget
    if spec.depthwise_like:
        obs = [1]
        # 2 rows x 2 vectors of accumulators: the 9..49 hoisted weights also need registers
        max_wu = overrides.dw_max_wu if vec > 1 else 8
    else:
        obs = [d for d in range(1, min(spec.Og, 8) + 1) if spec.Og % d == 0]
        max_wu = 6 if vec > 1 else 8
    hbs = [1]
    if not spec.depthwise_like and spec.OH > 1 and vec > 1:
        hbs = [d for d in (1, 2, 3, 4) if spec.OH % d == 0]
    dw_hb = overrides.dw_hb
    best = None
    for ob in obs:
        for hb in hbs:
            for wu in range(1, max_wu + 1):
                acc = ob * hb * wu
                if vec > 1 and acc > budget:
                    continue
                tile = wu * vec
                if vec == 1 and tile > OW:
                    continue
                OWp = _round_up(OW, tile)
                waste = OW / OWp
                if vec == 1 and OWp != OW:
                    continue
                if spec.depthwise_like:
                    score = min(wu, 4) * waste * waste
                else:
                    # enough independent accumulators to cover FMA latency, then FMA per load
                    # (input vectors + broadcast weights), discounted by padding waste
                    lat = min(acc, 8) / 8
                    score = lat * (acc / (ob + hb * wu)) ** 0.5 * waste
                key = (round(score, 3), acc, ob, -hb)
                if best is None or key > best[0]:
                    best = (key, ob, hb, wu, OWp)
    _, ob, hb, wu, OWp = best
    if spec.depthwise_like and vec > 1 and spec.OH % dw_hb == 0:
        hb = dw_hb
    if overrides.tile is not None and not spec.depthwise_like:
        ob, hb, wu = overrides.tile
        OWp = _round_up(OW, wu * vec)
    OWp, chunk = w_chunks(OW, OWp, wu * vec)
    return Plan(vec, wu, ob, OWp, chunk, hb, overrides.order, overrides.rc_unroll)


def w_chunks(OW: int, OWp: int, tile: int, target: int = 128) -> tuple[int, int]:
    """Cache blocking along W: (padded width, register tiles per parallel chunk).

    Rows up to 256 columns are one chunk; longer (flattened pointwise) rows are cut into chunks
    of about ``target`` columns, choosing the chunk that pads least.
    """
    if OWp <= 256:
        return OWp, OWp // tile
    want = max(1, target // tile)
    OWp, negc = min((_round_up(OW, c * tile), -c) for c in range(max(1, want // 2), want + 1))
    return OWp, -negc


def _stage_input(data, spec: ConvSpec, OWp: int, deinterleave: bool):
    """Zero padding (and W de-interleaving for strided convs) of ``data``.

    Returns ``load(n, c, h_in, w_out, rw)`` that reads the input tap of output column ``w_out``.
    """
    N, C, H, W = data.shape[0], spec.C, spec.H, spec.W
    KH, KW = spec.KH, spec.KW
    sh, sw = spec.stride
    dh, dw = spec.dilation
    pt, pl, _, _ = spec.padding
    OH = spec.OH
    PH = (OH - 1) * sh + (KH - 1) * dh + 1
    PW = (OWp - 1) * sw + (KW - 1) * dw + 1
    zero = tirx.const(0, spec.dtype)

    def _padded(n, c, h, w):
        cond = tirx.all(h >= pt, h < pt + H, w >= pl, w < pl + W)
        return tirx.if_then_else(tirx.likely(cond), data[n, c, h - pt, w - pl], zero)

    if deinterleave and sw > 1:
        # W-strided conv: the (zero-padded) input is de-interleaved by phase,
        # P[n, c, h, r, j] = padded[n, c, h, j * sw + r], so that every kernel tap reads
        # unit-stride vectors (tap offset t = rw*dw -> phase t % sw, column w + t // sw).
        PWj = (PW + sw - 1) // sw
        need_pad = pt > 0 or pl > 0 or PH > H or PWj * sw > W
        padded = te.compute((N, C, PH, PWj * sw), _padded, name="ec_pad") if need_pad else data
        src = te.compute((N, C, PH, sw, PWj), lambda n, c, h, r, j: padded[n, c, h, j * sw + r],
                         name="ec_deint")

        def _load(n, c, h, w, rw):
            t = rw * dw
            return src[n, c, h, t % sw, w + t // sw]

        return _load

    need_pad = pt > 0 or pl > 0 or PH > H or PW > W
    src = te.compute((N, C, PH, PW), _padded, name="ec_pad") if need_pad else data

    def _load(n, c, h, w, rw):
        return src[n, c, h, w * sw + rw * dw]

    return _load


def _epilogue(v, spec: ConvSpec, bias, o):
    dtype = spec.dtype
    if bias is not None:
        v = v + bias[o]
    if spec.act == "relu":
        v = tirx.max(v, tirx.const(0, dtype))
    elif spec.act == "clip":
        lo, hi = spec.clip
        if lo is not None:
            v = tirx.max(v, tirx.const(lo, dtype))
        if hi is not None:
            v = tirx.min(v, tirx.const(hi, dtype))
    return v


def _conv_stage(load, weight, spec: ConvSpec, N, OWp: int, name: str):
    KH, KW = spec.KH, spec.KW
    sh = spec.stride[0]
    dh = spec.dilation[0]
    Cg, Og = spec.Cg, spec.Og
    rc = te.reduce_axis((0, Cg), name="rc")
    rh = te.reduce_axis((0, KH), name="rh")
    rw = te.reduce_axis((0, KW), name="rw")

    def _conv(n, o, h, w):
        c = (o // Og) * Cg + rc
        return te.sum(load(n, c, h * sh + rh * dh, w, rw) * weight[o, rc, rh, rw], axis=[rc, rh, rw])

    return te.compute((N, spec.O, spec.OH, OWp), _conv, name=name)


def conv2d_compute(spec: ConvSpec, OWp: int | None = None, deinterleave: bool = False):
    """The TE compute. Returns (inputs, output) where inputs = [data, weight(, bias)].

    ``OWp`` >= OW is the width of the accumulator stage (a multiple of the register tile), the
    epilogue ``ec_out`` crops it back to OW.
    """
    OWp = OWp or spec.OW
    dtype = spec.dtype
    N = batch_extent(spec)
    data = te.placeholder((N, spec.C, spec.H, spec.W), dtype, name="data")
    weight = te.placeholder((spec.O, spec.Cg, spec.KH, spec.KW), dtype, name="weight")
    bias = te.placeholder((spec.O,), dtype, name="bias") if spec.bias else None
    load = _stage_input(data, spec, OWp, deinterleave)
    acc = _conv_stage(load, weight, spec, N, OWp, "ec_conv")
    out = te.compute((N, spec.O, spec.OH, spec.OW),
                     lambda n, o, h, w: _epilogue(acc[n, o, h, w], spec, bias, o), name="ec_out")
    inputs = [data, weight] + ([bias] if bias is not None else [])
    return inputs, out


def separable_compute(dw: ConvSpec, pw: ConvSpec, OWp: int, deinterleave: bool = False):
    """Depthwise (any stride/dilation/multiplier, fused epilogue) then pointwise 1x1 in one kernel.

    The depthwise result ``ec_dw`` never reaches memory as a whole: the schedule produces it per
    (row block, column chunk) right before the pointwise register tiles consume it.
    """
    dtype = dw.dtype
    N = batch_extent(dw)
    data = te.placeholder((N, dw.C, dw.H, dw.W), dtype, name="data")
    wd = te.placeholder((dw.O, 1, dw.KH, dw.KW), dtype, name="weight_dw")
    bd = te.placeholder((dw.O,), dtype, name="bias_dw") if dw.bias else None
    wp = te.placeholder((pw.O, pw.C, 1, 1), dtype, name="weight_pw")
    bp = te.placeholder((pw.O,), dtype, name="bias_pw") if pw.bias else None
    load = _stage_input(data, dw, OWp, deinterleave)
    dacc = _conv_stage(load, wd, dw, N, OWp, "ec_dwconv")
    dout = te.compute((N, dw.O, dw.OH, OWp), lambda n, c, h, w: _epilogue(dacc[n, c, h, w], dw, bd, c),
                      name="ec_dw")
    rc = te.reduce_axis((0, pw.C), name="rc")
    rh = te.reduce_axis((0, 1), name="rh")
    rw = te.reduce_axis((0, 1), name="rw")
    acc = te.compute(
        (N, pw.O, pw.OH, OWp),
        lambda n, o, h, w: te.sum(dout[n, rc, h + rh, w + rw] * wp[o, rc, rh, rw], axis=[rc, rh, rw]),
        name="ec_conv",
    )
    out = te.compute((N, pw.O, pw.OH, pw.OW), lambda n, o, h, w: _epilogue(acc[n, o, h, w], pw, bp, o),
                     name="ec_out")
    inputs = [data, wd] + ([bd] if bd is not None else []) + [wp] + ([bp] if bp is not None else [])
    return inputs, out


def separable_name(dw: ConvSpec, pw: ConvSpec) -> str:
    return "ec_separable_" + dw.name()[3:] + "__" + pw.name()[3:]


def scheduled(sch: s_tir.Schedule, name: str) -> tirx.PrimFunc:
    """The PrimFunc of a finished schedule, marked scheduled where it is created: MetaSchedule
    (tune.py) and TVM's default schedules leave functions with ``tirx.is_scheduled`` alone."""
    return sch.mod["main"].with_attr({"global_symbol": name, "tirx.is_scheduled": True})


def schedule_separable(dw: ConvSpec, pw: ConvSpec, tinfo: TargetInfo,
                       overrides: PlanOverrides = DEFAULT_OVERRIDES) -> tirx.PrimFunc | None:
    """Fused depthwise + pointwise kernel, or None if the schedule fails.

    Cached on everything that changes the code: both specs (shapes, pads, strides, dilations,
    groups, epilogue, dtype, layout), the target family and the planner overrides.
    """
    return _schedule_separable(dw, pw, tinfo, overrides)  # one cache key however it is called


@functools.lru_cache(maxsize=256)
def _schedule_separable(dw: ConvSpec, pw: ConvSpec, tinfo: TargetInfo, overrides: PlanOverrides):
    plan = plan_conv2d(pw, tinfo, overrides)
    inputs, out = separable_compute(dw, pw, plan.OWp, deinterleave=plan.vec > 1)
    name = separable_name(dw, pw)
    func = te.create_prim_func(inputs + [out]).with_attr({"global_symbol": name, "tirx.noalias": True})
    try:
        sch = s_tir.Schedule(func)
        _schedule_direct(sch, pw, tinfo, plan, fused_dw=dw)
        return scheduled(sch, name)
    except Exception as err:  # pragma: no cover
        import warnings

        warnings.warn(f"edgeconv: separable fusion skipped for {name}: {err}")
        return None


def conv2d_primfunc(spec: ConvSpec, OWp: int | None = None, deinterleave: bool = False) -> tirx.PrimFunc:
    """Unscheduled PrimFunc of the compute."""
    inputs, out = conv2d_compute(spec, OWp, deinterleave)
    func = te.create_prim_func(inputs + [out])
    return func.with_attr({"global_symbol": spec.name(), "tirx.noalias": True})


def schedule_conv2d(spec: ConvSpec, tinfo: TargetInfo, overrides: PlanOverrides = DEFAULT_OVERRIDES) -> tirx.PrimFunc:
    """Build the PrimFunc for ``spec`` and schedule it for ``tinfo``.

    Cached on (spec, target family, overrides): everything the generated code depends on.
    Falls back to the unscheduled (but correct) PrimFunc if a schedule primitive fails.
    """
    return _schedule_conv2d(spec, tinfo, overrides)  # one cache key however it is called


@functools.lru_cache(maxsize=512)
def _schedule_conv2d(spec: ConvSpec, tinfo: TargetInfo, overrides: PlanOverrides) -> tirx.PrimFunc:
    plan = plan_conv2d(spec, tinfo, overrides)
    func = conv2d_primfunc(spec, plan.OWp, deinterleave=plan.vec > 1)
    try:
        sch = s_tir.Schedule(func)
        if spec.depthwise_like:
            _schedule_depthwise(sch, spec, tinfo, plan)
        else:
            _schedule_direct(sch, spec, tinfo, plan)
        return scheduled(sch, spec.name())
    except Exception as err:  # pragma: no cover - safety net
        import warnings

        warnings.warn(f"edgeconv: schedule failed for {spec.name()}: {err}; using unscheduled kernel")
        return conv2d_primfunc(spec)


def _schedule_depthwise(sch: s_tir.Schedule, spec: ConvSpec, tinfo: TargetInfo, plan: Plan):
    conv = sch.get_sblock("ec_conv")
    out = sch.get_sblock("ec_out")
    has_pad = _has_block(sch, "ec_pad")
    sch.set_scope(conv, 0, "local")
    n, o, h, w, rc, rh, rw = sch.get_loops(conv)
    wo, wi_u, wi_v = sch.split(w, [None, plan.wu, plan.vec])
    no = sch.fuse(n, o)
    # hb output rows per register tile: input rows shared by neighbouring output rows are loaded once
    ho, hi = sch.split(h, [None, plan.hb])
    sch.reorder(no, ho, wo, rc, rh, rw, hi, wi_u, wi_v)
    sch.parallel(no)
    sch.unroll(hi)
    # epilogue straight from the register tile
    sch.reverse_compute_at(out, wo, preserve_unit_loops=True)
    if _has_block(sch, "ec_deint"):
        deint = sch.get_sblock("ec_deint")
        sch.compute_at(deint, no, preserve_unit_loops=True)
    if has_pad:
        pad = sch.get_sblock("ec_pad")
        sch.compute_at(pad, no, preserve_unit_loops=True)
        ploops = sch.get_loops(pad)
        _vectorize_inner(sch, ploops[-1], tinfo.lanes)
    if plan.vec > 1:
        sch.vectorize(wi_v)
    sch.unroll(wi_u)
    if spec.KH * spec.KW <= 49:
        sch.unroll(rh)
        sch.unroll(rw)
    sch.decompose_reduction(conv, rc)
    ol = sch.get_loops(out)
    _vectorize_inner(sch, ol[-1], tinfo.lanes)


def _schedule_direct(sch: s_tir.Schedule, spec: ConvSpec, tinfo: TargetInfo, plan: Plan, fused_dw=None):
    conv = sch.get_sblock("ec_conv")
    out = sch.get_sblock("ec_out")
    has_pad = _has_block(sch, "ec_pad")
    sch.set_scope(conv, 0, "local")
    n, o, h, w, rc, rh, rw = sch.get_loops(conv)
    oo, oi = sch.split(o, [None, plan.ob])
    ho, hi = sch.split(h, [None, plan.hb])
    wc, wt, wi_u, wi_v = sch.split(w, [None, plan.chunk, plan.wu, plan.vec])
    # parallel over (batch, row block, W-chunk); inside, all output-channel blocks reuse the input
    if plan.order == "wt_oo":
        sch.reorder(n, ho, wc, wt, oo, rc, rh, rw, oi, hi, wi_u, wi_v)
        tile_loop = oo
    else:
        sch.reorder(n, ho, wc, oo, wt, rc, rh, rw, oi, hi, wi_u, wi_v)
        tile_loop = wt
    par = sch.fuse(n, ho, wc)
    sch.unroll(hi)
    sch.parallel(par)
    sch.reverse_compute_at(out, tile_loop, preserve_unit_loops=True)
    if fused_dw is not None:
        # depthwise rows of this (row block, chunk) for all channels, right before their use
        dwb = sch.get_sblock("ec_dw")
        sch.compute_at(dwb, par, preserve_unit_loops=True)
        dacc = sch.get_sblock("ec_dwconv")
        sch.set_scope(dacc, 0, "local")
        dl = sch.get_loops(dwb)
        d_w = dl[-1]
        vec = plan.vec
        if vec > 1:
            d_wo, d_wv = sch.split(d_w, [None, vec])
            sch.compute_at(dacc, d_wo, preserve_unit_loops=True)
            sch.vectorize(d_wv)
        else:
            sch.compute_at(dacc, d_w, preserve_unit_loops=True)
        al = sch.get_loops(dacc)
        # (.., n, c, h, w | rc, rh, rw): taps unrolled, the vector innermost
        a_rc, a_rh, a_rw = al[-3], al[-2], al[-1]
        a_w = al[-4]
        sch.reorder(a_rc, a_rh, a_rw, a_w)
        if vec > 1:
            sch.vectorize(a_w)
        if fused_dw.KH * fused_dw.KW <= 49:
            sch.unroll(a_rh)
            sch.unroll(a_rw)
        sch.decompose_reduction(dacc, a_rc)
        for stage in ("ec_deint", "ec_pad"):
            if _has_block(sch, stage):
                blk = sch.get_sblock(stage)
                bl = sch.get_loops(blk)
                sch.parallel(sch.fuse(bl[0], bl[1]))
                if stage == "ec_pad":
                    _vectorize_inner(sch, bl[-1], tinfo.lanes)
        has_pad = False
    if fused_dw is None and _has_block(sch, "ec_deint"):
        deint = sch.get_sblock("ec_deint")
        dl = sch.get_loops(deint)
        sch.parallel(sch.fuse(dl[0], dl[1]))
    if has_pad:
        pad = sch.get_sblock("ec_pad")
        pl = sch.get_loops(pad)
        pf = sch.fuse(pl[0], pl[1])
        sch.parallel(pf)
        _vectorize_inner(sch, pl[-1], tinfo.lanes)
    if plan.vec > 1:
        sch.vectorize(wi_v)
    sch.unroll(oi)
    sch.unroll(wi_u)
    if spec.KW <= 7:
        sch.unroll(rw)
    rcu = plan.rc_unroll
    if spec.KH * spec.KW == 1 and rcu > 1 and spec.Cg % rcu == 0:
        # 1x1: unroll the channel reduction a little (loop overhead vs 8 FMAs per step)
        rc_o, rc_i = sch.split(rc, [None, rcu])
        sch.unroll(rc_i)
        rc = rc_o
    sch.decompose_reduction(conv, rc)
    ol = sch.get_loops(out)
    _vectorize_inner(sch, ol[-1], tinfo.lanes)


def _has_block(sch: s_tir.Schedule, name: str) -> bool:
    try:
        sch.get_sblock(name)
        return True
    except Exception:
        return False


def _vectorize_inner(sch: s_tir.Schedule, loop, lanes: int):
    """Vectorise an innermost loop by ``lanes`` if its extent allows it (no tail)."""
    ext = sch.get(loop).extent
    if not isinstance(ext, tirx.IntImm):
        return
    ext = int(ext)
    if ext >= lanes and ext % lanes == 0:
        if ext > lanes:
            _, vi = sch.split(loop, [None, lanes])
        else:
            vi = loop
        sch.vectorize(vi)
    elif 1 < ext < lanes:
        sch.vectorize(loop)
