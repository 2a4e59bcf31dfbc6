"""Make PyPI's torchvision (and timm, which imports it) importable next to our CPU torch.

PyPI's torchvision wheel is built against the CUDA torch: its ``_C`` library cannot load here,
and ``import torchvision`` then fails because it registers fake kernels for ``torchvision::nms``
and ``qnms``, ops that only ``_C`` defines. :func:`install` defines what the Python parts need:

* the ``nms`` / ``qnms`` schemas (never run by our tests);
* ``torchvision::deform_conv2d`` with torchvision's schema, an independent float64 numpy CPU
  kernel (``deform_conv2d_ref`` of the kernel tests) and a fake kernel for ``torch.export``;
* ``torchvision.extension._has_ops`` returning True, so ``_assert_has_ops`` (called by
  ``torchvision.ops.deform_conv2d``) does not raise. It is patched after the import, so the
  import does not try to register meta kernels for ops that are not defined.

With a working torchvision (its ``_C`` loaded) :func:`install` changes nothing. Used by
``tests/thirdparty/conftest.py`` and by the model file ``tests/thirdparty/byom_models.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "custom_ops"))
from ec_ortops_util import deform_conv2d_ref  # noqa: E402  (numpy loop reference, float64)

DEFORM_SCHEMA = (
    "(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, "
    "SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, "
    "SymInt groups, SymInt offset_groups, bool use_mask) -> Tensor")
_LIB: list = []  # keeps the torch.library.Library alive (its definitions die with it)


def _defined(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def _deform_cpu(input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                dilation_h, dilation_w, groups, offset_groups, use_mask):
    y = deform_conv2d_ref(
        input.detach().numpy(), weight.detach().numpy(), offset.detach().numpy(),
        mask.detach().numpy() if use_mask else None, bias.detach().numpy(),
        strides=(stride_h, stride_w), pads=(pad_h, pad_w, pad_h, pad_w),
        dilations=(dilation_h, dilation_w), group=groups, offset_group=offset_groups)
    return torch.from_numpy(y.astype(np.float32))


def _deform_fake(input, weight, offset, mask, bias, *args):
    return input.new_empty((input.shape[0], weight.shape[0], offset.shape[2], offset.shape[3]))


def install():
    """Define the missing torchvision ops, import torchvision and return it (idempotent)."""
    if "torchvision" not in sys.modules and not _defined("nms"):
        lib = torch.library.Library("torchvision", "FRAGMENT")
        _LIB.append(lib)
        for name in ("nms", "qnms"):
            lib.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("deform_conv2d" + DEFORM_SCHEMA)
        lib.impl("deform_conv2d", _deform_cpu, "CPU")
        torch.library.register_fake("torchvision::deform_conv2d", _deform_fake, lib=lib)
    import torchvision
    import torchvision.extension

    if not torchvision.extension._has_ops():
        torchvision.extension._has_ops = lambda: True
    return torchvision
