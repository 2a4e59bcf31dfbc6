"""NaN/Inf semantics of DeformConv2d and DynamicConv2d (docs/onnx-ops.md, "NaN and Inf"): the
kernels (both ISA variants), the PyTorch reference (edgeconv.functional) and the decomposed
fallback function agree, and all match a loop-by-loop numpy transcription of the documented rule."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import helper

import edgeconv.functional as ecf
from edgeconv.exporters.onnx import DEFORM_OP, DOMAIN, DYNAMIC_OP, fallbacks, register_schemas

from ec_ortops_util import deform_model, dynamic_model, session

F32 = np.float32
N, C, H, W, O, KH, KW = 1, 2, 6, 7, 2, 3, 3
PADS = [1, 1, 1, 1]


def _semantics_ref(x, w, offset, mask, b):
    """The documented rule, loop by loop: position in float32; no sample outside (-1, H) x (-1, W)
    or for NaN; corners outside the image skipped; float32 corner weights; mask times the sample."""
    out = np.zeros((N, O, H, W))
    with np.errstate(invalid="ignore", over="ignore"):
        for n, i, j, ky, kx in np.ndindex(N, H, W, KH, KW):
            k = ky * KW + kx
            py = F32(F32(i - PADS[0] + ky) + offset[n, 2 * k, i, j])
            px = F32(F32(j - PADS[1] + kx) + offset[n, 2 * k + 1, i, j])
            s = np.zeros(C)
            if -1 < py < H and -1 < px < W:
                y0, x0 = math.floor(py), math.floor(px)
                ly, lx = F32(py - F32(y0)), F32(px - F32(x0))
                hy, hx = F32(1) - ly, F32(1) - lx
                for yy, wy in ((y0, hy), (y0 + 1, ly)):
                    for xx, wx in ((x0, hx), (x0 + 1, lx)):
                        if 0 <= yy < H and 0 <= xx < W:
                            s = s + float(F32(wy * wx)) * x[n, :, yy, xx].astype(np.float64)
            col = float(mask[n, k, i, j]) * s
            out[n, :, i, j] += w[:, :, ky, kx].astype(np.float64) @ col
        out += b.astype(np.float64)[None, :, None, None]
    return out


def _deform_feeds(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(F32)
    w = rng.standard_normal((O, C, KH, KW)).astype(F32)
    offset = (rng.standard_normal((N, 2 * KH * KW, H, W)) * 0.7).astype(F32)
    mask = rng.random((N, KH * KW, H, W)).astype(F32)
    b = rng.standard_normal(O).astype(F32)
    x[0, 0, 0, 0] = np.inf          # pixel 0 is what invalid corners would gather
    x[0, 1, 2, 3] = -np.inf
    offset[0, 0, 1, 1] = 100.0      # out of the image, with a NaN mask: NaN
    mask[0, 0, 1, 1] = np.nan
    offset[0, 2, 2, 2] = -50.0      # out of the image, with an Inf mask: NaN
    mask[0, 1, 2, 2] = np.inf
    offset[0, 4, 3, 4] = np.nan     # non-finite positions: no sample (finite with a finite mask)
    offset[0, 5, 0, 2] = np.inf
    offset[0, 6, 2, 0] = -np.inf
    offset[0, 8, 0, 1] = -1.0       # tap (1, 1) at output (0, 1): py = -1 exactly, px = 0: no
    offset[0, 9, 0, 1] = -1.0       # sample (not 0 * the Inf pixel 0 of corner (0, 0))
    offset[0, 10, 3, 3] = 1e-30     # tiny fractions next to the -Inf pixel (weights underflow)
    offset[0, 11, 3, 3] = 1e-30
    offset[0, 12, 1, 2] = 0.0       # tap (2, 0) at output (1, 2) samples (2, 1) exactly: weight 0
    offset[0, 13, 1, 2] = 0.0       # for corner (2, 2); the -Inf pixel is (2, 3): not involved
    return {"X": x, "W": w, "offset": offset, "mask": mask, "B": b}


def _assert_same_nonfinite(y, ref, what):
    y = y.astype(np.float64)
    for pred in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(pred(y), pred(ref), err_msg=f"{what}: {pred.__name__} pattern")
    fin = np.isfinite(ref)
    np.testing.assert_allclose(y[fin], ref[fin], rtol=1e-4, atol=1e-4, err_msg=what)  # 18-term float32 sums


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deform_nonfinite_semantics(lib_path, isa, seed):
    f = _deform_feeds(seed)
    ref = _semantics_ref(f["X"], f["W"], f["offset"], f["mask"], f["B"])
    assert np.isfinite(ref).mean() > 0.3
    assert np.isnan(ref[0, :, 1, 1]).all() and np.isnan(ref[0, :, 2, 2]).all()  # the NaN/Inf masks

    model, names = deform_model(True, True, pads=PADS)
    _assert_same_nonfinite(session(model, lib_path).run(None, {k: f[k] for k in names})[0], ref, "kernel")

    t = {k: torch.from_numpy(v) for k, v in f.items()}
    y_torch = ecf.deform_conv2d(t["X"], t["offset"], t["W"], t["B"], padding=1, mask=t["mask"]).numpy()
    _assert_same_nonfinite(y_torch, ref, "edgeconv.functional")

    register_schemas()
    for opset in (13, 20):
        fn = fallbacks.deform_decomposed_function(opset, True, True)
        m, _ = deform_model(True, True, pads=PADS)
        m.functions.append(fn)
        m.opset_import[0].version = opset
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])  # no library
        _assert_same_nonfinite(sess.run(None, {k: f[k] for k in names})[0], ref, f"decomposed fallback opset {opset}")


def _dynamic_feeds(seed):
    rng = np.random.default_rng(seed)
    return {"X": rng.standard_normal((3, 2, 5, 5)).astype(F32),
            "W": rng.standard_normal((2, 4, 2, 3, 3)).astype(F32),
            "attention": rng.random((3, 2)).astype(F32),
            "B": rng.standard_normal((2, 4)).astype(F32)}


def _dynamic_runs(lib, f, fallback: bool):
    t = {k: torch.from_numpy(v) for k, v in f.items()}
    runs = {"kernel": session(dynamic_model(True, pads=PADS)[0], lib).run(None, f)[0],
            "edgeconv.functional": ecf.dynamic_conv2d(t["X"], t["W"], t["attention"], t["B"], padding=1).numpy()}
    if fallback:
        register_schemas()
        m, _ = dynamic_model(True, pads=PADS)
        m.functions.append(fallbacks.dynamic_decomposed_function(20, True))
        m.opset_import[0].version = 20
        runs["fallback"] = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, f)[0]
    return runs


def test_dynamic_nan_semantics(lib_path, isa):
    """NaN in a sample's attention makes that sample NaN; a NaN weight makes its output channel NaN
    (every output multiplies it, padding zeros included); other samples/channels stay finite."""
    f = _dynamic_feeds(4)
    f["attention"][0, 1] = np.nan
    f["W"][1, 2, 0, 1, 1] = np.nan
    expect_nan = np.zeros((3, 4, 5, 5), bool)
    expect_nan[0] = True
    expect_nan[:, 2] = True
    for what, y in _dynamic_runs(lib_path, f, fallback=True).items():
        np.testing.assert_array_equal(np.isnan(y), expect_nan, err_msg=what)


def test_dynamic_inf_input_follows_mixed_weights(lib_path, isa):
    """+Inf in X: the kernel and the PyTorch reference convolve with the mixed weight
    sum_k a_k W_k (the op's definition), so the sign of each affected output is that of the mixed
    tap times +Inf. (The fallback, sum_k a_k conv(X, W_k), may give NaN there: documented.)"""
    f = _dynamic_feeds(5)
    f["X"][1, 0, 2, 2] = np.inf
    mixed = np.einsum("k,kocij->ocij", f["attention"][1].astype(np.float64), f["W"].astype(np.float64))
    runs = _dynamic_runs(lib_path, f, fallback=False)
    for what, y in runs.items():
        assert np.isfinite(np.delete(y, 1, axis=0)).all(), what
        for o, i, j in np.ndindex(4, 5, 5):
            ky, kx = 2 - i + 1, 2 - j + 1  # tap that reads X[.., 2, 2] at output (i, j), pads 1
            if 0 <= ky < 3 and 0 <= kx < 3:
                assert y[1, o, i, j] == np.sign(mixed[o, 0, ky, kx]) * np.inf, (what, o, i, j)
            else:
                assert np.isfinite(y[1, o, i, j]), (what, o, i, j)


def test_dynamic_depthwise_nonfinite(lib_path, isa):
    """Depthwise path (C/group == 1: a direct loop that only visits the taps inside the image): an
    Inf/NaN mixed weight still multiplies the padding zeros (NaN where its tap reaches into the
    padding, +-Inf elsewhere), and Inf/NaN pixels spread as in any IEEE convolution. Reference: the
    float64 convolution of the zero-padded input (ec_ortops_util.conv2d_ref), same NaN/+-Inf pattern
    and close finite values."""
    from ec_ortops_util import check_close, dynamic_conv2d_ref

    rng = np.random.default_rng(7)
    f = {"X": rng.standard_normal((2, 6, 9, 20)).astype(F32),
         "W": rng.standard_normal((3, 6, 1, 3, 3)).astype(F32),
         "attention": rng.random((2, 3)).astype(F32) + F32(0.1),
         "B": rng.standard_normal((3, 6)).astype(F32)}
    f["W"][1, 0, 0, 0, 0] = np.inf
    f["W"][0, 2, 0, 2, 1] = np.nan
    f["W"][2, 4, 0, 1, 2] = -np.inf
    f["X"][0, 1, 0, 3] = np.inf
    f["X"][1, 3, 4, 4] = np.nan
    f["X"][1, 5, 8, 19] = -np.inf
    kw = dict(strides=(1, 2), pads=(1, 2, 0, 1), dilations=(1, 1), group=6)
    model, names = dynamic_model(True, strides=[1, 2], pads=[1, 2, 0, 1], group=6)
    y = session(model, lib_path).run(None, f)[0]
    ref = dynamic_conv2d_ref(f["X"], f["W"], f["attention"], f["B"], **kw)
    assert np.isnan(ref[:, 0]).any() and np.isinf(ref[:, 0]).any()  # the Inf tap hits padding and pixels
    _assert_same_nonfinite(y, ref, "depthwise kernel")
    finite = np.isfinite(ref)
    absref = dynamic_conv2d_ref(np.abs(f["X"]), np.abs(f["W"]), f["attention"], np.abs(f["B"]), **kw)
    check_close(y[finite], ref[finite], absref[finite])
