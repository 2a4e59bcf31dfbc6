"""The blocked-layout (NCHW[b]c) conv2d compute and its CPU schedules.

In NCHW[b]c the ``b`` channels of a block are the innermost axis, ``b`` = the target's float32
vector lanes (8 for AVX2, 16 for AVX-512, 4 for NEON). Every kernel then vectorises along
channels, never along W, which is what makes this layout faster where NCHW is weak:

* narrow rows (28, 14, 7 columns are common in late stages): an NCHW kernel vectorised along W
  wastes lanes on a padded tail, a blocked kernel tiles W by single positions;
* strided depthwise: output position ``w`` reads a whole aligned channel vector at ``w * s``, no
  de-interleaving;
* grouped / dense: the register tile is ``ob`` output-channel vectors x ``wu`` positions, fed by
  one weight vector per block and one broadcast input scalar per position (the x86 NCHWc kernel).

Weights are OIHW[b]i[b]o (depthwise: OIHW1i[b]o), so one vector load fetches ``b`` output channels.
The layout transforms live at the graph edges: :mod:`.passes` converts whole conv chains with
relax's ``ConvertLayout`` and constant-folds the weight transforms away.
"""

from __future__ import annotations

import dataclasses
import functools

from tvm import te, tirx
from tvm import s_tir

from .conv import (ConvSpec, TargetInfo, _epilogue, _has_block, _round_up, _vectorize_inner, batch_extent, scheduled,
                   w_chunks)

__all__ = ["blocked_supported", "blocked_compute", "schedule_blocked", "BlockedPlan", "plan_blocked"]


def blocked_supported(spec: ConvSpec, block: int) -> bool:
    """Whether the blocked kernel covers ``spec``: whole channel blocks, depthwise multiplier 1."""
    if spec.C % block or spec.O % block:
        return False
    if spec.Cg == 1:
        return spec.O == spec.C and spec.groups == spec.C
    return spec.Cg % block == 0 and spec.Og % block == 0


@dataclasses.dataclass(frozen=True)
class BlockedPlan:
    wu: int  # output positions per register tile
    ob: int  # output-channel blocks per register tile (1 for depthwise)
    hb: int  # output rows per register tile
    OWp: int  # accumulator width, a multiple of wu * chunk
    chunk: int = 1  # register tiles per parallel chunk along W


def plan_blocked(spec: ConvSpec, tinfo: TargetInfo) -> BlockedPlan:
    """Register tile: as many accumulators as the budget allows, with little W padding."""
    OW = spec.OW
    if spec.Cg == 1:
        # LLVM keeps the KH*KW weight vectors in registers across the W loop: the accumulators
        # (hb rows x wu positions) get what is left, or they spill
        budget = max(4, tinfo.vregs - spec.KH * spec.KW - 2)
        obs, hbs = [1], [h for h in (1, 2, 3, 4) if spec.OH % h == 0]
    else:
        budget = tinfo.vregs - 4  # ob weight vectors + broadcast registers
        # measured on AVX2 (16 registers): 1x1 runs best with 12 accumulators, KxK (unrolled
        # taps) with at most 8 (3x3 g4 1x64x64x64: 4x2 1.09 ms, 6x2 1.47 ms); scaled for
        # 32-register targets
        cap = (12 if spec.KH * spec.KW == 1 else 8) * tinfo.vregs // 16
        blocks = spec.Og // spec.block
        obs, hbs = [d for d in (1, 2, 3, 4) if blocks % d == 0], [1]
    best = None
    for ob in obs:
        for hb in hbs:
            for wu in range(1, min(OW, 14) + 1):
                acc = ob * hb * wu
                if acc > budget or (spec.Cg != 1 and (acc + ob > tinfo.vregs - 1 or acc > cap)):
                    continue
                OWp = _round_up(OW, wu)
                waste = OW / OWp
                if spec.Cg == 1:
                    score = min(acc, 12) * waste * waste
                else:
                    # enough accumulators to hide FMA latency, then FMAs per load (ob + wu)
                    score = acc * (acc / (ob + wu)) ** 0.5 * waste
                # ties: fewer output-channel vectors, more positions (measured: 4 x 2 beats 2 x 4)
                key = (round(score, 3), -OWp, -ob)
                if best is None or key > best[0]:
                    best = (key, (wu, ob, hb, OWp))
    wu, ob, hb, OWp = best[1]
    OWp, chunk = w_chunks(OW, OWp, wu, target=96)
    return BlockedPlan(wu, ob, hb, OWp, chunk)


def _blocked_input(data, spec: ConvSpec, OWp: int, tag: str = ""):
    """Zero-padded blocked input; returns the padded tensor (or ``data`` when no padding)."""
    N, CB, H, W, b = data.shape
    pt, pl, _, _ = spec.padding
    PH = (spec.OH - 1) * spec.stride[0] + (spec.KH - 1) * spec.dilation[0] + 1
    PW = (OWp - 1) * spec.stride[1] + (spec.KW - 1) * spec.dilation[1] + 1
    if pt == 0 and pl == 0 and PH <= int(H) and PW <= int(W):
        return data
    zero = tirx.const(0, spec.dtype)

    def _padded(n, c, h, w, i):
        cond = tirx.all(h >= pt, h < pt + H, w >= pl, w < pl + W)
        return tirx.if_then_else(tirx.likely(cond), data[n, c, h - pt, w - pl, i], zero)

    return te.compute((N, CB, PH, PW, b), _padded, name="ec_pad" + tag)


def blocked_compute(spec: ConvSpec, OWp: int | None = None):
    """Blocked TE compute. Returns (inputs, output), inputs = [data, weight(, bias)].

    data (N, C/b, H, W, b), weight (O/b, Cg/b, KH, KW, b, b) or depthwise (O/b, 1, KH, KW, 1, b),
    bias (O/b, b), output (N, O/b, OH, OW, b).
    """
    b = spec.block
    OWp = OWp or spec.OW
    N, OB = batch_extent(spec), spec.O // b
    sh, sw = spec.stride
    dh, dw = spec.dilation
    data = te.placeholder((N, spec.C // b, spec.H, spec.W, b), spec.dtype, name="data")
    depthwise = spec.Cg == 1
    wshape = (OB, 1, spec.KH, spec.KW, 1, b) if depthwise else (OB, spec.Cg // b, spec.KH, spec.KW, b, b)
    weight = te.placeholder(wshape, spec.dtype, name="weight")
    bias = te.placeholder((OB, b), spec.dtype, name="bias") if spec.bias else None
    src = _blocked_input(data, spec, OWp)
    rh = te.reduce_axis((0, spec.KH), name="rh")
    rw = te.reduce_axis((0, spec.KW), name="rw")
    if depthwise:

        def _conv(n, o, h, w, i):
            return te.sum(src[n, o, h * sh + rh * dh, w * sw + rw * dw, i] * weight[o, 0, rh, rw, 0, i],
                          axis=[rh, rw])

    else:
        cbg, obg = spec.Cg // b, spec.Og // b
        rcb = te.reduce_axis((0, cbg), name="rcb")
        rci = te.reduce_axis((0, b), name="rci")

        def _conv(n, o, h, w, i):
            c = (o // obg) * cbg + rcb
            return te.sum(src[n, c, h * sh + rh * dh, w * sw + rw * dw, rci] * weight[o, rcb, rh, rw, rci, i],
                          axis=[rcb, rh, rw, rci])

    acc = te.compute((N, OB, spec.OH, OWp, b), _conv, name="ec_conv")
    out = te.compute((N, OB, spec.OH, spec.OW, b),
                     lambda n, o, h, w, i: _epilogue(acc[n, o, h, w, i], spec, bias, (o, i)), name="ec_out")
    return [data, weight] + ([bias] if bias is not None else []), out


@functools.lru_cache(maxsize=512)
def schedule_blocked(spec: ConvSpec, tinfo: TargetInfo) -> tirx.PrimFunc:
    """The scheduled blocked kernel for ``spec`` (``spec.block`` = channel block)."""
    plan = plan_blocked(spec, tinfo)
    inputs, out = blocked_compute(spec, plan.OWp)
    func = te.create_prim_func(inputs + [out]).with_attr({"global_symbol": spec.name(), "tirx.noalias": True})
    sch = s_tir.Schedule(func)
    if spec.Cg == 1:
        _schedule_depthwise(sch, spec, tinfo, plan)
    else:
        _schedule_direct(sch, spec, tinfo, plan)
    return scheduled(sch, spec.name())


def _schedule_depthwise(sch, spec: ConvSpec, tinfo: TargetInfo, plan: BlockedPlan):
    conv, out = sch.get_sblock("ec_conv"), sch.get_sblock("ec_out")
    sch.set_scope(conv, 0, "local")
    n, o, h, w, i, rh, rw = sch.get_loops(conv)
    ho, hi = sch.split(h, [None, plan.hb])
    wo, wi = sch.split(w, [None, plan.wu])
    no = sch.fuse(n, o)
    sch.reorder(no, ho, wo, rh, rw, hi, wi, i)
    sch.parallel(no)
    sch.reverse_compute_at(out, wo, preserve_unit_loops=True)
    if _has_block(sch, "ec_pad"):
        # one channel block's padded plane, right before its use (stays in L2)
        pad = sch.get_sblock("ec_pad")
        sch.compute_at(pad, no, preserve_unit_loops=True)
        sch.vectorize(sch.get_loops(pad)[-1])
    sch.vectorize(i)
    for loop in (hi, wi, rh, rw):
        sch.unroll(loop)
    sch.decompose_reduction(conv, rh)
    _vectorize_inner(sch, sch.get_loops(out)[-1], tinfo.lanes)


def _weights_dominate(spec: ConvSpec) -> bool:
    """The weights outweigh one image's input (then they, not the input, should stay in cache)."""
    return spec.O * spec.Cg * spec.KH * spec.KW > 2 * spec.C * spec.H * spec.W


def _tiles_channels(spec: ConvSpec) -> bool:
    """KxK convs loop over input-channel blocks outside the W tiles: the weights of one
    (output tile, channel block), KH*KW*ob*b*b floats, then stay in L1 for every W tile of the
    chunk, and the accumulators wait in a small L1 buffer. With the channel loop inside, every
    W tile re-read its whole ob*Cg*KH*KW*b weights (147 KB for 256 channels) from L2: measured
    at 1 thread on AVX2, 256x14x14 3x3 3.07 -> 2.49 ms, 512x7x7 3.38 -> 2.96 ms, 56x56 and
    28x28 rows unchanged. 1x1 convs (few weights per tile) lose by the buffered accumulators."""
    return spec.KH * spec.KW > 1 and spec.Cg // spec.block > 1


def _schedule_direct(sch, spec: ConvSpec, tinfo: TargetInfo, plan: BlockedPlan):
    conv, out = sch.get_sblock("ec_conv"), sch.get_sblock("ec_out")
    sch.set_scope(conv, 0, "local")
    n, o, h, w, i, rcb, rh, rw, rci = sch.get_loops(conv)
    oo, oi = sch.split(o, [None, plan.ob])
    wc, wo, wi = sch.split(w, [None, plan.chunk, plan.wu])
    tiled = _tiles_channels(spec)
    rco, rcb = sch.split(rcb, [None, 1]) if tiled else (None, rcb)
    tile_loops = [rco, wo] if tiled else [wo]
    # per position one broadcast feeds the ob weight vectors (oi inside wi: no broadcast stays live)
    if _weights_dominate(spec):
        # deep layers on small images (ResNet 256x14x14, 512x7x7): parallel over output-channel
        # tiles, every row of a tile in turn, so that its weights are read from memory once and
        # the rows reuse them from L2 (row-outer order streamed 9.4 MB of weights per output row)
        sch.reorder(n, oo, h, wc, *tile_loops, rcb, rh, rw, rci, wi, oi, i)
        par, tiles_parent = sch.fuse(n, oo), wc
    else:
        # parallel over (batch, row, W-chunk); the input of a chunk stays in cache while every
        # output-channel tile passes over it
        sch.reorder(n, h, wc, oo, *tile_loops, rcb, rh, rw, rci, wi, oi, i)
        par = sch.fuse(n, h, wc)
        tiles_parent = oo
    sch.parallel(par)
    # the epilogue follows the last channel block: once per chunk when the channels are tiled
    sch.reverse_compute_at(out, tiles_parent if tiled else wo, preserve_unit_loops=True)
    if _has_block(sch, "ec_pad"):
        pad = sch.get_sblock("ec_pad")
        pl = sch.get_loops(pad)
        sch.parallel(sch.fuse(pl[0], pl[1]))
        sch.vectorize(pl[-1])
    sch.vectorize(i)
    for loop in (oi, wi, rci):
        sch.unroll(loop)
    if spec.KW <= 7:
        sch.unroll(rw)
    sch.decompose_reduction(conv, rco if tiled else rcb)
    _vectorize_inner(sch, sch.get_loops(out)[-1], tinfo.lanes)


@functools.lru_cache(maxsize=64)
def layout_primfunc(N: int | None, C: int, H: int, W: int, block: int, to_blocked: bool) -> tirx.PrimFunc:
    """NCHW <-> NCHW[b]c, scheduled and parallel. TVM legalizes ``layout_transform`` to one
    unscheduled, single-threaded loop nest (measured 0.25 ms for 1x128x56x56 into NCHW8c at
    1 thread; 0.09 ms scheduled).

    Per (n, channel block, row) the kernel moves a ``b`` x W tile: W-vectors on the NCHW side,
    stride-``b`` accesses on the blocked side, the channel loop unrolled so that LLVM turns the
    8x8 sub-tiles into vector shuffles.
    """
    b = block
    n_name = "n" if N is None else N
    N = te.var("batch", "int64") if N is None else N
    if to_blocked:
        src = te.placeholder((N, C, H, W), "float32", name="data")
        dst = te.compute((N, C // b, H, W, b), lambda n, c, h, w, i: src[n, c * b + i, h, w], name="ec_layout")
        name = f"ec_to_nchw{b}c_{n_name}x{C}x{H}x{W}"
    else:
        src = te.placeholder((N, C // b, H, W, b), "float32", name="data")
        dst = te.compute((N, C, H, W), lambda n, c, h, w: src[n, c // b, h, w, c % b], name="ec_layout")
        name = f"ec_from_nchw{b}c_{n_name}x{C}x{H}x{W}"
    sch = s_tir.Schedule(te.create_prim_func([src, dst]).with_attr({"global_symbol": name, "tirx.noalias": True}))
    blk = sch.get_sblock("ec_layout")
    if to_blocked:
        n, c, h, w, i = sch.get_loops(blk)
    else:
        n, c, h, w = sch.get_loops(blk)
        c, i = sch.split(c, [None, b])
        sch.reorder(c, h, i, w)
    sch.parallel(sch.fuse(n, c, h))
    if W % b == 0:
        wo, wi = sch.split(w, [None, b])
        sch.reorder(wo, i, wi)
        sch.unroll(i)
        sch.vectorize(wi)
    elif to_blocked:
        sch.vectorize(i)
    return scheduled(sch, name)


@functools.lru_cache(maxsize=64)
def shuffle_blocked_primfunc(N: int, C: int, H: int, W: int, groups: int, block: int) -> tirx.PrimFunc:
    """Channel shuffle (ShuffleNet: view C as groups x C/groups, transpose) on NCHW[b]c tensors:
    output channel ``o`` reads input channel ``(o % groups) * (C / groups) + o // groups``.

    One pass, vectorised along the output block (a gather over input blocks); in NCHW it would
    take a transform out of the blocked layout, the reshape/transpose/reshape and one back in.
    """
    b = block
    src = te.placeholder((N, C // b, H, W, b), "float32", name="data")

    def _shuffled(n, ob, h, w, oi):
        o = ob * b + oi
        c = (o % groups) * (C // groups) + o // groups
        return src[n, c // b, h, w, c % b]

    dst = te.compute((N, C // b, H, W, b), _shuffled, name="ec_shuffle")
    name = f"ec_shuffle_g{groups}_{N}x{C}x{H}x{W}_nchw{b}c"
    sch = s_tir.Schedule(te.create_prim_func([src, dst]).with_attr({"global_symbol": name, "tirx.noalias": True}))
    n, ob, h, w, oi = sch.get_loops(sch.get_sblock("ec_shuffle"))
    sch.parallel(sch.fuse(n, ob, h))
    sch.vectorize(oi)
    return scheduled(sch, name)
