"""Shared argument validation for :mod:`edgeconv.functional` and :mod:`edgeconv.layers`.

Every check raises :class:`ValueError` with a message that names the offending argument, the
value it got and the value that was expected, so layer constructors stay one line per check.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch

IntPair = Union[int, Tuple[int, int]]

__all__ = [
    "IntPair",
    "to_pair",
    "check_positive",
    "check_non_negative",
    "check_pair_positive",
    "check_pair_non_negative",
    "check_divisible",
    "check_odd_kernel",
    "same_padding",
    "resolve_padding",
    "check_input",
    "check_rank",
    "check_dtype",
    "conv_output_size",
]


def check_positive(name: str, value: int) -> int:
    """Return ``value`` if it is an ``int`` > 0, else raise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int (> 0), got {value}")
    return value


def check_non_negative(name: str, value: int) -> int:
    """Return ``value`` if it is an ``int`` >= 0, else raise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative int (>= 0), got {value}")
    return value


def to_pair(name: str, value: IntPair) -> Tuple[int, int]:
    """Turn an int or a 2-sequence of ints into a ``(h, w)`` tuple (no range check)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, Sequence) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


def check_pair_positive(name: str, value: IntPair) -> Tuple[int, int]:
    """``to_pair`` + both entries > 0."""
    pair = to_pair(name, value)
    if min(pair) <= 0:
        raise ValueError(f"{name} must be positive (> 0), got {value!r}")
    return pair


def check_pair_non_negative(name: str, value: IntPair) -> Tuple[int, int]:
    """``to_pair`` + both entries >= 0."""
    pair = to_pair(name, value)
    if min(pair) < 0:
        raise ValueError(f"{name} must be non-negative (>= 0), got {value!r}")
    return pair


def check_divisible(name: str, value: int, divisor_name: str, divisor: int) -> None:
    """Raise ``ValueError`` unless ``value % divisor == 0``."""
    if value % divisor != 0:
        raise ValueError(
            f"{name} ({value}) must be divisible by {divisor_name} ({divisor}); "
            f"expected a multiple of {divisor}"
        )


def check_odd_kernel(name: str, kernel: Tuple[int, int], why: str = '"same" padding') -> None:
    """Raise ``ValueError`` if any kernel side is even (``why`` says what needs it odd)."""
    if kernel[0] % 2 == 0 or kernel[1] % 2 == 0:
        raise ValueError(
            f"{name} must be odd for {why}, got {kernel if kernel[0] != kernel[1] else kernel[0]}; "
            "expected an odd kernel size (1, 3, 5, ...) or an explicit padding"
        )


def same_padding(kernel: Tuple[int, int], dilation: Tuple[int, int]) -> Tuple[int, int]:
    """Padding ``k // 2 * d`` per side (exactly "same" output size at stride 1 for odd ``k``)."""
    return (kernel[0] // 2 * dilation[0], kernel[1] // 2 * dilation[1])


def resolve_padding(
    padding: Optional[IntPair], kernel: Tuple[int, int], dilation: Tuple[int, int]
) -> Tuple[int, int]:
    """``padding=None`` -> "same" padding (odd kernels only), else a validated pair."""
    if padding is None:
        check_odd_kernel("kernel_size", kernel, why='padding=None ("same" padding)')
        return same_padding(kernel, dilation)
    return check_pair_non_negative("padding", padding)


def check_input(x: torch.Tensor, channels: int, layer: str, dim: int = 4) -> None:
    """Check rank (``dim``) and channel count (dim 1) of a forward input.

    Only static facts (rank, channel count) are checked so the check is free under
    ``torch.export`` with a dynamic batch dimension.
    """
    if x.dim() != dim:
        raise ValueError(
            f"{layer}: input must be a {dim}-D tensor [N, C, H, W], got shape {tuple(x.shape)}"
        )
    if x.shape[1] != channels:
        raise ValueError(
            f"{layer}: input channels (dim 1) must be {channels}, got {x.shape[1]} "
            f"(shape {tuple(x.shape)})"
        )


SUPPORTED_DTYPES = (torch.float32, torch.float64)


def check_rank(name: str, tensor: torch.Tensor, expected: int, layout: str) -> None:
    """Require ``tensor.dim() == expected``; ``layout`` names the axes (e.g. ``"[N, C, H, W]"``)."""
    if tensor.dim() != expected:
        raise ValueError(
            f"{name} must be a {expected}-D tensor {layout}, got shape {tuple(tensor.shape)}"
        )


def check_dtype(name: str, tensor: torch.Tensor) -> None:
    """Require a floating dtype the reference ops implement."""
    if tensor.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {tensor.dtype}")


def conv_output_size(
    size: Tuple[int, int],
    kernel: Tuple[int, int],
    stride: Tuple[int, int],
    padding: Tuple[int, int],
    dilation: Tuple[int, int],
) -> Tuple[int, int]:
    """Spatial output size of a convolution (the PyTorch/ONNX formula)."""
    return tuple(  # type: ignore[return-value]
        (s + 2 * p - d * (k - 1) - 1) // st + 1
        for s, k, st, p, d in zip(size, kernel, stride, padding, dilation)
    )
