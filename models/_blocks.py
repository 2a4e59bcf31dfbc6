"""Small building blocks shared by the zoo (not architectures themselves)."""

from __future__ import annotations

from typing import Optional, Tuple, Union

from torch import nn


def make_divisible(value: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (never below 90% of ``value``),
    as in the MobileNet reference code."""
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def spatial_pair(size: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
    """``int`` or ``(H, W)`` -> ``(H, W)``; ``ValueError`` for anything else or sizes < 1."""
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"input_size must be an int or (H, W), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"input_size must be positive, got {size!r}")
    return h, w


def conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output length of a convolution/pooling along one axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_bn_act(
    in_ch: int,
    out_ch: int,
    kernel_size: int = 3,
    stride: int = 1,
    groups: int = 1,
    act: Optional[type] = nn.ReLU,
) -> nn.Sequential:
    """Standard ``nn.Conv2d`` (same padding, no bias) + BatchNorm + activation."""
    layers = [
        nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def bn_act(module: nn.Module, channels: int, act: Optional[type] = nn.ReLU) -> nn.Sequential:
    """``module`` followed by BatchNorm(``channels``) and an optional activation."""
    layers = [module, nn.BatchNorm2d(channels)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters.

    A freshly initialised BN is the identity in eval mode, which hides export bugs (e.g. a
    wrongly folded BN); random statistics make parity checks meaningful. Deterministic.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model
