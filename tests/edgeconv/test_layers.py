"""Numerical tests of edgeconv.layers against independent references.

References are (a) the parameter formulas of docs/conv-kinds.md, (b) a loop-over-taps NumPy
float64 convolution written here (no torch involved) and scipy.signal, (c) explicit index
permutations / masks built in the test.

Tolerances: the layers run in float32 and the references in float64. A float32 dot product of
n terms has a relative error of about sqrt(n) * 6e-8 (round-off random walk), i.e. < 1e-6 for
the n <= ~600 terms here; we allow rtol=1e-5 and an absolute 1e-5 * max|reference| (so values
near zero, where relative error is meaningless, are judged on the output's scale).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.signal
import torch

from edgeconv import layers as L

RTOL = 1e-5


def assert_close(actual, expected, rtol: float = RTOL) -> None:
    a = actual.detach().double().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual, dtype=np.float64)
    e = expected.detach().double().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, (a.shape, e.shape)
    atol = rtol * max(float(np.abs(e).max()) if e.size else 0.0, 1e-12)
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


def np_conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """Independent float64 cross-correlation: loop over kernel taps, einsum over channels."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    n, c, h, wd = xp.shape
    o, cg, kh, kw = w.shape
    assert c == cg * groups
    oh = (h - dh * (kh - 1) - 1) // sh + 1
    ow = (wd - dw * (kw - 1) - 1) // sw + 1
    og = o // groups
    out = np.zeros((n, o, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]
            for g in range(groups):
                out[:, g * og:(g + 1) * og] += np.einsum(
                    "oc,nchw->nohw", w[g * og:(g + 1) * og, :, i, j], patch[:, g * cg:(g + 1) * cg]
                )
    if b is not None:
        out += np.asarray(b, dtype=np.float64)[None, :, None, None]
    return out


def npy(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ----------------------------------------------------------------------------- reference check
def test_np_conv2d_reference_matches_scipy():
    """The NumPy reference itself agrees with scipy.signal.correlate2d (single channel)."""
    rng = np.random.default_rng(0)
    x, k = rng.standard_normal((1, 1, 7, 8)), rng.standard_normal((1, 1, 3, 3))
    ref = scipy.signal.correlate2d(x[0, 0], k[0, 0], mode="same", boundary="fill")
    np.testing.assert_allclose(np_conv2d(x, k, padding=1)[0, 0], ref, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- TrueConv2d
@pytest.mark.parametrize("padding", [0, 1])
def test_true_conv_matches_scipy_convolve(padding):
    m = L.TrueConv2d(3, 4, 3, padding=padding)
    x = torch.randn(2, 3, 8, 9)
    y = m(x)
    xn, wn, bn = npy(x), npy(m.weight), npy(m.bias)
    mode = "valid" if padding == 0 else "same"
    ref = np.stack([
        np.stack([
            sum(scipy.signal.convolve2d(xn[n, c], wn[o, c], mode=mode) for c in range(3)) + bn[o]
            for o in range(4)
        ])
        for n in range(2)
    ])
    assert_close(y, ref)
    assert n_params(m) == 4 * 3 * 3 * 3 + 4


def test_true_conv_is_correlation_with_flipped_kernel():
    m = L.TrueConv2d(2, 2, (2, 3), stride=2, padding=1, dilation=(1, 2), bias=False)
    x = torch.randn(1, 2, 9, 9)
    ref = np_conv2d(npy(x), npy(m.weight)[:, :, ::-1, ::-1], stride=2, padding=1, dilation=(1, 2))
    assert_close(m(x), ref)


# ----------------------------------------------------------------------------- GroupConv2d
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_group_conv_params_and_output(groups):
    m = L.GroupConv2d(8, 12, 3, groups=groups, bias=False)
    # conv-kinds.md: weight N x C/G x K x K, i.e. 1/G of a standard conv
    assert n_params(m) == 12 * 8 * 3 * 3 // groups
    x = torch.randn(2, 8, 7, 7)
    y = m(x)
    assert y.shape == (2, 12, 7, 7)  # padding=None -> "same"
    assert_close(y, np_conv2d(npy(x), npy(m.weight), padding=1, groups=groups))


def test_group_conv_stride_explicit_padding():
    m = L.GroupConv2d(4, 4, (3, 1), groups=2, stride=2, padding=(0, 0))
    x = torch.randn(1, 4, 9, 6)
    assert_close(m(x), np_conv2d(npy(x), npy(m.weight), npy(m.bias), stride=2, groups=2))


# ----------------------------------------------------------------------------- Depthwise
@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_matches_per_channel_scipy(multiplier):
    c, k = 3, 5
    m = L.DepthwiseConv2d(c, k, multiplier=multiplier)
    assert n_params(m) == c * multiplier * k * k + c * multiplier  # N x 1 x K x K + bias
    x = torch.randn(2, c, 9, 8)
    y = m(x)
    assert y.shape == (2, c * multiplier, 9, 8)
    w, b, xn = npy(m.weight), npy(m.bias), npy(x)
    for n in range(2):
        for ch in range(c):
            for j in range(multiplier):
                o = ch * multiplier + j
                ref = scipy.signal.correlate2d(xn[n, ch], w[o, 0], mode="same", boundary="fill") + b[o]
                assert_close(y[n, o], ref)


def test_global_depthwise_conv():
    m = L.GlobalDepthwiseConv2d(4, (5, 3))
    assert m.bias is None and n_params(m) == 4 * 5 * 3
    x = torch.randn(2, 4, 5, 3)
    y = m(x)
    assert y.shape == (2, 4, 1, 1)
    ref = (npy(x) * npy(m.weight)[:, 0][None]).sum(axis=(2, 3))  # every position has its weight
    assert_close(y[:, :, 0, 0], ref)
    # unlike global average pooling: a non-uniform weight gives a different result
    assert not torch.allclose(y, x.mean((2, 3), keepdim=True))


# ----------------------------------------------------------------------------- shuffle
def shuffle_perm(c: int, g: int) -> list:
    """Explicit ShuffleNet permutation: output channel i*g + grp takes input channel grp*(c/g) + i."""
    perm = [0] * c
    for grp in range(g):
        for i in range(c // g):
            perm[i * g + grp] = grp * (c // g) + i
    return perm


def test_channel_shuffle_matches_index_permutation():
    x = torch.randn(2, 12, 3, 3)
    y = L.ChannelShuffle(3)(x)
    assert torch.equal(y, x[:, shuffle_perm(12, 3)])
    assert n_params(L.ChannelShuffle(3)) == 0


def test_shuffled_group_conv_is_group_conv_then_permutation():
    m = L.ShuffledGroupConv2d(8, 12, 3, groups=4)
    assert n_params(m) == 12 * 2 * 9 + 12
    x = torch.randn(2, 8, 6, 6)
    ref = np_conv2d(npy(x), npy(m.conv.weight), npy(m.conv.bias), padding=1, groups=4)
    ref = ref[:, shuffle_perm(12, 4)]
    assert_close(m(x), ref)


# ----------------------------------------------------------------------------- separable
def test_depthwise_separable_params_and_output():
    c, n, k = 6, 10, 3
    m = L.DepthwiseSeparableConv2d(c, n, k, bias=False)
    assert n_params(m) == c * k * k + c * n  # conv-kinds.md: C*K*K + C*N
    assert n_params(m) < n * c * k * k
    x = torch.randn(2, c, 7, 7)
    mid = np_conv2d(npy(x), npy(m.depthwise.weight), padding=1, groups=c)
    assert_close(m(x), np_conv2d(mid, npy(m.pointwise.weight)))


def test_depthwise_separable_stride_dilation():
    m = L.DepthwiseSeparableConv2d(4, 5, 3, stride=2, dilation=2)
    x = torch.randn(1, 4, 11, 10)
    mid = np_conv2d(npy(x), npy(m.depthwise.weight), padding=2, stride=2, dilation=2, groups=4)
    y = m(x)
    assert y.shape == (1, 5, 6, 5)
    assert_close(y, np_conv2d(mid, npy(m.pointwise.weight), npy(m.pointwise.bias)))


# ----------------------------------------------------------------------------- MixConv
def test_split_channels_equal_and_exponential():
    assert L.split_channels(10, 3, "equal") == [4, 3, 3]
    assert L.split_channels(32, 3, "exponential") == [20, 8, 4]  # 16, 8, 4 + remainder 4
    assert L.split_channels(10, 3, "exponential") == [7, 2, 1]  # 5, 2, 1 + remainder 2
    assert L.split_channels(7, 1, "exponential") == [7]


@pytest.mark.parametrize("split", ["equal", "exponential"])
def test_mixconv_matches_per_split_depthwise(split):
    m = L.MixConv2d(16, (3, 5, 7), split=split)
    x = torch.randn(2, 16, 9, 9)
    y = m(x)
    assert y.shape == x.shape
    sizes = [10, 4, 2] if split == "exponential" else [6, 5, 5]  # 8, 4, 2 + remainder 2
    assert m.splits == sizes
    assert n_params(m) == sum(c * k * k + c for c, k in zip(sizes, (3, 5, 7)))
    start, refs = 0, []
    for conv, c, k in zip(m.convs, sizes, (3, 5, 7)):
        refs.append(np_conv2d(npy(x[:, start:start + c]), npy(conv.weight), npy(conv.bias), padding=k // 2, groups=c))
        start += c
    assert_close(y, np.concatenate(refs, axis=1))


def test_mixconv_stride():
    m = L.MixConv2d(6, (3, 5), stride=2)
    assert m(torch.randn(1, 6, 9, 8)).shape == (1, 6, 5, 4)


# ----------------------------------------------------------------------------- Dilated
def test_dilated_conv_same_size_and_receptive_field():
    m = L.DilatedConv2d(3, 4, 3, dilation=2)
    assert m.receptive_field == (5, 5)  # (K - 1) * d + 1
    assert n_params(m) == 4 * 3 * 9 + 4  # same parameters as a 3x3 conv
    x = torch.randn(2, 3, 9, 7)
    y = m(x)
    assert y.shape == (2, 4, 9, 7)
    assert_close(y, np_conv2d(npy(x), npy(m.weight), npy(m.bias), padding=2, dilation=2))
    # an impulse spreads over taps 2 apart
    imp = torch.zeros(1, 3, 9, 9)
    imp[0, 0, 4, 4] = 1.0
    nz = (L.DilatedConv2d(3, 1, 3, dilation=3, bias=False)(imp)[0, 0] != 0).nonzero().tolist()
    assert sorted(nz) == [[r, c] for r in (1, 4, 7) for c in (1, 4, 7)]


# ----------------------------------------------------------------------------- Deformable
@pytest.mark.parametrize("stride,padding,dilation,groups,og", [(1, 1, 1, 1, 1), (2, 2, 2, 2, 2)])
def test_fresh_deform_conv_equals_conv(stride, padding, dilation, groups, og):
    m = L.DeformConv2d(4, 6, 3, stride=stride, padding=padding, dilation=dilation, groups=groups, offset_groups=og)
    assert m.weight.shape == (6, 4 // groups, 3, 3) and m.bias.shape == (6,)
    assert m.conv_offset.out_channels == og * 2 * 9
    x = torch.randn(2, 4, 9, 8)
    ref = np_conv2d(npy(x), npy(m.weight), npy(m.bias), stride, padding, dilation, groups)
    assert_close(m(x), ref)


def test_fresh_modulated_deform_conv_is_half_conv_plus_bias():
    m = L.ModulatedDeformConv2d(3, 5, 3, offset_groups=3)
    assert m.conv_mask.out_channels == 3 * 9
    x = torch.randn(2, 3, 7, 7)
    ref = 0.5 * np_conv2d(npy(x), npy(m.weight), padding=1) + npy(m.bias)[None, :, None, None]
    assert_close(m(x), ref)


def test_deform_conv_integer_offset_is_a_shift():
    """Offset (dy, dx) = (0, +1) on every tap samples x one column to the right (y before x)."""
    m = L.DeformConv2d(2, 3, 3, bias=False)
    with torch.no_grad():
        m.conv_offset.bias.view(9, 2)[:, 1] = 1.0
    x = torch.randn(1, 2, 6, 7)
    # tap (u, v) of output (i, j) reads x[i - 1 + u, j - 1 + v + 1] (zero outside the image):
    # a valid correlation over x padded by 1 row top/bottom and 2 columns on the right only.
    padded = np.pad(npy(x), ((0, 0), (0, 0), (1, 1), (0, 2)))
    assert_close(m(x), np_conv2d(padded, npy(m.weight)))


def test_deform_parameter_count():
    m = L.DeformConv2d(4, 8, 3, bias=False)
    main = 8 * 4 * 9
    offset = (2 * 9) * 4 * 9 + 2 * 9
    assert n_params(m) == main + offset
    m2 = L.ModulatedDeformConv2d(4, 8, 3, bias=False)
    assert n_params(m2) == main + offset + 9 * 4 * 9 + 9


# ----------------------------------------------------------------------------- Spatially separable
def test_spatially_separable_single_channel_multiplies():
    m = L.SpatiallySeparableConv2d(1, 1, 3, bias=False)
    assert n_params(m) == 6  # 3 + 3 instead of 9 multiplies per output


def test_spatially_separable_params_default_mid():
    m = L.SpatiallySeparableConv2d(8, 8, 3, bias=False)
    assert m.mid_ch == 8
    assert n_params(m) * 9 == 8 * 8 * 9 * 6  # ratio 6/9 for C = N
    m = L.SpatiallySeparableConv2d(4, 16, 5, bias=False)
    assert n_params(m) == 4 * 4 * 5 + 16 * 4 * 5


def test_spatially_separable_forward_equals_composed_dense_conv():
    m = L.SpatiallySeparableConv2d(3, 5, 3, stride=2, mid_ch=2)
    x = torch.randn(2, 3, 9, 8)
    v = npy(m.vertical.weight)[:, :, :, 0]  # [M, C, K]
    h = npy(m.horizontal.weight)[:, :, 0, :]  # [N, M, K]
    dense = np.zeros((5, 3, 3, 3))
    for n, c, i, j, mm in itertools.product(range(5), range(3), range(3), range(3), range(2)):
        dense[n, c, i, j] += v[mm, c, i] * h[n, mm, j]
    y = m(x)
    assert y.shape == (2, 5, 5, 4)
    assert_close(y, np_conv2d(npy(x), dense, npy(m.horizontal.bias), stride=2, padding=1))
    assert_close(m.composed_weight(), dense)


def test_spatially_separable_from_rank1_kernel_is_exact():
    v, h = torch.randn(5), torch.randn(5)
    k = torch.outer(v, h)
    m = L.SpatiallySeparableConv2d.from_conv2d(k)
    assert m.approximation_error < 1e-6
    x = torch.randn(1, 1, 8, 8)
    assert_close(m(x), np_conv2d(npy(x), npy(k)[None, None], padding=2))


def test_spatially_separable_from_conv2d_full_rank_exact_and_error_reported():
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    full = L.SpatiallySeparableConv2d.from_conv2d(conv, rank=9)  # min(C*K, N*K) = 9: exact
    x = torch.randn(2, 3, 6, 6)
    assert full.approximation_error < 1e-6
    assert_close(full(x), np_conv2d(npy(x), npy(conv.weight), npy(conv.bias), padding=1))
    low = L.SpatiallySeparableConv2d.from_conv2d(conv, rank=2)
    rel = float(((low.composed_weight() - conv.weight).norm() / conv.weight.norm()).detach())
    assert abs(rel - low.approximation_error) < 1e-5
    assert 0 < low.approximation_error < 1


# ----------------------------------------------------------------------------- Flattened
def test_flattened_params_and_rank1_dense_equivalence():
    c, n, k = 4, 6, 5
    m = L.FlattenedConv2d(c, n, k)
    assert n_params(m) == n * c + n * k + n * k + n  # lateral + vertical + horizontal + bias
    lat = npy(m.lateral.weight)[:, :, 0, 0]
    ver = npy(m.vertical.weight)[:, 0, :, 0]
    hor = npy(m.horizontal.weight)[:, 0, 0, :]
    dense = np.einsum("nc,ni,nj->ncij", lat, ver, hor)  # each 3-D filter is rank 1
    x = torch.randn(2, c, 9, 7)
    y = m(x)
    assert y.shape == (2, n, 9, 7)
    assert_close(y, np_conv2d(npy(x), dense, npy(m.horizontal.bias), padding=k // 2))
    assert_close(m.composed_weight(), dense)


# ----------------------------------------------------------------------------- HetConv
def het_dense_reference(m: L.HetConv2d) -> tuple:
    """(dense [N, C, K, K] weight, output permutation) of a HetConv, built independently of the layer.

    Group-conv filter r (group g = r // (N/P)) sees the g-th block of its input; for
    layout="paper" that input is the channel shuffle of x with C/P groups and the output is
    shuffled with P groups, written with the explicit permutation ``shuffle_perm``. Channels that
    do not hold a K x K kernel hold the filter's 1x1 weight at the kernel centre.
    """
    n, c, k, p = m.out_ch, m.in_ch, m.kernel_size, m.p
    cpg, npg = c // p, n // p
    wk, w1 = npy(m.conv_kxk.weight), npy(m.weight_1x1)[:, :, 0, 0]
    paper = m.layout == "paper"
    in_perm = shuffle_perm(c, cpg) if paper else list(range(c))  # x'[j] = x[in_perm[j]]
    out_perm = shuffle_perm(n, p) if paper else list(range(n))  # y[f] = yk[out_perm[f]]
    dense = np.zeros((n, c, k, k))
    is_kxk = np.zeros((n, c), dtype=bool)
    for f in range(n):
        r = out_perm[f]
        g = r // npg
        for t in range(cpg):
            ch = in_perm[g * cpg + t]
            dense[f, ch] = wk[r, t]
            is_kxk[f, ch] = True
    for f in range(n):
        for ch in range(c):
            if not is_kxk[f, ch]:
                dense[f, ch, k // 2, k // 2] = w1[f, ch]
    # the arrangement: C/P K x K kernels per filter ...
    assert (is_kxk.sum(axis=1) == cpg).all()
    for f in range(n):
        expected = [ch for ch in range(c) if (ch % p == f % p if paper else ch // cpg == f // npg)]
        # ... at every P-th channel starting at f mod P (paper, shifting by one per filter)
        # or on block f // (N/P) (block layout)
        assert np.flatnonzero(is_kxk[f]).tolist() == expected
    return dense, out_perm


@pytest.mark.parametrize("layout", ["block", "paper"])
@pytest.mark.parametrize("c,n,p", [(8, 8, 4), (16, 8, 2), (6, 6, 6), (4, 8, 1)])
def test_hetconv_parameter_count(c, n, p, layout):
    k = 3
    m = L.HetConv2d(c, n, k, p=p, layout=layout)
    assert m.num_parameters() == n * (c // p) * k * k + n * (c - c // p)  # conv-kinds.md
    assert np.count_nonzero(npy(m.weight_1x1)) == n * (c - c // p)


@pytest.mark.parametrize("layout", ["block", "paper"])
@pytest.mark.parametrize("c,n,p,stride", [(8, 12, 4, 1), (8, 12, 4, 2), (6, 4, 2, 1), (4, 8, 4, 1), (6, 6, 1, 1)])
def test_hetconv_efficient_forward_equals_dense_conv(layout, c, n, p, stride):
    m = L.HetConv2d(c, n, 3, p=p, stride=stride, bias=True, layout=layout)
    dense, out_perm = het_dense_reference(m)
    assert_close(m.to_dense_weight(), dense)
    bias = npy(m.conv_kxk.bias)[out_perm]
    assert_close(m.to_dense_bias(), bias)
    x = torch.randn(2, c, 9, 9)
    assert_close(m(x), np_conv2d(npy(x), dense, bias, stride=stride, padding=1))


@pytest.mark.parametrize("layout", ["block", "paper"])
def test_hetconv_masked_weights_stay_zero_under_training(layout):
    m = L.HetConv2d(8, 8, 3, p=4, layout=layout)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, weight_decay=1e-2)
    for _ in range(3):
        opt.zero_grad()
        m(torch.randn(2, 8, 5, 5)).square().mean().backward()
        assert torch.all(m.weight_1x1.grad[m.mask_1x1 == 0] == 0)
        opt.step()
    assert torch.all(m.weight_1x1[m.mask_1x1 == 0] == 0)


def test_hetconv_p1_is_standard_conv_count():
    m = L.HetConv2d(4, 4, 3, p=1)
    assert m.num_parameters() == 4 * 4 * 9  # C/P = C: all kernels K x K


# ----------------------------------------------------------------------------- Dynamic
def np_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("groups,temperature", [(1, 30.0), (2, 1.0)])
def test_dynamic_conv_matches_numpy_formula(groups, temperature):
    m = L.DynamicConv2d(4, 6, 3, num_kernels=3, temperature=temperature, groups=groups)
    assert m.weight.shape == (3, 6, 4 // groups, 3, 3) and m.bias.shape == (3, 6)
    with torch.no_grad():  # make the attention non-trivial
        m.fc2.weight.mul_(40.0)
    x = torch.randn(3, 4, 7, 7)
    xn = npy(x)
    gap = xn.mean(axis=(2, 3))
    hid = np.maximum(gap @ npy(m.fc1.weight).T + npy(m.fc1.bias), 0.0)
    att = np_softmax((hid @ npy(m.fc2.weight).T + npy(m.fc2.bias)) / temperature)
    assert_close(m.attention(x), att)
    w, b = npy(m.weight), npy(m.bias)
    ref = np.concatenate([
        np_conv2d(xn[i:i + 1], np.tensordot(att[i], w, axes=1), att[i] @ b, padding=1, groups=groups)
        for i in range(3)
    ])
    assert_close(m(x), ref)


def test_dynamic_conv_params_and_temperature():
    m = L.DynamicConv2d(8, 16, 3, num_kernels=4, reduction=4)
    hidden = 8 // 4
    assert n_params(m) == 4 * (16 * 8 * 9 + 16) + (8 * hidden + hidden) + (hidden * 4 + 4)
    m.temperature = 1.0
    assert m.temperature == 1.0
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            m.temperature = bad
    # temperature -> infinity gives a uniform attention
    m.temperature = 1e9
    att = m.attention(torch.randn(2, 8, 5, 5))
    assert_close(att, np.full((2, 4), 0.25))


# ----------------------------------------------------------------------------- factory
_FACTORY_KW = {
    "group": dict(groups=2),
    "shuffle": dict(groups=2),
    "shuffled_group": dict(groups=2),
    "gdc": dict(spatial_size=6),
}


@pytest.mark.parametrize("kind", L.CONV_KINDS)
def test_create_conv2d_builds_every_kind(kind):
    m = L.create_conv2d(kind, 8, 8, **_FACTORY_KW.get(kind, {}))
    y = m(torch.randn(1, 8, 6, 6))
    assert y.shape[:2] == (1, 8)
    expected_hw = (1, 1) if kind == "gdc" else (6, 6)
    assert tuple(y.shape[2:]) == expected_hw


def test_create_conv2d_types_and_depthwise_multiplier():
    assert type(L.create_conv2d("deform_v2", 4, 4)) is L.ModulatedDeformConv2d
    dw = L.create_conv2d("depthwise", 4, 12, kernel_size=5)
    assert isinstance(dw, L.DepthwiseConv2d) and dw.multiplier == 3 and dw.out_channels == 12
    het = L.create_conv2d("hetconv", 8, 16, p=2)
    assert isinstance(het, L.HetConv2d) and het.p == 2


def test_true_conv_padding_none_is_same():
    m = L.TrueConv2d(2, 3, 5, padding=None, dilation=2)
    assert m.padding == (4, 4)
    x = torch.randn(1, 2, 9, 9)
    assert m(x).shape == (1, 3, 9, 9)


def test_spatially_separable_from_conv2d_copies_stride_and_accepts_same_string():
    conv = torch.nn.Conv2d(2, 3, 3, padding="same")
    m = L.SpatiallySeparableConv2d.from_conv2d(conv, rank=6)
    x = torch.randn(1, 2, 7, 7)
    assert_close(m(x), np_conv2d(npy(x), npy(conv.weight), npy(conv.bias), padding=1))
    strided = torch.nn.Conv2d(2, 3, 3, stride=2, padding=1)
    m = L.SpatiallySeparableConv2d.from_conv2d(strided, rank=6)
    assert m.stride == (2, 2)
    assert_close(m(x), np_conv2d(npy(x), npy(strided.weight), npy(strided.bias), stride=2, padding=1))
