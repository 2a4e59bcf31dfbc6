"""Hardening of libedgeconv_ort against untrusted models (issue 15): overflow-checked shape
arithmetic, bounded scratch memory, strict attributes, session config entries. Every case the fuzz
campaign of the issue found is a regression test here."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ec_ortops_util import deform_model, dynamic_model, session

HERE = Path(__file__).resolve().parent
I64_MAX = 2**63 - 1


def _ort_errors():
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

    return (Fail, InvalidArgument, RuntimeException)


def _model(op: str, empty: dict[str, list[int]], **attrs) -> onnx.ModelProto:
    """A one-node model whose inputs `empty` are zero-size initializers with the given dims: unlike
    numpy arrays, a TensorProto may have a 0 dim next to dims whose product overflows int64."""
    model, _ = deform_model(False, False, **attrs) if op == "deform" else dynamic_model(False, **attrs)
    keep = [i for i in model.graph.input if i.name not in empty]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    model.graph.initializer.extend(helper.make_tensor(n, TensorProto.FLOAT, d, []) for n, d in empty.items())
    return model


def _error(model, feeds, lib, **config) -> str:
    with pytest.raises(_ort_errors()) as e:
        sess = session(model, lib, **config)
        sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})
    return str(e.value)


def _x(n=1, c=4, h=2, w=2):
    return np.ones((n, c, h, w), np.float32)


def _zeros(*shape):
    return np.zeros(shape, np.float32)


# name: (op, zero-size initializers, feeds, attributes, expected message)
OVERFLOW_CASES = {
    # (k-1)*dil overflowed: a kernel of height 2^63-1 on a 2-pixel image gave an output [1, 0, 7, 4]
    "kernel_extent": ("deform", {"W": [0, 4, I64_MAX, 3]}, {"X": _x(), "offset": _zeros(1, 18, 1, 1)}, {},
                      "input 'W' kernel height 9223372036854775807 (dilation 1) is larger than the padded input 'X' height 2"),
    "kernel_extent_dilated": ("deform", {"W": [0, 4, 2, 2**40]}, {"X": _x(w=3), "offset": _zeros(1, 8, 1, 1)},
                              {"dilations": [1, 2**24]},
                              "input 'W' kernel width 1099511627776 (dilation 16777216) is larger than the padded input"),
    "dynamic_kernel_extent": ("dynamic", {"W": [1, 0, 4, 2**62, 2**62]}, {"X": _x(), "attention": _zeros(1, 1)}, {},
                              "input 'W' kernel height 4611686018427387904 (dilation 1) is larger than the padded"),
    "kernel_larger_than_padded": ("deform", {"W": [0, 4, 5, 1]}, {"X": _x(), "offset": _zeros(1, 10, 1, 2)},
                                  {"pads": [1, 0, 1, 0]},
                                  "input 'W' kernel height 5 (dilation 1) is larger than the padded input 'X' height 2 + pads 1+1"),
    # Cg*group wrapped around to C: an invalid W was accepted
    "cg_times_group": ("deform", {"W": [0, 2**62 + 1, 1, 1]}, {"X": _x(), "offset": _zeros(1, 2, 2, 2)}, {"group": 4},
                       "input 'W' must have C/group = 1 input channels (dim 1)"),
    "dynamic_cg_times_group": ("dynamic", {"W": [1, 0, 2**62 + 1, 1, 1]}, {"X": _x(), "attention": _zeros(1, 1)},
                               {"group": 4}, "input 'W' must have C/group = 1 input channels (dim 2)"),
    # offset_group*2*kh*kw wrapped ("offset must have -12 channels", an offset with 0 channels accepted)
    "offset_channels": ("deform", {"X": [0, 16, 2**30, 2**30], "W": [0, 1, 2**30, 2**30]},
                        {"offset": _zeros(0, 0, 1, 1)}, {"offset_group": 16, "group": 16},
                        "input 'offset' channels offset_group*2*kh*kw overflows int64"),
    # kh*kw could wrap with 2^32 x 2^32 kernels: the input they must fit in is bounded first
    "kh_times_kw": ("deform", {"X": [0, 1, 2**32, 2**32], "W": [0, 1, 2**32, 2**32]}, {"offset": _zeros(0, 2, 1, 1)},
                    {}, "input 'X' spatial size is too large (> 2^30)"),
    # kh*kw*C/group (the GEMM reduction size) does not fit in int64
    "reduction_size": ("deform", {"X": [0, 2**40, 2**20, 2**20], "W": [0, 2**40, 2**20, 2**20]},
                       {"offset": _zeros(0, 2, 1, 1)}, {}, "input 'W' reduction size C/group*kh*kw overflows int64"),
    "dynamic_reduction_size": ("dynamic", {"X": [0, 2**40, 2**20, 2**20], "W": [1, 0, 2**40, 2**20, 2**20]},
                               {"attention": _zeros(0, 1)}, {}, "input 'W' reduction size C/group*kh*kw overflows"),
}


@pytest.mark.parametrize("name", list(OVERFLOW_CASES))
def test_overflowing_shapes_rejected(lib_path, name):
    op, empty, feeds, attrs, msg = OVERFLOW_CASES[name]
    err = _error(_model(op, empty, **attrs), feeds, lib_path)
    assert msg in err
    assert "INVALID_ARGUMENT" in err
    assert ("edgeconv.DeformConv2d" if op == "deform" else "edgeconv.DynamicConv2d") in err


def test_zero_size_batch_and_channels_valid(lib_path):
    """Zero-size N or O are valid (empty output of the right shape), whatever the other W dims."""
    sess = session(_model("deform", {"W": [0, 4, 3, 3]}, pads=[1, 1, 1, 1]), lib_path)
    y = sess.run(None, {"X": _x(2, 4, 5, 5), "offset": _zeros(2, 18, 5, 5)})[0]
    assert y.shape == (2, 0, 5, 5)
    model, _ = dynamic_model(False)
    y = session(model, lib_path).run(None, {"X": _zeros(0, 4, 5, 5), "W": _zeros(2, 3, 4, 3, 3),
                                            "attention": _zeros(0, 2)})[0]
    assert y.shape == (0, 3, 3, 3)


# ---- bounded memory ----------------------------------------------------------------------------

def _run_script(code: str, timeout: float = 120) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=timeout, cwd=HERE)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_amplification_case_bounded_memory(lib_path):
    """1 MB model, 2 KB input, one output channel per group: the per-sample mixed weights are built
    per chunk of samples, not as N panel-padded copies (8.3 GB RSS before, ~0.2 GB after)."""
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("peak RSS under AddressSanitizer includes its shadow memory and quarantine")
    out = subprocess.run([sys.executable, str(HERE / "amplification_case.py"), lib_path, "auto"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rss_mb = float(out.stdout.split("maxrss_mb=")[1].split()[0])
    assert rss_mb < 600, out.stdout


@pytest.mark.parametrize("path", ["gemm", "depthwise"])
@pytest.mark.parametrize("constant_w", [False, True], ids=["W_input", "W_initializer"])
def test_dynamic_sample_chunks(lib_path, isa, constant_w, path):
    """Samples whose mixed weights span several chunks of 64 MB (GEMM path: 70 samples of 2 MB of
    panel-padded weights on AVX2; depthwise path, C/group == 1: 600 samples of 128 KB): every
    sample gets its own mixture. Reference: the one tap that hits the 1x1 image,
    Y[n, o, i, j] = sum_e a[n, e] (sum_c W[e, o, c, c0-i, c0-j] X[n, c of o's group] + B[e, o])."""
    rng = np.random.default_rng(3)
    (n, group, cg), k, ks, c = {"gemm": (70, 1, 2), "depthwise": (600, 2, 1)}[path], 2, 128, 64
    feeds = {"X": rng.standard_normal((n, 2, 1, 1), dtype=np.float32),
             "W": rng.standard_normal((k, 2, cg, ks, ks), dtype=np.float32),
             "attention": rng.random((n, k), dtype=np.float32),
             "B": rng.standard_normal((k, 2), dtype=np.float32)}
    model, names = dynamic_model(True, pads=[c] * 4, group=group)
    if constant_w:
        from ec_ortops_util import to_initializers

        model = to_initializers(model, feeds, ["W"])
    sess = session(model, lib_path)
    y = sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})[0]
    a, w, x = feeds["attention"].astype(np.float64), feeds["W"].astype(np.float64), feeds["X"][:, :, 0, 0]
    taps = w[:, :, :, c - np.arange(2)[:, None], c - np.arange(2)[None, :]]  # [K, O, Cg, 2, 2]
    x_of_o = x.reshape(n, group, 1, cg).repeat(2 // group, axis=2).reshape(n, 2, cg)  # [N, O, Cg]
    ref = np.einsum("ne,eocij,noc->noij", a, taps, x_of_o) + (a @ feeds["B"])[:, :, None, None]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)  # sums of <= 4 float32 terms


def test_thread_scratch_released(lib_path):
    """A call whose column tile needs ~134 MB of thread-local scratch does not leave it resident on
    the calling thread once the session is gone (only up to 8 MiB is retained)."""
    out = _run_script(f"""
        import gc, numpy as np
        from ec_ortops_util import dynamic_model, session
        def rss_mb():
            return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
        feeds = {{"X": np.ones((1, 32, 1, 1), np.float32), "W": np.ones((1, 1, 32, 512, 512), np.float32),
                  "attention": np.ones((1, 1), np.float32)}}
        model, names = dynamic_model(False, pads=[256] * 4)
        base = rss_mb()
        sess = session(model, {lib_path!r})
        y = sess.run(None, feeds)[0]
        assert y.shape == (1, 1, 2, 2)
        del sess, y
        gc.collect()
        print("growth_mb", rss_mb() - base)
    """)
    growth = float(out.split("growth_mb")[1])
    assert growth < 64, out


def test_memory_limit(lib_path):
    """Above edgeconv.max_memory_bytes (output + scratch of one call) the call fails with a clear
    error instead of allocating; 0 means no limit."""
    model, names = dynamic_model(False, pads=[1] * 4)
    feeds = {"X": np.ones((2, 4, 6, 6), np.float32), "W": np.ones((3, 5, 4, 3, 3), np.float32),
             "attention": np.ones((2, 3), np.float32)}
    err = _error(model, feeds, lib_path, **{"edgeconv.max_memory_bytes": "1000"})
    # Y: 2*5*6*6 floats = 1440 bytes, already above 1000
    assert "edgeconv.DynamicConv2d: needs 1440 bytes of memory (output and scratch, with the output 'Y')" in err
    assert "above the limit of 1000 bytes set by session config entry 'edgeconv.max_memory_bytes'" in err
    for limit in ("0", str(2**40)):
        y = session(model, lib_path, **{"edgeconv.max_memory_bytes": limit}).run(None, feeds)[0]
        assert y.shape == (2, 5, 6, 6)
    err = _error(model, feeds, lib_path, **{"edgeconv.max_memory_bytes": "2000"})  # Y fits, not X
    assert "needs 2592 bytes of memory (output and scratch, with the NHWC copy of input 'X')" in err
    # depthwise path (C/group == 1: no NHWC copy nor column buffer): Y 1152 + mixed weights 288
    # bytes, then the per-tap tables (96 bytes of output ranges; AVX2: 768 bytes of lane masks)
    dw_feeds = {"X": feeds["X"], "W": np.ones((3, 4, 1, 3, 3), np.float32), "attention": feeds["attention"]}
    dw_model, _ = dynamic_model(False, pads=[1] * 4, group=4)
    err = _error(dw_model, dw_feeds, lib_path, **{"edgeconv.max_memory_bytes": "1200"})
    assert "needs 1440 bytes of memory (output and scratch, with the mixed weights of a chunk of samples)" in err
    y = session(dw_model, lib_path, **{"edgeconv.max_memory_bytes": "2304"}).run(None, dw_feeds)[0]
    assert y.shape == (2, 4, 6, 6)
    dmodel, _ = deform_model(False, False)
    dfeeds = {"X": np.ones((1, 4, 64, 64), np.float32), "W": np.ones((4, 4, 3, 3), np.float32),
              "offset": np.zeros((1, 18, 62, 62), np.float32)}
    assert "edgeconv.DeformConv2d: needs" in _error(dmodel, dfeeds, lib_path, **{"edgeconv.max_memory_bytes": "65536"})


def test_huge_output_rejected_by_default(lib_path):
    """A 1x1 image with pads 2^14 asks for a 32769 x 32769 output (4.3 GB): refused under the
    default limit of 2 GiB before onnxruntime allocates it."""
    model, _ = dynamic_model(False, pads=[2**14] * 4)
    feeds = {"X": np.ones((1, 1, 1, 1), np.float32), "W": np.ones((1, 1, 1, 1, 1), np.float32),
             "attention": np.ones((1, 1), np.float32)}
    err = _error(model, feeds, lib_path)
    assert "needs 4295229444 bytes of memory (output and scratch, with the output 'Y'), above the limit of 2147483648" in err


@pytest.mark.parametrize("key,value,msg", [
    ("edgeconv.max_memory_bytes", "-1", "'edgeconv.max_memory_bytes' must be a number of bytes"),
    ("edgeconv.max_memory_bytes", "1e9", "'edgeconv.max_memory_bytes' must be a number of bytes"),
    ("edgeconv.max_memory_bytes", "99999999999999999999", "must be a number of bytes (decimal int64; 0 = no limit)"),
    ("edgeconv.isa", "sse", "'edgeconv.isa' must be auto, generic or avx2, got 'sse'"),
])
def test_bad_config_entries(lib_path, key, value, msg):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.add_session_config_entry(key, value)
    with pytest.raises(Exception) as e:
        so.register_custom_ops_library(lib_path)
    assert msg in str(e.value)


# ---- strict attributes (checked when the session is created) -----------------------------------

STRICT_ATTRS = [
    ("deform", {"auto_pad": "SAME_UPPER"}, "attribute 'auto_pad' is not supported (supported: strides, pads"),
    ("dynamic", {"offset_group": 2}, "attribute 'offset_group' is not supported"),
    ("dynamic", {"auto_pad": "VALID"}, "attribute 'auto_pad' is not supported"),
    ("deform", {"strides": [1.0, 1.0]}, "attribute 'strides' must be ints (a list of int64), got floats"),
    ("deform", {"strides": 1}, "attribute 'strides' must be ints (a list of int64), got an int"),
    ("dynamic", {"pads": "1111"}, "attribute 'pads' must be ints (a list of int64), got a string"),
    ("dynamic", {"dilations": 2.0}, "attribute 'dilations' must be ints (a list of int64), got a float"),
    ("deform", {"group": [1]}, "attribute 'group' must be an int (int64), got ints"),
    ("deform", {"offset_group": 1.0}, "attribute 'offset_group' must be an int (int64), got a float"),
    ("dynamic", {"group": "1"}, "attribute 'group' must be an int (int64), got a string"),
]


@pytest.mark.parametrize("op,attrs,msg", STRICT_ATTRS, ids=[f"{s[0]}-{list(s[1])[0]}" for s in STRICT_ATTRS])
def test_strict_attributes(lib_path, op, attrs, msg):
    model = deform_model(True, True, **attrs)[0] if op == "deform" else dynamic_model(True, **attrs)[0]
    with pytest.raises(_ort_errors()) as e:
        session(model, lib_path)  # no run: the kernel is created with the session
    assert msg in str(e.value)


def test_empty_list_attribute(lib_path):
    node = helper.make_node("DeformConv2d", ["X", "W", "offset"], ["Y"], domain="edgeconv")
    node.attribute.append(helper.make_attribute("strides", [], attr_type=onnx.AttributeProto.INTS))
    from ec_ortops_util import make_model

    with pytest.raises(_ort_errors()) as e:
        session(make_model(node, ["X", "W", "offset"]), lib_path)
    assert "attribute 'strides' must be ints (a list of int64), got an empty list" in str(e.value)
