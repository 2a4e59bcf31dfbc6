"""Helpers of the custom-op kernel tests: ONNX model builders, sessions, numpy references."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import TensorProto, helper

DOMAIN = "edgeconv"  # not edgeconv.opdefs: this module also runs in a venv without torch (onnxruntime 1.20)


def _vi(name: str, rank: int | None = None):
    shape = None if rank is None else [None] * rank
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def make_model(node: onnx.NodeProto, inputs: list[str], extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph([node], "g", [_vi(n) for n in inputs if n], [_vi("Y", 4)])
    opsets = [helper.make_opsetid("", 19), helper.make_opsetid(DOMAIN, 1), *extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 9  # loadable by onnxruntime 1.20 as well
    return model


def deform_model(mask: bool, bias: bool, **attrs) -> tuple[onnx.ModelProto, list[str]]:
    """edgeconv.DeformConv2d(X, W, offset, mask?, B?); "" for an absent mask when B is given."""
    ins = ["X", "W", "offset", "mask" if mask else "", "B" if bias else ""]
    while ins[-1] == "":
        ins.pop()
    node = helper.make_node("DeformConv2d", ins, ["Y"], domain=DOMAIN, **attrs)
    return make_model(node, ins), [n for n in ins if n]


def dynamic_model(bias: bool, **attrs) -> tuple[onnx.ModelProto, list[str]]:
    ins = ["X", "W", "attention"] + (["B"] if bias else [])
    node = helper.make_node("DynamicConv2d", ins, ["Y"], domain=DOMAIN, **attrs)
    return make_model(node, ins), ins


def onnx_deform_model(mask: bool, bias: bool, **attrs) -> onnx.ModelProto:
    """Standard ONNX DeformConv (opset 19), input order X, W, offset, B, mask."""
    ins = ["X", "W", "offset", "B" if bias else "", "mask" if mask else ""]
    while ins[-1] == "":
        ins.pop()
    node = helper.make_node("DeformConv", ins, ["Y"], **attrs)
    graph = helper.make_graph([node], "g", [_vi(n) for n in ins if n], [_vi("Y", 4)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    return model


def session_options(lib: str, threads: int = 1, **config: str):
    """SessionOptions with libedgeconv_ort registered. The library reads its session config entries
    (`edgeconv.isa`, `edgeconv.max_memory_bytes`) at registration, so they are added first; the
    ISA follows the test's EDGECONV_ISA (the `isa` fixture) unless given."""
    import os

    import onnxruntime as ort

    so = ort.SessionOptions()
    config.setdefault("edgeconv.isa", os.environ.get("EDGECONV_ISA", "auto"))
    for key, value in config.items():
        so.add_session_config_entry(key, value)
    so.register_custom_ops_library(lib)
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return so


def session(model: onnx.ModelProto, lib: str, threads: int = 1, **config: str):
    import onnxruntime as ort

    so = session_options(lib, threads, **config)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def out_size(n, k, s, p0, p1, d):
    return (n + p0 + p1 - ((k - 1) * d + 1)) // s + 1


# ---------------------------------------------------------------------------------------------
# numpy references (float64)


def _bilinear(img: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """img [N, Cc, H, W]; y, x float32 [N, OH, OW] -> [N, Cc, OH, OW] (docs/onnx-ops.md, "NaN and
    Inf"): no sample outside (-1, H) x (-1, W) or for NaN positions, corners outside the image
    skipped, float32 corner weights; the sum itself in float64."""
    N, Cc, H, W = img.shape
    with np.errstate(invalid="ignore"):
        valid = (y > -1) & (y < H) & (x > -1) & (x < W)
    y = np.where(valid, y, np.float32(0))
    x = np.where(valid, x, np.float32(0))
    y0f, x0f = np.floor(y), np.floor(x)
    ly, lx = y - y0f, x - x0f  # float32, as in the kernels
    y0, x0 = y0f.astype(np.int64), x0f.astype(np.int64)
    one = np.float32(1)
    out = np.zeros((N, y.shape[1], y.shape[2], Cc))
    n_idx = np.arange(N)[:, None, None]
    for yy, xx, wgt in (
        (y0, x0, (one - ly) * (one - lx)),
        (y0, x0 + 1, (one - ly) * lx),
        (y0 + 1, x0, ly * (one - lx)),
        (y0 + 1, x0 + 1, ly * lx),
    ):
        ok = valid & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        v = img[n_idx, :, np.clip(yy, 0, H - 1), np.clip(xx, 0, W - 1)]  # [N, OH, OW, Cc]
        with np.errstate(invalid="ignore", over="ignore"):
            out += np.where(ok[..., None], v * wgt.astype(np.float64)[..., None], 0.0)
    return out.transpose(0, 3, 1, 2)


def deform_conv2d_ref(x, w, offset, mask=None, b=None, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                      group=1, offset_group=1) -> np.ndarray:
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    N, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    sh, sw = strides
    pt, pl, pb, pr = pads
    dh, dw = dilations
    OH, OW = out_size(H, KH, sh, pt, pb, dh), out_size(W, KW, sw, pl, pr, dw)
    KK = KH * KW
    Cog = C // offset_group
    cols = np.zeros((N, C, KK, OH, OW))
    base_y = (np.arange(OH) * sh - pt)[:, None]
    base_x = (np.arange(OW) * sw - pl)[None, :]
    for og, (ky, kx) in itertools.product(range(offset_group), itertools.product(range(KH), range(KW))):
        k = ky * KW + kx
        dy = offset[:, og * 2 * KK + 2 * k].astype(np.float32)
        dx = offset[:, og * 2 * KK + 2 * k + 1].astype(np.float32)
        with np.errstate(invalid="ignore", over="ignore"):  # positions in float32, as ONNX writes them
            yy = (base_y[None] + ky * dh).astype(np.float32) + dy
            xx = (base_x[None] + kx * dw).astype(np.float32) + dx
        s = _bilinear(x[:, og * Cog:(og + 1) * Cog], yy, xx)
        if mask is not None:
            with np.errstate(invalid="ignore", over="ignore"):
                s = s * mask[:, og * KK + k].astype(np.float64)[:, None]
        cols[:, og * Cog:(og + 1) * Cog, k] = s
    Og = O // group
    y = np.zeros((N, O, OH, OW))
    for g in range(group):
        wg = w[g * Og:(g + 1) * Og].reshape(Og, Cg, KK)
        y[:, g * Og:(g + 1) * Og] = np.einsum("ock,nckhw->nohw", wg, cols[:, g * Cg:(g + 1) * Cg])
    if b is not None:
        y += b.astype(np.float64)[None, :, None, None]
    return y


def conv2d_ref(x, w, b=None, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1) -> np.ndarray:
    """Plain grouped convolution in float64 by strided slices of the zero-padded input (no
    sampling: padding zeros times an Inf weight give NaN, as in any IEEE convolution)."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    N, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = strides, pads, dilations
    OH, OW = out_size(H, KH, sh, pt, pb, dh), out_size(W, KW, sw, pl, pr, dw)
    xp = np.zeros((N, C, H + pt + pb, W + pl + pr))
    xp[:, :, pt:pt + H, pl:pl + W] = x
    Og = O // group
    y = np.zeros((N, O, OH, OW))
    with np.errstate(invalid="ignore", over="ignore"):
        for ky, kx, g in itertools.product(range(KH), range(KW), range(group)):
            patch = xp[:, g * Cg:(g + 1) * Cg, ky * dh:ky * dh + (OH - 1) * sh + 1:sh, kx * dw:kx * dw + (OW - 1) * sw + 1:sw]
            y[:, g * Og:(g + 1) * Og] += np.einsum("oc,nchw->nohw", w[g * Og:(g + 1) * Og, :, ky, kx], patch)
        if b is not None:
            y += b.astype(np.float64)[None, :, None, None]
    return y


def dynamic_conv2d_ref(x, w, att, b=None, **kw) -> np.ndarray:
    """W~ = sum_k a[n,k] W[k], b~ = sum_k a[n,k] B[k], y_n = conv(x_n, W~) + b~."""
    att = att.astype(np.float64)
    outs = []
    for n in range(x.shape[0]):
        with np.errstate(invalid="ignore", over="ignore"):
            wn = np.tensordot(att[n], w.astype(np.float64), axes=1)
        bn = None if b is None else att[n] @ b.astype(np.float64)
        outs.append(conv2d_ref(x[n:n + 1], wn, bn, **kw))
    return np.concatenate(outs)


def check_close(y: np.ndarray, ref: np.ndarray, scale: np.ndarray, rel: float = 2e-5) -> None:
    """|y - ref| <= rel * scale + 1e-6 where `scale` is the same computation on absolute values
    (sum of |terms|): the rounding error of a float32 sum of n terms is bounded by ~n*eps*sum|terms|
    and is typically sqrt(n)*eps*sum|terms| (eps = 6e-8); rel = 2e-5 covers sums of several
    thousand terms plus the float32 rounding of the bilinear weights."""
    assert y.shape == ref.shape, (y.shape, ref.shape)
    assert np.all(np.isfinite(y)), "non-finite output"
    err = np.abs(y.astype(np.float64) - ref)
    bound = rel * scale + 1e-6
    bad = err > bound
    assert not bad.any(), f"{bad.sum()} of {bad.size} values off; max err {err.max():.3g}, max ratio {(err / bound).max():.3g}"


def to_initializers(model: onnx.ModelProto, feeds: dict[str, np.ndarray], names) -> onnx.ModelProto:
    """Moves graph inputs `names` into initializers with the values of `feeds` (constant weights,
    as in exported models: the kernels then pack them once)."""
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    keep = [i for i in m.graph.input if i.name not in names]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    m.graph.initializer.extend(numpy_helper.from_array(feeds[n], n) for n in names)
    return m
