"""Bad inputs and attributes raise onnxruntime errors naming the culprit; nothing crashes."""

from __future__ import annotations

import numpy as np
import pytest

from ec_ortops_util import deform_model, dynamic_model, session


def _ort_errors():
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

    return (Fail, InvalidArgument, RuntimeException)


def _feeds(N=1, C=4, H=6, W=6, O=4, k=3, og=1, oh=6, ow=6, mask=True, bias=True):
    rng = np.random.default_rng(0)
    f = {
        "X": rng.standard_normal((N, C, H, W), dtype=np.float32),
        "W": rng.standard_normal((O, C, k, k), dtype=np.float32),
        "offset": rng.standard_normal((N, og * 2 * k * k, oh, ow), dtype=np.float32),
    }
    if mask:
        f["mask"] = rng.random((N, og * k * k, oh, ow), dtype=np.float32)
    if bias:
        f["B"] = rng.standard_normal(O, dtype=np.float32)
    return f


def _deform_run(lib, feeds, **attrs):
    attrs.setdefault("pads", [1, 1, 1, 1])
    model, names = deform_model("mask" in feeds, "B" in feeds, **attrs)
    return session(model, lib).run(None, {k: feeds[k] for k in names})[0]


BAD_INPUTS = [
    ("rank X", lambda f: f.update(X=f["X"][0]), "input 'X' must have rank 4"),
    ("rank W", lambda f: f.update(W=f["W"][..., 0]), "input 'W' must have rank 4"),
    ("rank offset", lambda f: f.update(offset=f["offset"][0]), "input 'offset' must have rank 4"),
    ("offset channels", lambda f: f.update(offset=f["offset"][:, :17]),
     "input 'offset' must have 18 channels (offset_group*2*kh*kw), got 17"),
    ("offset spatial", lambda f: f.update(offset=f["offset"][:, :, :5]), "input 'offset' spatial size"),
    ("offset batch", lambda f: f.update(offset=np.concatenate([f["offset"]] * 2)), "input 'offset' batch"),
    ("mask channels", lambda f: f.update(mask=f["mask"][:, :8]), "input 'mask' must have 9 channels"),
    ("mask spatial", lambda f: f.update(mask=f["mask"][:, :, :, :4]), "input 'mask' spatial size"),
    ("mask rank", lambda f: f.update(mask=f["mask"][0]), "input 'mask' must have rank 4"),
    ("bias shape", lambda f: f.update(B=f["B"][:3]), "input 'B' must have shape [4]"),
    ("W channels", lambda f: f.update(W=f["W"][:, :3]), "input 'W' must have C/group = 4 input channels"),
    ("X no channels", lambda f: f.update(X=f["X"][:, :0]), "input 'X' must have at least one channel"),
    ("X empty spatial", lambda f: f.update(X=f["X"][:, :, :0]), "input 'X' has an empty spatial dimension"),
    ("W empty kernel", lambda f: f.update(W=f["W"][:, :, :0]), "input 'W' has an empty kernel"),
]


@pytest.mark.parametrize("name,mutate,msg", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_deform_bad_inputs(lib_path, name, mutate, msg):
    feeds = _feeds()
    mutate(feeds)
    with pytest.raises(_ort_errors()) as e:
        _deform_run(lib_path, feeds)
    assert msg in str(e.value)
    assert "edgeconv.DeformConv2d" in str(e.value)


def test_deform_zero_sized_output(lib_path):
    feeds = _feeds(H=2, W=2, oh=1, ow=1)
    with pytest.raises(_ort_errors()) as e:
        _deform_run(lib_path, feeds, pads=[0, 0, 0, 0])
    assert "output height would be <= 0" in str(e.value)


def test_deform_group_mismatch(lib_path):
    feeds = _feeds(C=4, O=6)
    feeds["W"] = feeds["W"][:, :1]
    feeds["B"] = np.zeros(6, np.float32)
    with pytest.raises(_ort_errors()) as e:
        _deform_run(lib_path, feeds, group=4)  # 6 output channels, 4 groups
    assert "input 'W' output channels (dim 0, 6) must be divisible by group (4)" in str(e.value)


def test_deform_offset_group_mismatch(lib_path):
    feeds = _feeds(C=4, og=3)
    with pytest.raises(_ort_errors()) as e:
        _deform_run(lib_path, feeds, offset_group=3)
    assert "must be divisible by offset_group (3)" in str(e.value)


BAD_ATTRS = [
    (dict(strides=[1]), "attribute 'strides' must have 2 values"),
    (dict(strides=[0, 1]), "attribute 'strides' values must be in [1, 2^24]"),
    (dict(pads=[1, 1]), "attribute 'pads' must have 4 values"),
    (dict(pads=[1, -1, 1, 1]), "attribute 'pads' values must be in [0, 2^24]"),
    (dict(pads=[1, 2**62, 1, 1]), "attribute 'pads' values must be in [0, 2^24]"),
    (dict(dilations=[0, 1]), "attribute 'dilations' values must be in [1, 2^24]"),
    (dict(dilations=[2**40, 1]), "attribute 'dilations' values must be in [1, 2^24]"),
    (dict(group=0), "attribute 'group' must be >= 1"),
    (dict(offset_group=-2), "attribute 'offset_group' must be >= 1"),
    (dict(kernel_shape=[5, 5]), "attribute 'kernel_shape' [5, 5] does not match input 'W'"),
]


@pytest.mark.parametrize("attrs,msg", BAD_ATTRS, ids=[str(a[0]) for a in BAD_ATTRS])
def test_deform_bad_attributes(lib_path, attrs, msg):
    with pytest.raises(_ort_errors()) as e:
        _deform_run(lib_path, _feeds(), **attrs)
    assert msg in str(e.value)


def test_deform_float_attribute_type(lib_path):
    with pytest.raises(_ort_errors()) as e:
        _deform_run(lib_path, _feeds(), strides=[1.0, 1.0])
    assert "strides" in str(e.value)


def test_deform_huge_offsets_no_crash(lib_path):
    feeds = _feeds()
    feeds["offset"][:] = np.float32(3.0e38)
    y = _deform_run(lib_path, feeds)
    np.testing.assert_array_equal(y, np.broadcast_to(feeds["B"][None, :, None, None], y.shape))


def _dyn_feeds(N=2, C=4, O=6, K=3, k=3):
    rng = np.random.default_rng(1)
    return {
        "X": rng.standard_normal((N, C, 6, 6), dtype=np.float32),
        "W": rng.standard_normal((K, O, C, k, k), dtype=np.float32),
        "attention": rng.random((N, K), dtype=np.float32),
        "B": rng.standard_normal((K, O), dtype=np.float32),
    }


DYN_BAD = [
    (lambda f: f.update(W=f["W"][0]), "input 'W' must have rank 5"),
    (lambda f: f.update(attention=f["attention"][:, :2]), "input 'attention' must have shape [N, K] = [2, 3], got [2, 2]"),
    (lambda f: f.update(attention=f["attention"][:1]), "input 'attention' must have shape [N, K]"),
    (lambda f: f.update(attention=f["attention"][0]), "input 'attention' must have rank 2"),
    (lambda f: f.update(B=f["B"][:, :5]), "input 'B' must have shape [K, O] = [3, 6], got [3, 5]"),
    (lambda f: f.update(X=f["X"][:, :3]), "input 'W' must have C/group = 3 input channels"),
    (lambda f: f.update(W=f["W"][:0], attention=f["attention"][:, :0], B=f["B"][:0]), "at least one expert"),
]


@pytest.mark.parametrize("mutate,msg", DYN_BAD, ids=[d[1][:30] for d in DYN_BAD])
def test_dynamic_bad_inputs(lib_path, mutate, msg):
    feeds = _dyn_feeds()
    mutate(feeds)
    model, names = dynamic_model(True, pads=[1, 1, 1, 1])
    with pytest.raises(_ort_errors()) as e:
        session(model, lib_path).run(None, {k: feeds[k] for k in names})
    assert msg in str(e.value)
    assert "edgeconv.DynamicConv2d" in str(e.value)


def test_dynamic_bad_attributes(lib_path):
    model, _ = dynamic_model(True, pads=[1, 1, 1])
    with pytest.raises(_ort_errors()) as e:
        session(model, lib_path)
    assert "attribute 'pads' must have 4 values" in str(e.value)


def test_dynamic_zero_sized_output(lib_path):
    feeds = _dyn_feeds(k=7)
    model, names = dynamic_model(True)
    with pytest.raises(_ort_errors()) as e:
        session(model, lib_path).run(None, {k: feeds[k] for k in names})
    assert "would be <= 0" in str(e.value)
