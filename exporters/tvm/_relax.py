"""Small Relax helpers shared by edgeconv's TVM passes."""

from __future__ import annotations

import re

import tvm
from tvm import relax

from .conv import ConvSpec

OPAQUE = 8  # relax OpPatternKind::kOpaque: keeps FuseOps away from our scheduled kernels


def static_shape(expr) -> list[int] | None:
    sinfo = expr.ty
    if not isinstance(sinfo, relax.TensorType) or sinfo.shape is None:
        return None
    shape = sinfo.shape
    if not isinstance(shape, relax.ShapeExpr):
        return None
    out = []
    for v in shape.values:
        if not isinstance(v, tvm.tirx.IntImm):
            return None
        out.append(int(v))
    return out


def batch_shape(expr) -> list | None:
    """The shape of a tensor whose dims are static except maybe the first (the batch): ints,
    with ``None`` for a symbolic batch; None if any other dim is symbolic."""
    sinfo = expr.ty
    if not isinstance(sinfo, relax.TensorType) or not isinstance(sinfo.shape, relax.ShapeExpr):
        return None
    out = []
    for i, v in enumerate(sinfo.shape.values):
        if isinstance(v, tvm.tirx.IntImm):
            out.append(int(v))
        elif i == 0:
            out.append(None)
        else:
            return None
    return out


def scalar(expr):
    """Python float of a scalar constant (any rank, one element), else None."""
    try:
        arr = expr.value.numpy()
    except Exception:
        return None
    if arr.size != 1 or arr.dtype.kind != "f":
        return None
    return float(arr.reshape(()))


def tir_name(call) -> str:
    try:
        return call.args[0].name_hint
    except Exception:
        return ""


def functions_pass(name: str, rewrite) -> tvm.transform.Pass:
    """A module pass applying ``rewrite(func, builder) -> func`` to every Relax function."""

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod: tvm.ir.IRModule, _ctx) -> tvm.ir.IRModule:
        builder = relax.BlockBuilder(mod)
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                builder.update_func(gv, rewrite(func, builder))
        return builder.get()

    return _pass


def _block_of(attrs) -> int | None:
    """0 for NCHW/OIHW, b for NCHW[b]c with OIHW[b]i[b]o or OIHW1i[b]o, None otherwise."""
    data, kernel, out = str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout)
    if data == "NCHW" and kernel == "OIHW" and out in ("NCHW", ""):
        return 0
    m = re.fullmatch(r"NCHW(\d+)c", data)
    k = re.fullmatch(r"OIHW(\d+)i(\d+)o", kernel)
    if m and k and out in (data, "") and k.group(2) == m.group(1) and k.group(1) in ("1", m.group(1)):
        return int(m.group(1))
    return None


def conv_spec(conv: relax.Call, bias: bool = False, act=None, clip=None) -> ConvSpec | None:
    """The :class:`ConvSpec` of a float32 relax conv2d (NCHW or NCHW[b]c) static but maybe in
    the batch, else None."""
    attrs = conv.attrs
    block = _block_of(attrs)
    xs, ws = batch_shape(conv.args[0]), static_shape(conv.args[1])
    if block is None or xs is None or ws is None or len(xs) != (5 if block else 4):
        return None
    if conv.args[0].ty.dtype != "float32" or conv.args[1].ty.dtype != "float32":
        return None
    if str(attrs.out_dtype) not in ("", "float32", "None"):
        return None
    N, C, H, W = xs[0], xs[1] * (block or 1), xs[2], xs[3]
    O, Cg, KH, KW = ws[0], ws[1], ws[2], ws[3]
    if block:
        O, Cg = O * ws[5], Cg * ws[4]
    groups = int(attrs.groups)
    if C % groups or O % groups or C // groups != Cg:
        return None
    pad = [int(p) for p in attrs.padding]
    if len(pad) == 2:
        pad = [pad[0], pad[1], pad[0], pad[1]]
    return ConvSpec(
        N, C, H, W, O, KH, KW,
        stride=tuple(int(v) for v in attrs.strides),
        padding=tuple(pad),
        dilation=tuple(int(v) for v in attrs.dilation),
        groups=groups,
        bias=bias,
        act=act,
        clip=clip if clip is not None else (0.0, 6.0),
        block=block,
    )
