"""onnxscript translations of the ``edgeconv::`` torch ops and of third-party ops that map onto
the ``edgeconv`` domain (one file per op, torch_lib style)."""

from __future__ import annotations

from edgeconv.opdefs import DEFORM_CONV2D, DYNAMIC_CONV2D

from .edgeconv_deform_conv2d import edgeconv_deform_conv2d
from .edgeconv_dynamic_conv2d import edgeconv_dynamic_conv2d
from .torchvision_deform_conv2d import torchvision_deform_conv2d

#: torch op name (``namespace::name``) -> translation function
TRANSLATIONS = {
    DEFORM_CONV2D.torch_op: edgeconv_deform_conv2d,
    DYNAMIC_CONV2D.torch_op: edgeconv_dynamic_conv2d,
    "torchvision::deform_conv2d": torchvision_deform_conv2d,
}


def translation_table() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export`` (only ops that exist in torch.ops:
    looking one up never imports the package that defines it)."""
    import torch

    table = {}
    for qualname, fn in TRANSLATIONS.items():
        ns, name = qualname.split("::")
        packet = getattr(getattr(torch.ops, ns), name, None) if hasattr(torch.ops, ns) else None
        if packet is not None:
            table[packet.default] = fn
    return table


__all__ = ["TRANSLATIONS", "edgeconv_deform_conv2d", "edgeconv_dynamic_conv2d", "torchvision_deform_conv2d",
           "translation_table"]
