"""A user's own model file, as `edgeconv ... tests/tiny_model.py:make` loads it (CLI and deploy tests)."""

from torch import nn

from edgeconv.layers import DeformConv2d, DepthwiseSeparableConv2d, GroupConv2d


def make(num_classes=4):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        DepthwiseSeparableConv2d(8, 16, 3), nn.ReLU(),
        GroupConv2d(16, 16, 3, groups=4),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes),
    )


def make_deform(num_classes=4):
    """Like :func:`make` with a deformable convolution: exported as an ``edgeconv`` op."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        DeformConv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    )


def broken():
    raise RuntimeError("boom")
