"""Errors raised by the edgeconv ONNX exporter."""

from __future__ import annotations


class ExportError(RuntimeError):
    """``edgeconv.export_onnx`` could not export the model.

    Attributes:
        op: the torch operator that could not be exported (``namespace::name``), when known.
        module: the path of the submodule that called it (e.g. ``"blocks.2.conv"``), when known.
        module_type: the class name of that submodule, when known.
        option: the ``export_onnx`` argument whose value was rejected (``"opset"``, ...), when
            the error is about an argument rather than the model.
    """

    def __init__(self, message: str, *, op: str | None = None, module: str | None = None,
                 module_type: str | None = None, option: str | None = None):
        super().__init__(message)
        self.option = option
        self.op = op
        self.module = module
        self.module_type = module_type
