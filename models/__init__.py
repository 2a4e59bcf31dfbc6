"""edgeconv model zoo, installed as ``edgeconv.models``.

One architecture per module, each registered by name with :func:`register_model`; all are
randomly initialised and accept any input size >= 32x32 (the GDC models ``mobilefacenet`` and
``edgenet`` are built for one size, given by their ``input_size`` keyword).

>>> import edgeconv.models as zoo
>>> zoo.list()                                  # doctest: +SKIP
['dcn_resnet18', 'edgenet', 'flattened_net', ...]
>>> net = zoo.create("edgenet", num_classes=10).eval()  # doctest: +SKIP
"""

from __future__ import annotations

# scikit-build-core's editable install puts the repository root on sys.path (for Cython), which
# would also expose this folder as a generic top-level ``models`` package: refuse that name.
if __name__ != "edgeconv.models":
    raise ImportError("'models' is part of edgeconv: import it as 'edgeconv.models'")

from typing import Any, List

from torch import nn

from ._registry import ModelEntry, create_model, get_entry, list_models, register_model

# importing the architecture modules registers them
from . import dcn_resnet18 as _dcn_resnet18  # noqa: F401
from . import edgenet as _edgenet  # noqa: F401
from . import flattened_net as _flattened_net  # noqa: F401
from . import hetconv_vgg16 as _hetconv_vgg16  # noqa: F401
from . import mixnet_s as _mixnet_s  # noqa: F401
from . import mobilefacenet as _mobilefacenet  # noqa: F401
from . import mobilenetv2_dynamic as _mobilenetv2_dynamic  # noqa: F401
from . import shufflenet_g3 as _shufflenet_g3  # noqa: F401

__all__ = ["create", "list", "list_models", "get_entry", "register_model", "ModelEntry", "create_model"]


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` (``KeyError`` naming the known models otherwise)."""
    return create_model(name, **kwargs)


def list() -> List[str]:  # noqa: A001 - public name requested by the API (``edgeconv.models.list()``)
    """Registered model names, sorted (same as :func:`list_models`)."""
    return list_models()

