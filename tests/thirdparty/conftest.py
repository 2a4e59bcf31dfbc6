"""Fixtures of the third-party model tests: the real PyPI packages torchvision and timm.

PyPI's torchvision cannot load its compiled ops next to our CPU torch (see
/work/shared/docs/field-notes.md, "Third-party model code"): ``torchvision_shim.install()``
defines the op schemas its import needs and registers an independent numpy reference CPU kernel
for ``torchvision::deform_conv2d``. So in these tests every torchvision DCN output computed by
PyTorch *is* the numpy reference.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torchvision_shim  # noqa: E402


@pytest.fixture(scope="session")
def torchvision():
    """The real ``torchvision`` package, importable (its DCN op runs the numpy reference)."""
    return torchvision_shim.install()


@pytest.fixture(scope="session")
def timm(torchvision):
    """The real ``timm`` package (it imports torchvision)."""
    import timm

    return timm


@pytest.fixture(scope="session")
def byom_models(timm):
    """``tests/thirdparty/byom_models.py``: the user models also used with ``edgeconv deploy``."""
    import byom_models

    return byom_models
