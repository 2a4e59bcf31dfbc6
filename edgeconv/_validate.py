"""Argument checks shared by the functional ops and the layers.

Every check raises a ``ValueError`` (``TypeError`` for dtypes) whose message names the argument
and the value that was expected, so a user sees at once which call site is wrong.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch

IntPair = Union[int, Sequence[int]]

SUPPORTED_DTYPES = (torch.float32, torch.float64)


def pair(value: IntPair, name: str, *, minimum: int = 1) -> tuple[int, int]:
    """Return ``value`` as an ``(h, w)`` pair of ints, each at least ``minimum``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        value = (value, value)
    try:
        result = tuple(int(v) for v in value)
    except TypeError:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if len(result) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(result) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return result  # type: ignore[return-value]


def positive(value: int, name: str) -> int:
    """Return ``value`` if it is a positive int."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def divisible(value: int, divisor: int, name: str, divisor_name: str) -> None:
    """Require ``value % divisor == 0`` (channels vs groups)."""
    if value % divisor:
        raise ValueError(f"{name} ({value}) must be divisible by {divisor_name} ({divisor})")


def rank(tensor: torch.Tensor, expected: int, name: str, layout: str) -> None:
    """Require ``tensor.dim() == expected``; ``layout`` describes the axes (e.g. ``"[N, C, H, W]"``)."""
    if tensor.dim() != expected:
        raise ValueError(
            f"{name} must be a {expected}-D tensor {layout}, got shape {tuple(tensor.shape)}"
        )


def dtype(tensor: torch.Tensor, name: str) -> None:
    """Require a floating dtype the reference ops implement."""
    if tensor.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {tensor.dtype}")


def same_padding(kernel_size: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    """Padding that keeps the spatial size at stride 1 ("same"); only defined for odd kernels."""
    for k, axis in zip(kernel_size, ("height", "width")):
        if k % 2 == 0:
            raise ValueError(
                f"padding=None ('same') needs an odd kernel_size, got {k} along the {axis}; "
                "pass padding explicitly for even kernels"
            )
    return ((kernel_size[0] // 2) * dilation[0], (kernel_size[1] // 2) * dilation[1])


def conv_output_size(
    size: tuple[int, int],
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    """Spatial output size of a convolution (PyTorch/ONNX formula)."""
    return tuple(  # type: ignore[return-value]
        (s + 2 * p - d * (k - 1) - 1) // st + 1
        for s, k, st, p, d in zip(size, kernel_size, stride, padding, dilation)
    )
