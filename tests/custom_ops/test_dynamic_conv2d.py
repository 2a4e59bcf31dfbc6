"""edgeconv.DynamicConv2d kernel: parity with the numpy formula of dynamic convolution."""

from __future__ import annotations

import numpy as np
import pytest

from ec_ortops_util import check_close, dynamic_conv2d_ref, dynamic_model, session, to_initializers


def _case(N, C, H, W, O, K, KH, KW, group=1, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    feeds = {
        "X": rng.standard_normal((N, C, H, W), dtype=np.float32),
        "W": rng.standard_normal((K, O, C // group, KH, KW), dtype=np.float32),
        "attention": rng.dirichlet(np.ones(K), size=N).astype(np.float32),
    }
    if bias:
        feeds["B"] = rng.standard_normal((K, O), dtype=np.float32)
    return feeds


CASES = [
    # N, C, H, W, O, K, KH, KW, strides, pads, dilations, group, bias
    (1, 4, 8, 8, 6, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, True),
    (3, 6, 9, 7, 6, 2, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 2, False),
    (2, 8, 10, 10, 8, 4, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1), 4, True),
    (8, 4, 6, 7, 4, 3, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1, True),
    (2, 6, 11, 9, 9, 4, 2, 3, (1, 2), (0, 1, 1, 0), (2, 1), 3, True),
    (1, 8, 8, 8, 8, 1, 3, 3, (1, 1), (1, 1, 1, 1), (2, 2), 8, False),  # depthwise, single expert
    (2, 64, 9, 9, 32, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, True),
]

# Depthwise (C/group == 1): the direct per-plane path. Widths past one AVX vector (8) and odd
# tails, stride 2 (the AVX2 even-lane row) and 3 (scalar rows), asymmetric pads wider than the
# kernel's reach on one side (taps entirely in the padding), channel multipliers O/group > 1.
DEPTHWISE_CASES = [
    (1, 16, 14, 14, 16, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 16, True),
    (3, 12, 19, 21, 12, 4, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1), 12, False),
    (3, 10, 23, 29, 10, 3, 5, 5, (2, 2), (2, 2, 2, 2), (1, 1), 10, True),
    (2, 8, 17, 25, 8, 2, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), 8, True),
    (3, 6, 13, 26, 6, 4, 3, 5, (2, 1), (0, 3, 2, 1), (1, 2), 6, False),
    (2, 7, 12, 31, 7, 2, 3, 3, (3, 3), (4, 0, 1, 5), (1, 1), 7, True),
    (3, 5, 11, 20, 15, 4, 3, 3, (1, 2), (1, 1, 1, 1), (1, 1), 5, True),   # channel multiplier 3
    (2, 1, 9, 33, 4, 2, 5, 3, (1, 1), (2, 1, 2, 1), (2, 1), 1, False),    # C = 1, group 1
    # rows wider than 64 outputs (the AVX2 variant's tap-by-tap loop): strides 1, 2 and 3
    (1, 3, 6, 75, 3, 2, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 3, True),
    (2, 4, 9, 160, 4, 2, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 4, True),
    (1, 3, 7, 220, 6, 3, 5, 5, (1, 3), (2, 0, 2, 3), (1, 2), 3, False),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES + DEPTHWISE_CASES,
                         ids=lambda c: "N{}C{}H{}W{}O{}K{}k{}x{}g{}s{}{}".format(*c[:8], c[11], *c[8]))
def test_parity_numpy(lib_path, case, threads, isa):
    N, C, H, W, O, K, KH, KW, strides, pads, dil, group, bias = case
    feeds = _case(N, C, H, W, O, K, KH, KW, group, bias, seed=sum(case[:8]))
    attrs = dict(strides=list(strides), pads=list(pads), dilations=list(dil), group=group)
    model, names = dynamic_model(bias, **attrs)
    y = session(model, lib_path, threads).run(None, {k: feeds[k] for k in names})[0]
    ref = dynamic_conv2d_ref(feeds["X"], feeds["W"], feeds["attention"], feeds.get("B"), strides=strides, pads=pads,
                             dilations=dil, group=group)
    absref = dynamic_conv2d_ref(np.abs(feeds["X"]), np.abs(feeds["W"]), np.abs(feeds["attention"]),
                                None if not bias else np.abs(feeds["B"]), strides=strides, pads=pads, dilations=dil,
                                group=group)
    # Depthwise: each output is a sum of only KH*KW products (+ bias) of weights mixed from K
    # experts, so the worst-case float32 error bound (K + KH*KW + 2) * u * sum|terms| (u = 2^-24:
    # mixing, summation, product roundings) is used with a 2x margin: ~100x tighter than the GEMM
    # cases' bound, which must cover reductions of thousands of terms.
    rel = (K + KH * KW + 2) * 2.0**-23 if C // group == 1 else 2e-5
    check_close(y, ref, absref, rel=rel)


def test_one_hot_attention_selects_expert(lib_path):
    """attention = e_k gives exactly the conv with W[k] (and B[k])."""
    feeds = _case(4, 6, 7, 7, 4, 4, 3, 3, group=2, bias=True, seed=2)
    feeds["attention"] = np.eye(4, dtype=np.float32)[[2, 0, 3, 1]]
    attrs = dict(strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=2)
    model, names = dynamic_model(True, **attrs)
    y = session(model, lib_path).run(None, {k: feeds[k] for k in names})[0]
    from ec_ortops_util import conv2d_ref

    for n, k in enumerate([2, 0, 3, 1]):
        ref = conv2d_ref(feeds["X"][n:n + 1], feeds["W"][k], feeds["B"][k], pads=(1, 1, 1, 1), group=2)
        np.testing.assert_allclose(y[n:n + 1], ref, rtol=1e-5, atol=1e-4)


def test_batch_zero(lib_path):
    feeds = _case(1, 4, 6, 6, 3, 2, 3, 3)
    feeds["X"] = feeds["X"][:0]
    feeds["attention"] = feeds["attention"][:0]
    model, names = dynamic_model(True, pads=[1, 1, 1, 1])
    y = session(model, lib_path).run(None, {k: feeds[k] for k in names})[0]
    assert y.shape == (0, 3, 6, 6)


def test_benchmark_decompositions_agree(lib_path):
    """The standard-op decompositions timed by the benchmark compute the same function."""
    import onnxruntime as ort

    from edgeconv.bench.kernels import Shape, _dynamic_models, _inputs

    s = Shape.parse("3x8x9x9-6k3")
    feeds = _inputs(s, 4, seed=1)
    outs = {}
    for name, model in _dynamic_models(s, 4).items():
        so = ort.SessionOptions()
        if name == "edgeconv":
            so.register_custom_ops_library(lib_path)
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        outs[name] = sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})[0]
    ref = dynamic_conv2d_ref(feeds["X"], feeds["Wk"], feeds["A"], feeds["Bk"], pads=(1, 1, 1, 1))
    for name in ("edgeconv", "decomp_mix", "decomp_kconv"):
        np.testing.assert_allclose(outs[name], ref, rtol=1e-4, atol=1e-3, err_msg=name)


@pytest.mark.parametrize("group", [1, 3])
def test_constant_weights_cached(lib_path, isa, group):
    """W, B as initializers: the experts are packed once and mixed per call."""
    feeds = _case(3, 12, 8, 9, 21, 4, 3, 3, group=group, bias=True, seed=5)
    attrs = dict(strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=group)
    model, names = dynamic_model(True, **attrs)
    model = to_initializers(model, feeds, ["W", "B"])
    sess = session(model, lib_path, threads=2)
    for seed in (0, 1):
        att = np.random.default_rng(seed).dirichlet(np.ones(4), size=3).astype(np.float32)
        y = sess.run(None, {"X": feeds["X"], "attention": att})[0]
        kw = dict(pads=(1, 1, 1, 1), group=group)
        ref = dynamic_conv2d_ref(feeds["X"], feeds["W"], att, feeds["B"], **kw)
        absref = dynamic_conv2d_ref(np.abs(feeds["X"]), np.abs(feeds["W"]), att, np.abs(feeds["B"]), **kw)
        check_close(y, ref, absref)
