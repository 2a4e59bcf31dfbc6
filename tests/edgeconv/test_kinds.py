"""One definition per conv kind (:mod:`edgeconv.kinds`): nn.Conv2d by its groups, every edgeconv
layer by its class, third-party layers by module path + qualname (stand-ins here: torchvision
and timm are not installed in the default environment; their real classes are tested where they
are)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeconv import layers as L
from edgeconv.analysis import profile
from edgeconv.kinds import class_key, kind_of, lookup


def _conv_formula(out_shape, cin_per_group, kh, kw):
    """MACs of a conv by hand: one multiply-add per output element, input channel of its group and tap."""
    n, o, oh, ow = out_shape
    return n * o * oh * ow * cin_per_group * kh * kw


@pytest.mark.parametrize("groups,kernel,dilation,expected", [
    (1, 3, 1, "conv"), (1, 1, 1, "pointwise"), (1, 3, 2, "dilated"), (4, 3, 1, "group"), (16, 3, 1, "depthwise"),
])
def test_plain_conv2d_kind_and_macs(groups, kernel, dilation, expected):
    conv = nn.Conv2d(16, 32, kernel, padding=dilation * (kernel // 2), dilation=dilation, groups=groups)
    prof = profile(conv, (2, 16, 10, 12))
    (row,) = prof.rows
    assert row.kind == expected
    assert row.macs == _conv_formula((2, 32, 10, 12), 16 // groups, kernel, kernel)


def test_factory_kinds_are_the_layer_classes_kinds():
    """create_conv2d builds, for every kind name, a layer that is recognised as that kind"""
    extra = {"group": dict(groups=4), "gdc": dict(spatial_size=8), "shuffle": dict(groups=4),
             "shuffled_group": dict(groups=4)}
    for kind in L.CONV_KINDS:
        layer = L.create_conv2d(kind, 8, 8, **extra.get(kind, {}))
        assert kind_of(layer) == kind, kind


def test_subclass_of_a_layer_is_that_kind():
    class MyGroupConv(L.GroupConv2d):
        pass

    class MyGdc(L.GlobalDepthwiseConv2d):
        pass

    assert kind_of(MyGroupConv(8, 8, 3, 4)) == "group"
    assert kind_of(MyGdc(8, 4)) == "gdc"  # the nearest registered class, not its nn.Conv2d base


def _stand_in(cls, path: str):
    """``cls`` renamed to the third-party class ``path`` (module + qualname), as if imported from there."""
    module, _, name = path.rpartition(".")
    cls.__module__, cls.__qualname__, cls.__name__ = module, name, name
    assert class_key(cls) == path
    return cls


class _DeformStandIn(nn.Module):
    """Shape-compatible stand-in of torchvision.ops.DeformConv2d(input, offset, mask=None)."""

    def __init__(self, cin, cout, k, groups=1):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size, self.groups = cin, cout, (k, k), groups
        self.weight = nn.Parameter(torch.randn(cout, cin // groups, k, k))

    def forward(self, x, offset, mask=None):
        return F.conv2d(x, self.weight, padding=self.kernel_size[0] // 2, groups=self.groups)


class _DeformNet(nn.Module):
    def __init__(self, modulated):
        super().__init__()
        self.modulated = modulated
        self.offset = nn.Conv2d(8, 2 * 9, 3, padding=1)
        self.mask = nn.Conv2d(8, 9, 3, padding=1)
        self.deform = _stand_in(type("D", (_DeformStandIn,), {}), "torchvision.ops.deform_conv.DeformConv2d")(8, 16, 3)

    def forward(self, x):
        return self.deform(x, self.offset(x), self.mask(x).sigmoid() if self.modulated else None)


@pytest.mark.parametrize("modulated", [False, True])
def test_torchvision_deform_conv2d_is_recognised(modulated):
    prof = profile(_DeformNet(modulated), (2, 8, 6, 7))
    row = next(r for r in prof.rows if r.name == "deform")
    sampled = 2 * 8 * 9 * 6 * 7  # one bilinear sample per batch, input channel, tap and output position
    assert row.kind == "deform"
    assert row.detail["conv"] == _conv_formula((2, 16, 6, 7), 8, 3, 3)
    assert row.detail["sampling"] == 4 * sampled
    assert row.detail.get("modulation", 0) == (sampled if modulated else 0)
    # the offset (and mask) convs are rows of their own
    assert [r.name for r in prof.rows] == ["offset", "mask", "deform"] if modulated else ["offset", "deform"]


class _CondConvStandIn(nn.Module):
    """Stand-in of timm CondConv2d(x, routing_weights): weight [experts, params], bias [experts, out]."""

    def __init__(self, cin, cout, k, experts):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size, self.groups = cin, cout, (k, k), 1
        self.num_experts = experts
        self.weight = nn.Parameter(torch.randn(experts, cout * cin * k * k))
        self.bias = nn.Parameter(torch.randn(experts, cout))

    def forward(self, x, routing):
        w = (routing @ self.weight)[0].view(self.out_channels, self.in_channels, *self.kernel_size)
        return F.conv2d(x, w, (routing @ self.bias)[0], padding=self.kernel_size[0] // 2)


def test_timm_condconv2d_is_recognised():
    cls = _stand_in(type("C", (_CondConvStandIn,), {}), "timm.layers.cond_conv2d.CondConv2d")

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.route = nn.Linear(4, 3)
            self.cond = cls(4, 6, 3, 3)

        def forward(self, x):
            return self.cond(x, self.route(x.mean((2, 3))).sigmoid())

    prof = profile(Net(), (1, 4, 5, 5))
    row = next(r for r in prof.rows if r.name == "cond")
    assert row.kind == "dynamic"
    assert row.detail == {"kernel_mixing": 3 * (6 * 4 * 9 + 6), "conv": _conv_formula((1, 6, 5, 5), 4, 3, 3)}


def test_timm_mixedconv2d_is_recognised():
    class MixedStandIn(nn.ModuleDict):
        """Stand-in of timm MixedConv2d: a ModuleDict of depthwise convs over channel splits."""

        def __init__(self):
            super().__init__({"0": nn.Conv2d(6, 6, 3, padding=1, groups=6), "1": nn.Conv2d(2, 2, 5, padding=2, groups=2)})

        def forward(self, x):
            return torch.cat([c(s) for c, s in zip(self.values(), torch.split(x, [6, 2], 1))], 1)

    mixed = _stand_in(MixedStandIn, "timm.layers.mixed_conv2d.MixedConv2d")()
    (row,) = profile(mixed, (1, 8, 7, 7)).rows  # one unit: its convs are not listed separately
    assert row.kind == "mixconv"
    assert row.detail == {"depthwise_3x3": _conv_formula((1, 6, 7, 7), 1, 3, 3),
                          "depthwise_5x5": _conv_formula((1, 2, 7, 7), 1, 5, 5)}


def test_unregistered_module_is_not_a_unit():
    class Unknown(nn.Module):
        def forward(self, x):
            return x * 2

    assert lookup(Unknown()) is None
    assert profile(Unknown(), (1, 3, 4, 4)).rows == []


@pytest.mark.parametrize("module,absent", [("edgeconv.layers", "edgeconv.analysis"),
                                           ("edgeconv.analysis", "edgeconv.layers")])
def test_layers_and_analysis_do_not_import_each_other(module, absent):
    code = f"import sys, {module}; sys.exit(any(m == {absent!r} or m.startswith({absent!r} + '.') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
