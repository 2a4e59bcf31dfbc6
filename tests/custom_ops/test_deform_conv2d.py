"""edgeconv.DeformConv2d kernel: parity with numpy and ONNX references, edge cases, threading."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from ec_ortops_util import (
    check_close,
    deform_conv2d_ref,
    deform_model,
    onnx_deform_model,
    out_size,
    session,
    to_initializers,
)

HERE = Path(__file__).resolve().parent


def _case(N, C, H, W, O, KH, KW, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1, offset_group=1,
          mask=True, bias=True, offset_scale=1.5, seed=0):
    rng = np.random.default_rng(seed)
    OH = out_size(H, KH, strides[0], pads[0], pads[2], dilations[0])
    OW = out_size(W, KW, strides[1], pads[1], pads[3], dilations[1])
    feeds = {
        "X": rng.standard_normal((N, C, H, W), dtype=np.float32),
        "W": rng.standard_normal((O, C // group, KH, KW), dtype=np.float32),
        "offset": (offset_scale * rng.standard_normal((N, offset_group * 2 * KH * KW, OH, OW))).astype(np.float32),
    }
    if mask:
        feeds["mask"] = rng.random((N, offset_group * KH * KW, OH, OW), dtype=np.float32)
    if bias:
        feeds["B"] = rng.standard_normal(O, dtype=np.float32)
    attrs = dict(strides=list(strides), pads=list(pads), dilations=list(dilations), group=group,
                 offset_group=offset_group)
    return feeds, attrs


def _refs(feeds, attrs):
    ref = deform_conv2d_ref(feeds["X"], feeds["W"], feeds["offset"], feeds.get("mask"), feeds.get("B"), **attrs)
    absref = deform_conv2d_ref(np.abs(feeds["X"]), np.abs(feeds["W"]), feeds["offset"],
                               None if "mask" not in feeds else np.abs(feeds["mask"]),
                               None if "B" not in feeds else np.abs(feeds["B"]), **attrs)
    return ref, absref


def _run(lib, feeds, attrs, threads=1):
    model, names = deform_model("mask" in feeds, "B" in feeds, **attrs)
    sess = session(model, lib, threads)
    return sess.run(None, {k: feeds[k] for k in names})[0]


# A sensible product: every feature appears with several partners, not a full cross product.
CASES = [
    # N, C, H, W, O, KH, KW, strides, pads, dilations, group, offset_group, mask, bias
    (1, 4, 7, 8, 6, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, 1, True, True),
    (2, 4, 9, 7, 4, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1, 2, False, True),
    (1, 6, 8, 8, 4, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), 2, 1, True, False),
    (3, 8, 6, 9, 8, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 2, 2, True, True),
    (1, 4, 11, 10, 5, 5, 5, (1, 2), (2, 1, 2, 3), (1, 1), 1, 4, True, True),
    (2, 6, 9, 9, 6, 2, 3, (2, 1), (0, 1, 1, 0), (2, 1), 3, 1, False, False),
    (8, 4, 5, 6, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 2), 2, 4, True, True),
    (4, 12, 10, 10, 6, 3, 3, (2, 2), (1, 1, 1, 1), (2, 2), 3, 2, True, True),
    (1, 16, 12, 12, 8, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 4, 8, True, False),
    (2, 64, 9, 9, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, 1, True, True),  # large enough for several tiles
    (2, 8, 1, 9, 8, 1, 3, (1, 1), (0, 1, 0, 1), (1, 1), 8, 8, True, True),  # depthwise, H = 1
    (1, 3, 12, 1, 2, 7, 1, (1, 1), (9, 0, 9, 0), (3, 1), 1, 3, True, False),  # W = 1, tall dilated kernel
    (1, 5, 4, 4, 1, 4, 4, (3, 3), (0, 0, 0, 0), (1, 1), 1, 5, False, True),  # 1x1 output, O = 1
    (1, 40, 30, 30, 20, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, 1, True, True),  # O not a multiple of 16
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}C{}H{}W{}O{}k{}x{}s{}p{}d{}g{}og{}m{:d}b{:d}".format(
    *c[:7], "".join(map(str, c[7])), "".join(map(str, c[8])), "".join(map(str, c[9])), *c[10:]))
def test_parity_numpy(lib_path, case, threads, isa):
    N, C, H, W, O, KH, KW, strides, pads, dil, group, og, mask, bias = case
    feeds, attrs = _case(N, C, H, W, O, KH, KW, strides, pads, dil, group, og, mask, bias, seed=hash(case) % 1000)
    y = _run(lib_path, feeds, attrs, threads)
    ref, absref = _refs(feeds, attrs)
    check_close(y, ref, absref)


def test_zero_offsets_equal_plain_conv(lib_path):
    """With zero offsets and no mask, DeformConv2d is an ordinary convolution (onnxruntime Conv)."""
    from onnx import TensorProto, helper

    feeds, attrs = _case(2, 8, 10, 9, 6, 3, 3, (1, 2), (1, 1, 1, 1), (2, 1), 2, 1, mask=False, bias=True)
    feeds["offset"][:] = 0
    y = _run(lib_path, feeds, attrs)
    node = helper.make_node("Conv", ["X", "W", "B"], ["Y"], strides=attrs["strides"], pads=attrs["pads"],
                            dilations=attrs["dilations"], group=attrs["group"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "X W B".split()],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None] * 4)])
    import onnxruntime as ort

    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    conv = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    y_conv = conv.run(None, {k: feeds[k] for k in "X W B".split()})[0]
    np.testing.assert_allclose(y, y_conv, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "mask,bias,attrs",
    [
        (True, True, dict(strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1, offset_group=1)),
        (False, True, dict(strides=[2, 1], pads=[0, 1, 1, 0], dilations=[1, 1], group=2, offset_group=2)),
        (True, False, dict(strides=[1, 1], pads=[1, 1, 1, 1], dilations=[2, 1], group=1, offset_group=2)),
        (False, False, dict(strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1], group=2, offset_group=1)),
    ],
)
def test_parity_onnx_reference(lib_path, mask, bias, attrs):
    """Against onnx.reference's DeformConv (opset 19; input order X, W, offset, B, mask). Tiny
    shapes: the reference evaluates one GridSample per output pixel and channel pair."""
    from onnx.reference import ReferenceEvaluator

    feeds, _ = _case(1, 4, 5, 6, 2, 3, 2, tuple(attrs["strides"]), tuple(attrs["pads"]), tuple(attrs["dilations"]),
                     attrs["group"], attrs["offset_group"], mask, bias, offset_scale=1.0, seed=7)
    y = _run(lib_path, feeds, attrs)
    ref_model = onnx_deform_model(mask, bias, **attrs)
    ref_names = [i.name for i in ref_model.graph.input]
    ref = ReferenceEvaluator(ref_model).run(None, {k: feeds[k] for k in ref_names})[0]
    _, absref = _refs(feeds, attrs)
    check_close(y, ref.astype(np.float64), absref)


def test_parity_onnxruntime_builtin(lib_path):
    """Against onnxruntime's own DeformConv (exists from onnxruntime 1.25)."""
    import onnxruntime as ort

    if tuple(int(v) for v in ort.__version__.split(".")[:2]) < (1, 25):
        pytest.skip("onnxruntime < 1.25 has no DeformConv kernel")
    attrs = dict(strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=2, offset_group=2)
    feeds, _ = _case(2, 8, 12, 11, 6, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 2, 2, True, True, seed=3)
    y = _run(lib_path, feeds, attrs)
    m = onnx_deform_model(True, True, **attrs)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    y_ort = sess.run(None, {k: feeds[k] for k in ["X", "W", "offset", "B", "mask"]})[0]
    _, absref = _refs(feeds, attrs)
    check_close(y, y_ort.astype(np.float64), absref, rel=4e-5)


@pytest.mark.parametrize("mask", [True, False])
def test_absent_mask_with_bias(lib_path, mask):
    """The exporter writes "" for an absent mask when B is present: (X, W, offset, "", B)."""
    feeds, attrs = _case(1, 4, 6, 6, 3, 3, 3, pads=(1, 1, 1, 1), mask=mask, bias=True)
    model, names = deform_model(mask, True, **attrs)
    assert [i for i in model.graph.node[0].input] == ["X", "W", "offset", "mask" if mask else "", "B"]
    y = _run(lib_path, feeds, attrs)
    ref, absref = _refs(feeds, attrs)
    check_close(y, ref, absref)


def test_far_and_nonfinite_offsets(lib_path):
    """Offsets far outside the image (1e6, -1e9, 3e38) give zero samples (no integer overflow);
    NaN / +-Inf offsets make that tap contribute zero."""
    feeds, attrs = _case(2, 6, 7, 8, 4, 3, 3, pads=(1, 1, 1, 1), group=2, offset_group=2, mask=True, bias=True)
    off = feeds["offset"]
    rng = np.random.default_rng(11)
    specials = np.array([1e6, -1e9, 3e38, -3e38, np.nan, np.inf, -np.inf, 2.0**31, -(2.0**31) - 0.5, 7.9999995],
                        dtype=np.float32)
    sel = rng.random(off.shape) < 0.35
    off[sel] = rng.choice(specials, size=int(sel.sum()))
    y = _run(lib_path, feeds, attrs, threads=2)
    ref, absref = _refs(feeds, attrs)
    check_close(y, ref, absref)
    # all offsets far away: output == bias
    feeds["offset"][:] = np.float32(-1e9)
    y = _run(lib_path, feeds, attrs)
    np.testing.assert_array_equal(y, np.broadcast_to(feeds["B"][None, :, None, None], y.shape))


def test_border_samples(lib_path):
    """Positions in (-1, 0) and (H-1, H): bilinear with the out-of-image corners as zero."""
    feeds, attrs = _case(1, 3, 5, 5, 2, 3, 3, pads=(1, 1, 1, 1), mask=False, bias=False)
    rng = np.random.default_rng(5)
    feeds["offset"] = rng.choice(np.array([-0.75, -0.25, 0.0, 0.5, 0.999, 1.25, 1.5, -1.0, 1.0], np.float32),
                                 size=feeds["offset"].shape).astype(np.float32)
    y = _run(lib_path, feeds, attrs)
    ref, absref = _refs(feeds, attrs)
    check_close(y, ref, absref)


def test_batch_zero(lib_path):
    feeds, attrs = _case(1, 4, 6, 6, 3, 3, 3, pads=(1, 1, 1, 1))
    for k in ("X", "offset", "mask"):
        feeds[k] = feeds[k][:0]
    y = _run(lib_path, feeds, attrs)
    assert y.shape == (0, 3, 6, 6)


def test_threads_share_one_session(lib_path):
    """Many Python threads running one session at once give identical results."""
    feeds, attrs = _case(2, 16, 14, 14, 16, 3, 3, pads=(1, 1, 1, 1), offset_group=2, seed=9)
    model, names = deform_model(True, True, **attrs)
    sess = session(model, lib_path, threads=2)
    inputs = {k: feeds[k] for k in names}
    expected = sess.run(None, inputs)[0]
    results, errors = [], []

    def worker():
        try:
            for _ in range(5):
                results.append(sess.run(None, inputs)[0])
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 30
    for r in results:
        np.testing.assert_array_equal(r, expected)


def test_generic_isa_matches_dispatched(lib_path):
    """The baseline kernels (x86-64 / aarch64; session config edgeconv.isa=generic) agree with the
    dispatched variant, also in a fresh process where env EDGECONV_ISA=generic picks them (read
    once, no config entry)."""
    feeds, attrs = _case(2, 16, 9, 10, 8, 3, 3, pads=(1, 1, 1, 1), offset_group=2, seed=4)
    model, names = deform_model(True, True, **attrs)
    inputs = {k: feeds[k] for k in names}
    y = session(model, lib_path, **{"edgeconv.isa": "auto"}).run(None, inputs)[0]
    y_generic = session(model, lib_path, **{"edgeconv.isa": "generic"}).run(None, inputs)[0]
    ref, absref = _refs(feeds, attrs)
    check_close(y_generic, ref, absref)
    check_close(y, y_generic.astype(np.float64), absref)
    code = (
        "import sys, numpy as np, onnxruntime as ort; sys.path.insert(0, %r)\n"
        "from test_deform_conv2d import _case\n"
        "from ec_ortops_util import deform_model\n"
        "feeds, attrs = _case(2, 16, 9, 10, 8, 3, 3, pads=(1, 1, 1, 1), offset_group=2, seed=4)\n"
        "model, names = deform_model(True, True, **attrs)\n"
        "so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.register_custom_ops_library(%r)\n"
        "sess = ort.InferenceSession(model.SerializeToString(), so, providers=['CPUExecutionProvider'])\n"
        "np.save(%r, sess.run(None, {k: feeds[k] for k in names})[0])\n"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "y.npy")
        subprocess.run([sys.executable, "-c", code % (str(HERE), lib_path, out)], check=True, timeout=120,
                       env=dict(os.environ, EDGECONV_ISA="generic"))
        np.testing.assert_array_equal(np.load(out), y_generic)


@pytest.mark.parametrize("group", [1, 2])
def test_constant_weights_cached(lib_path, isa, group):
    """W as an initializer is packed once (per ISA variant) and reused: repeated runs, new inputs
    and concurrent threads all give the reference result."""
    feeds, attrs = _case(2, 20, 9, 8, 34, 3, 3, pads=(1, 1, 1, 1), group=group, offset_group=2, seed=21)
    model, names = deform_model(True, True, **attrs)
    model = to_initializers(model, feeds, ["W", "B"])
    sess = session(model, lib_path, threads=2)
    ref, absref = _refs(feeds, attrs)
    inputs = {k: feeds[k] for k in ("X", "offset", "mask")}
    for _ in range(2):
        check_close(sess.run(None, inputs)[0], ref, absref)
    feeds2 = dict(feeds, X=feeds["X"][::-1].copy())
    ref2, absref2 = _refs(feeds2, attrs)
    outs = []
    threads = [threading.Thread(target=lambda: outs.append(sess.run(None, dict(inputs, X=feeds2["X"]))[0]))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outs) == 4
    for y in outs:
        check_close(y, ref2, absref2)
