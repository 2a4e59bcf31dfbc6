"""Model registry: ``@register_model("name", default_input=(1, 3, 224, 224))`` on a factory.

A factory takes keyword arguments only (``width_mult``, ``num_classes``, ``input_size`` where
natural) and returns a randomly initialised ``nn.Module`` in training mode (callers ``.eval()``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Tuple

from torch import nn

__all__ = ["ModelEntry", "register_model", "get_entry", "list_models", "create_model"]


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture."""

    name: str
    factory: Callable[..., nn.Module]
    default_input: Tuple[int, int, int, int]
    description: str = ""
    kinds: Tuple[str, ...] = field(default_factory=tuple)

    def accepts(self, kwarg: str) -> bool:
        """True if the factory takes keyword ``kwarg`` (or ``**kwargs``)."""
        params = inspect.signature(self.factory).parameters
        return kwarg in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


_REGISTRY: Dict[str, ModelEntry] = {}


def register_model(
    name: str,
    default_input: Tuple[int, int, int, int] = (1, 3, 224, 224),
    kinds: Tuple[str, ...] = (),
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``factory`` under ``name`` (a duplicate name is a ``ValueError``).

    ``default_input`` is the NCHW shape the model is profiled/deployed with when the user gives
    none; ``kinds`` lists the conv kinds (``create_conv2d`` names) the architecture uses.
    """

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        doc = inspect.getdoc(factory) or ""
        _REGISTRY[name] = ModelEntry(name, factory, tuple(default_input), doc.split("\n")[0], tuple(kinds))
        return factory

    return decorator


def get_entry(name: str) -> ModelEntry:
    """The :class:`ModelEntry` for ``name``; ``KeyError`` listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        raise KeyError(f"unknown model {name!r}; known models: {known}") from None


def list_models() -> List[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the registered model ``name`` with ``kwargs``."""
    return get_entry(name).factory(**kwargs)
