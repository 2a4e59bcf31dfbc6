"""Third-party models as a user brings them ("bring your own model"), for the tests of
tests/thirdparty and for ``edgeconv deploy tests/thirdparty/byom_models.py:dcn`` /
``...:efficientnet_cc``. Importing this file makes PyPI torchvision importable first
(:mod:`torchvision_shim`; with a working torchvision that changes nothing).
"""

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torchvision_shim  # noqa: E402

torchvision = torchvision_shim.install()
import timm  # noqa: E402  (imports torchvision)

import edgeconv  # noqa: E402


class DeformBlock(nn.Module):
    """torchvision ``DeformConv2d`` fed by its own offset (and, for DCNv2, mask) convolution."""

    def __init__(self, cin, cout, stride=1, groups=1, offset_groups=1, modulated=True, bias=True,
                 offset_scale=2.0):
        super().__init__()
        taps = 9
        self.offset = nn.Conv2d(cin, 2 * offset_groups * taps, 3, stride, 1)
        self.mask = nn.Conv2d(cin, offset_groups * taps, 3, stride, 1) if modulated else None
        self.conv = torchvision.ops.DeformConv2d(cin, cout, 3, stride, 1, groups=groups, bias=bias)
        with torch.no_grad():  # offsets of a few pixels: fractional, some outside the image
            self.offset.weight.mul_(offset_scale)
            self.offset.bias.uniform_(-offset_scale, offset_scale)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x):
        mask = torch.sigmoid(self.mask(x)) if self.mask is not None else None
        return torch.relu(self.norm(self.conv(x, self.offset(x), mask)))


def dcn(num_classes=10):
    """A small DCN classifier: stem conv, DCNv2 (stride 2, 2 offset groups, 2 groups), DCNv1
    (4 offset groups, no bias), pooling, linear. Default input 1x3x224x224."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
        DeformBlock(32, 64, stride=2, groups=2, offset_groups=2, modulated=True),
        DeformBlock(64, 64, offset_groups=4, modulated=False, bias=False),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes),
    ).eval()


def calibrate_batchnorm(model, shape=(4, 3, 96, 96)):
    """Set every BatchNorm's running statistics to those of one random batch. With timm's random
    initialisation and unit running variance, efficientnet's activations shrink about 4x per
    stage (logits ~1e-5); calibrated, every block contributes at scale ~1 to the outputs that
    the parity checks compare."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.randn(shape, generator=torch.Generator().manual_seed(1)))
    for bn in bns:
        bn.momentum = 0.1
    return model.eval()


def efficientnet_cc(convert=True):
    """timm ``efficientnet_cc_b0_4e`` (random weights, calibrated BatchNorm statistics),
    converted with :func:`edgeconv.convert` (``convert=False``: timm's own model)."""
    torch.manual_seed(0)
    model = calibrate_batchnorm(timm.create_model("efficientnet_cc_b0_4e", pretrained=False))
    return edgeconv.convert(model) if convert else model
