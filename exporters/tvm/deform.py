"""Deformable convolution (``edgeconv.DeformConv2d``) in TVM: a scheduled deformable im2col
kernel, then the GEMM on our grouped pointwise conv kernel with the bias in its epilogue.

Import (:func:`onnx_converters`): each ``DeformConv2d`` node becomes one ``call_tir`` of an
unscheduled reference PrimFunc (:func:`reference_primfunc`: columns + GEMM + bias, correct
under any pipeline, ``pipeline="stock"`` included) that carries its :class:`DeformSpec` as
the attribute ``edgeconv.deform``. ``LowerConv2d`` replaces that call by

1. :func:`schedule_columns`: ``cols[n, c, k, l] = m * S`` (tap ``k``, output position ``l``),
   the bilinear sample ``S`` of channel ``c`` following docs/onnx-ops.md "NaN and Inf" exactly
   like custom_ops/cpu/kernels_impl.cc (``SplitPosition`` / ``SampleBilinear``). The corner
   addresses and weights are computed once per (offset group, tap, position) into a small
   buffer, with weight -1 for a corner that is skipped (outside the image, or the tap does
   not sample), and reused for every channel of the offset group; parallel over (sample,
   tile of positions), vectorised over positions.
2. ``cols`` viewed as ``(N, C*K, 1, L)`` times ``W`` viewed as ``(O, C/g*K, 1, 1)``: the grouped
   pointwise conv kernel of :mod:`.conv` (channel index ``c*K + k`` is W's own ``(c, ky, kx)``
   order), bias fused.

When every group, offset group and output group is whole vector blocks and W is constant
(:func:`blocked_ok`), both run in NCHW[b]c instead: the columns kernel vectorises over the ``b``
channels of a block (one vector load per corner, the weight broadcast, as the C++ kernel does in
NHWC), with channel order (group, tap, channel), and the blocked pointwise kernel multiplies
them by W re-ordered on the host; one layout transform in, one out.
"""

from __future__ import annotations

import dataclasses
import functools

from tvm import s_tir, te, tirx

from .conv import ConvSpec, TargetInfo, scheduled

__all__ = ["DeformSpec", "blocked_ok", "reference_primfunc", "schedule_columns", "onnx_converters", "DEFORM_ATTR"]

DEFORM_ATTR = "edgeconv.deform"  # PrimFunc attribute of the reference placeholder: the spec's fields
_CORNERS = 4  # (y0, x0), (y0, x1), (y1, x0), (y1, x1): the order of the C++ kernel's sum


@dataclasses.dataclass(frozen=True)
class DeformSpec:
    """One deformable conv, every dim static; hashable: the kernel cache key."""

    N: int
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
    offset_groups: int = 1
    mask: bool = False
    bias: bool = False

    @property
    def conv(self) -> ConvSpec:
        """The plain conv of the same geometry (output size)."""
        return ConvSpec(self.N, self.C, self.H, self.W, self.O, self.KH, self.KW, self.stride, self.padding,
                        self.dilation, self.groups)

    @property
    def K(self) -> int:
        return self.KH * self.KW

    @property
    def L(self) -> int:
        return self.conv.OH * self.conv.OW

    @property
    def gemm(self) -> ConvSpec:
        """The columns x weights product as a grouped pointwise conv on (N, C*K, 1, L)."""
        return ConvSpec(self.N, self.C * self.K, 1, self.L, self.O, 1, 1, groups=self.groups, bias=self.bias)

    def name(self) -> str:
        s, p, d = self.stride, self.padding, self.dilation
        return (f"ec_deform_cols_n{self.N}_c{self.C}_{self.H}x{self.W}_k{self.KH}x{self.KW}_s{s[0]}x{s[1]}"
                f"_p{'x'.join(map(str, p))}_d{d[0]}x{d[1]}_og{self.offset_groups}" + ("_m" if self.mask else ""))

    def check(self) -> None:
        """A clear error for a geometry the kernels cannot run."""
        if self.C % self.groups or self.O % self.groups or self.C % self.offset_groups:
            raise ValueError(f"edgeconv.DeformConv2d: channels C={self.C}, O={self.O} must be divisible by "
                             f"group={self.groups} and C by offset_group={self.offset_groups}")
        if self.conv.OH < 1 or self.conv.OW < 1:
            raise ValueError(f"edgeconv.DeformConv2d: empty output for input {self.H}x{self.W}")
        if max(self.H, self.W) >= 1 << 24:
            # positions are float32: floor(p) < size needs size exactly representable
            raise ValueError(f"edgeconv.DeformConv2d: image {self.H}x{self.W} too large for float32 positions")

    def attrs(self) -> dict:
        return {f.name: list(v) if isinstance(v, tuple) else v for f, v in
                ((f, getattr(self, f.name)) for f in dataclasses.fields(self))}

    @classmethod
    def from_attrs(cls, attrs) -> DeformSpec:
        kw = {}
        for f in dataclasses.fields(cls):
            v = attrs[f.name]
            kw[f.name] = tuple(int(x) for x in v) if f.type == "tuple" else (bool(v) if f.type == "bool" else int(v))
        return cls(**kw)


def _inputs(spec: DeformSpec):
    """Placeholders on the flattened views: X (N, C, H*W), offset (N, og*2*K, L), mask (N, og*K, L)."""
    og, K, L = spec.offset_groups, spec.K, spec.L
    x = te.placeholder((spec.N, spec.C, spec.H * spec.W), "float32", name="x")
    off = te.placeholder((spec.N, og * 2 * K, L), "float32", name="offset")
    mask = te.placeholder((spec.N, og * K, L), "float32", name="mask") if spec.mask else None
    return x, off, mask


def _taps(spec: DeformSpec, off):
    """(address, weight) of the 4 corners of every (n, offset group, tap, position): address
    ``y*W + x`` and the bilinear weight (>= 0) of a corner inside the image when the tap samples,
    else address 0 and weight -1 (skipped). The flag is the weight's sign, not an address -1:
    TVM simplifies ``x[max(a, 0)]`` under ``Select(a >= 0, ..)`` to ``x[a]``, and a Select
    evaluates both arms, so the skipped arm would read before the buffer."""
    og, K, L, OW = spec.offset_groups, spec.K, spec.L, spec.conv.OW
    (sh, sw), (pt, pl), (dh, dw) = spec.stride, spec.padding[:2], spec.dilation
    H, W = spec.H, spec.W
    f32, i32 = "float32", "int32"

    def position(n, g, k, axis, l):
        # float32(i*stride - pad + k*dil) + d, as the ONNX formula writes it
        base = tirx.Select(axis == 0, (l // OW) * sh - pt + (k // spec.KW) * dh,
                           (l % OW) * sw - pl + (k % spec.KW) * dw)
        return base.astype(f32) + off[n, (g * K + k) * 2 + axis, l]

    def start(n, g, k, axis, l):
        # floor(p) when -1 < p < size (False for NaN, an infinite p fails the bounds), else -2:
        # then both corners of that axis are outside the image and the tap samples nothing
        p = position(n, g, k, axis, l)
        size = tirx.Select(axis == 0, tirx.const(float(H), f32), tirx.const(float(W), f32))
        return tirx.Select(tirx.all(p > -1.0, p < size), tirx.floor(p), tirx.const(-2.0, f32))

    shape2 = (spec.N, og, K, 2, L)
    first = te.compute(shape2, start, name="ec_deform_floor")
    frac = te.compute(shape2, lambda n, g, k, axis, l: position(n, g, k, axis, l) - first[n, g, k, axis, l],
                      name="ec_deform_frac")

    def corner(n, g, k, j, l):
        y = first[n, g, k, 0, l].astype(i32) + j // 2
        x = first[n, g, k, 1, l].astype(i32) + j % 2
        inside = tirx.all(y >= 0, y < H, x >= 0, x < W)
        ly, lx = frac[n, g, k, 0, l], frac[n, g, k, 1, l]
        wy = tirx.Select(j // 2 == 1, ly, 1.0 - ly)
        wx = tirx.Select(j % 2 == 1, lx, 1.0 - lx)
        return tirx.Select(inside, y * W + x, 0), tirx.Select(inside, wy * wx, tirx.const(-1.0, f32))

    shape = (spec.N, og, K, _CORNERS, L)
    addr = te.compute(shape, lambda n, g, k, j, l: corner(n, g, k, j, l)[0], name="ec_deform_addr")
    weight = te.compute(shape, lambda n, g, k, j, l: corner(n, g, k, j, l)[1], name="ec_deform_weight")
    return addr, weight


def _columns(spec: DeformSpec, x, off, mask):
    """cols (N, C, K, L) = m * S: the sum over the corners inside the image, in the C++
    kernel's order; skipped corners (weight -1) are selected away (never 0 * pixel: the pixel
    may be Inf)."""
    addr, weight = _taps(spec, off)
    cog, K = spec.C // spec.offset_groups, spec.K

    def sample(n, c, k, l):
        g = c // cog
        s = None
        for j in range(_CORNERS):
            wt = weight[n, g, k, j, l]
            term = tirx.Select(wt >= 0.0, wt * x[n, c, addr[n, g, k, j, l]], tirx.const(0.0, "float32"))
            s = term if s is None else s + term
        return s if mask is None else mask[n, g * K + k, l] * s

    return te.compute((spec.N, spec.C, K, spec.L), sample, name="ec_deform_cols")


def blocked_ok(spec: DeformSpec, b: int) -> bool:
    """Whether the channel-vectorised (blocked) path covers ``spec``: whole ``b``-channel blocks
    in every group, offset group and output group."""
    Cg, Cog, Og = spec.C // spec.groups, spec.C // spec.offset_groups, spec.O // spec.groups
    return b > 1 and Cg % b == 0 and Cog % b == 0 and Og % b == 0


def _columns_blocked(spec: DeformSpec, b: int, off, mask):
    """cols (N, g, K, C/g/b, L, b) == NCHW[b]c columns (N, C*K/b, 1, L, b) with channel order
    (group, tap, channel): ``b`` channels of one tap share the corner weights and are one vector
    load from the blocked image xb (N, C/b, 1, H*W, b). Same sum as :func:`_columns`."""
    xb = te.placeholder((spec.N, spec.C // b, 1, spec.H * spec.W, b), "float32", name="xb")
    addr, weight = _taps(spec, off)
    Cg, cog, K = spec.C // spec.groups, spec.C // spec.offset_groups, spec.K

    def sample(n, gi, k, cb, l, i):
        cblock = gi * (Cg // b) + cb
        g = cblock * b // cog
        s = None
        for j in range(_CORNERS):
            wt = weight[n, g, k, j, l]
            term = tirx.Select(wt >= 0.0, wt * xb[n, cblock, 0, addr[n, g, k, j, l], i], tirx.const(0.0, "float32"))
            s = term if s is None else s + term
        return s if mask is None else mask[n, g * K + k, l] * s

    shape = (spec.N, spec.groups, K, Cg // b, spec.L, b)
    return xb, te.compute(shape, sample, name="ec_deform_cols")


def reference_primfunc(spec: DeformSpec) -> tirx.PrimFunc:
    """Unscheduled ``Y (N, O, L) = W (O, C/g*K) x cols + B``: the placeholder the import emits."""
    spec.check()
    x, off, mask = _inputs(spec)
    cols = _columns(spec, x, off, mask)
    CgK, Og, Cg, K = spec.C // spec.groups * spec.K, spec.O // spec.groups, spec.C // spec.groups, spec.K
    w = te.placeholder((spec.O, CgK), "float32", name="w")
    b = te.placeholder((spec.O,), "float32", name="b") if spec.bias else None
    r = te.reduce_axis((0, CgK), name="r")
    y = te.compute((spec.N, spec.O, spec.L), lambda n, o, l: te.sum(
        w[o, r] * cols[n, (o // Og) * Cg + r // K, r % K, l], axis=r), name="ec_deform_gemm")
    if b is not None:
        y = te.compute(y.shape, lambda n, o, l: y[n, o, l] + b[o], name="ec_deform_bias")
    args = [x, off] + ([mask] if mask is not None else []) + [w] + ([b] if b is not None else []) + [y]
    func = te.create_prim_func(args)
    return func.with_attr({"global_symbol": spec.name().replace("_cols", ""), DEFORM_ATTR: spec.attrs()})


def _tile(L: int, lanes: int) -> tuple[int, int]:
    """(positions per task, vector width): the widest vector up to ``lanes`` that divides L
    (14 of 196, 7 of 49: no tail loop), a few vectors per task when L allows it."""
    vec = max(v for v in range(1, lanes + 1) if L % v == 0)
    for mult in (8, 4, 2, 1):
        if L % (vec * mult) == 0:
            return vec * mult, vec
    return vec, vec  # (unreachable: mult 1 divides)


def schedule_columns(spec: DeformSpec, tinfo: TargetInfo, blocked: bool = False) -> tirx.PrimFunc:
    """The scheduled columns kernel ``(x, offset[, mask]) -> cols (N, C, K, L)``, or with
    ``blocked`` ``(xb, offset[, mask]) -> (N, g, K, C/g/b, L, b)`` (b = the target's lanes, see
    :func:`blocked_ok`); cached on (spec, target, layout) like the conv kernels."""
    return _schedule_blocked_columns(spec, tinfo) if blocked else _schedule_columns(spec, tinfo)


def _schedule_taps(sch: s_tir.Schedule, vec: int) -> None:
    """The per-sample tables (og*K*2*L sample starts, og*K*4*L corners): parallel over
    (n, offset group, tap), vectorised over positions."""
    for block in ("ec_deform_floor", "ec_deform_frac", "ec_deform_addr", "ec_deform_weight"):
        n, g, k, _, l = sch.get_loops(sch.get_sblock(block))
        sch.parallel(sch.fuse(n, g, k))
        if vec > 1:
            sch.vectorize(sch.split(l, [None, vec])[1])


@functools.lru_cache(maxsize=256)
def _schedule_blocked_columns(spec: DeformSpec, tinfo: TargetInfo) -> tirx.PrimFunc:
    spec.check()
    b = tinfo.lanes
    _, off, mask = _inputs(spec)
    xb, cols = _columns_blocked(spec, b, off, mask)
    args = [xb, off] + ([mask] if mask is not None else []) + [cols]
    name = spec.name().replace("_cols", f"_cols{b}c")
    sch = s_tir.Schedule(te.create_prim_func(args).with_attr({"global_symbol": name, "tirx.noalias": True}))
    tile, vec = _tile(spec.L, tinfo.lanes)
    _schedule_taps(sch, vec)
    n, g, k, cb, l, i = sch.get_loops(sch.get_sblock("ec_deform_cols"))
    lo, li = sch.split(l, [None, tile])
    # per task: a tile of positions, every channel block: the tile's corner table stays in L1,
    # each (tap, position) is one broadcast weight x one vector load per corner
    sch.reorder(n, lo, g, k, cb, li, i)
    sch.parallel(sch.fuse(n, lo))
    sch.vectorize(i)
    return scheduled(sch, name)


@functools.lru_cache(maxsize=256)
def _schedule_columns(spec: DeformSpec, tinfo: TargetInfo) -> tirx.PrimFunc:
    spec.check()
    x, off, mask = _inputs(spec)
    cols = _columns(spec, x, off, mask)
    args = [x, off] + ([mask] if mask is not None else []) + [cols]
    name = spec.name()
    sch = s_tir.Schedule(te.create_prim_func(args).with_attr({"global_symbol": name, "tirx.noalias": True}))
    tile, vec = _tile(spec.L, tinfo.lanes)
    _schedule_taps(sch, vec)
    n, c, k, l = sch.get_loops(sch.get_sblock("ec_deform_cols"))
    lo, li = sch.split(l, [None, tile])
    # per task: one tile of positions, all channels: the tile's corner table stays in L1
    sch.reorder(n, lo, c, k, li)
    sch.parallel(sch.fuse(n, lo))
    if vec > 1:
        sch.vectorize(sch.split(li, [None, vec])[1])
    return scheduled(sch, name)


def _deform_converter():
    """The TVM ONNX frontend converter of ``DeformConv2d`` (standard_op_model keeps the node,
    attribute defaults filled)."""
    from tvm import relax
    from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

    from ._relax import static_shape

    class DeformConv2d(OnnxOpConverter):
        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            x, w, off, mask, b = (list(inputs) + [None] * 5)[:5]
            shapes = [static_shape(v) for v in (x, w, off)]
            if any(s is None for s in shapes) or any(v.ty.dtype != "float32" for v in (x, w, off)):
                raise ValueError("edgeconv.DeformConv2d in TVM needs float32 inputs with static shapes, got "
                                 + ", ".join(f"{v.ty.dtype}{static_shape(v)}" for v in (x, w, off)))
            (N, C, H, W), (O, _, KH, KW) = shapes[0], shapes[1]
            pads = tuple(int(p) for p in attr.get("pads", (0, 0, 0, 0)))
            spec = DeformSpec(N, C, H, W, O, KH, KW, tuple(attr.get("strides", (1, 1))),
                              (pads[0], pads[1], pads[2], pads[3]), tuple(attr.get("dilations", (1, 1))),
                              int(attr.get("group", 1)), int(attr.get("offset_group", 1)), mask is not None,
                              b is not None)
            gv = bb.add_func(reference_primfunc(spec), spec.name().replace("_cols", ""))
            og, K, L = spec.offset_groups, spec.K, spec.L
            args = [relax.op.reshape(x, (N, C, H * W)), relax.op.reshape(off, (N, og * 2 * K, L))]
            if mask is not None:
                args.append(relax.op.reshape(mask, (N, og * K, L)))
            args.append(relax.op.reshape(w, (O, C // spec.groups * K)))
            if b is not None:
                args.append(b)
            y = bb.emit(relax.call_tir(gv, args, relax.TensorType((N, O, L), "float32")))
            return relax.op.reshape(y, (N, O, spec.conv.OH, spec.conv.OW))

    return DeformConv2d


def onnx_converters() -> dict:
    """op_type -> converter class for TVM's ONNX frontend (edgeconv ops it runs as our kernels)."""
    from ..onnx._schemas import DEFORM_OP

    return {DEFORM_OP: _deform_converter()}
