"""1x1 convolutions on a 1x1 image (classifier heads written as convs, squeeze-excite convs): a
matrix-vector product that streams each weight once, on the blocked pointwise kernel.

In NCHW the pointwise kernel vectorises along the image width, which a 1x1 image does not have:
a 1x1280 -> 1000 classifier head took 0.36-0.87 ms scalar (5 MB of weights). On a 1x1 image
NCHW and NCHW[b]c store the channels in the same order, so any such conv can run on the blocked
kernel (vectorised over ``b`` output channels, weights ``OIHW[b]i[b]o`` read in one sequential
stream per register tile) with its constant weight re-laid out at compile time; channel counts
that are not whole blocks (1000 classes) are zero-padded and the output cropped.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tvm
from tvm import relax

from .conv import ConvSpec, _round_up

__all__ = ["is_gemv", "is_gemv_matmul", "lower_gemv", "dense_weight"]


def is_gemv(spec: ConvSpec, weight) -> bool:
    """A dense 1x1 conv on one 1x1 image with a constant weight."""
    return (spec.N == 1 and spec.H == spec.W == 1 and spec.KH == spec.KW == 1 and spec.groups == 1
            and spec.padding == (0, 0, 0, 0) and isinstance(weight, tvm.ir.expr.Constant))


def is_gemv_matmul(a_shape: tuple, b) -> bool:
    """``matmul(a, b)`` of one row ``a`` (1, .., 1, K) by a constant matrix ``b`` (K, N): a
    Linear / Gemm classifier head, whose weights the pointwise kernel would otherwise read as a
    1-channel image 1000 columns wide (0.69 ms for 1x1280 -> 1000, 7.5 GB/s)."""
    return (isinstance(b, tvm.ir.expr.Constant) and len(b.ty.shape) == 2 and b.ty.dtype == "float32"
            and all(d == 1 for d in a_shape[:-1]))


def dense_weight(weight: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """(O, C) from OIHW or OIHW[b]i[b]o (``[ob, cb, 0, 0, ci, co] = W[ob*b + co, cb*b + ci]``)."""
    if spec.block:
        return weight[:, :, 0, 0].transpose(0, 3, 1, 2).reshape(spec.O, spec.C)
    return weight.reshape(spec.O, spec.C)


def blocked_gemv_weight(dense: np.ndarray, block: int) -> np.ndarray:
    """(O, C) -> zero-padded OIHW[b]i[b]o of whole blocks."""
    O, C = dense.shape
    Op, Cp = _round_up(O, block), _round_up(C, block)
    padded = np.zeros((Op, Cp), np.float32)
    padded[:O, :C] = dense
    return np.ascontiguousarray(padded.reshape(Op // block, block, Cp // block, block)
                                .transpose(0, 2, 3, 1)[:, :, None, None])


def lower_gemv(x: relax.Expr, dense: np.ndarray, spec: ConvSpec, gvar_of, bias_vec, out_shape, block: int):
    """Replacement of ``act(conv(x, W) [+ bias])`` for :func:`is_gemv` convs and of
    :func:`is_gemv_matmul` products: ``dense`` is the (O, C) weight matrix, ``gvar_of(spec)``
    returns the kernel of a ConvSpec, ``bias_vec`` is the (O,) bias or None."""
    O, C = spec.O, spec.C
    Op, Cp = _round_up(O, block), _round_up(C, block)
    kernel = dataclasses.replace(spec, C=Cp, O=Op, stride=(1, 1), block=block)
    weight = blocked_gemv_weight(dense, block)
    x = relax.op.reshape(x, [1, C])
    if Cp > C:
        x = relax.op.concat([x, relax.const(np.zeros((1, Cp - C), np.float32))], axis=1)
    args = [relax.op.reshape(x, [1, Cp // block, 1, 1, block]), relax.const(weight)]
    if bias_vec is not None:
        args.append(relax.const(np.pad(bias_vec, (0, Op - O)).astype(np.float32).reshape(Op // block, block)))
    y = relax.call_tir(gvar_of(kernel), args, relax.TensorType([1, Op // block, 1, 1, block], "float32"))
    y = relax.op.reshape(y, [1, Op])
    if Op > O:
        y = relax.op.strided_slice(y, axes=[1], begin=[0], end=[O])
    return relax.op.reshape(y, out_shape)
