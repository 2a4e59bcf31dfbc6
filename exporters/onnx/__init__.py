"""ONNX export of edgeconv models: standard kinds as standard ONNX operators, deformable and
dynamic convolution as the custom domain ``edgeconv`` (version 1) with standard-operator
fallback functions. See ``docs/onnx-ops.md``.

Public API::

    export_onnx(model, args, path=None, *, opset=20, dynamic_batch=True, deform="auto",
                dynamic="custom", deform_fallback="standard") -> onnx.ModelProto
    ort_session(model_or_path, threads=None, custom_ops=True) -> onnxruntime.InferenceSession
    check_parity(model, args, onnx_model, *, custom_ops=True) -> list[ParityResult]
    optimize_onnx(model_or_path, path=None, *, fallback="auto", report=None) -> onnx.ModelProto
"""

from __future__ import annotations

from ._schemas import DEFORM_OP, DOMAIN, DOMAIN_VERSION, DYNAMIC_OP, register_schemas, schemas
from .errors import ExportError
from .export import export_onnx, standard_op_model
from .optimize import OptimizeError, Rewrite, optimize_onnx, rewritable_nodes
from .runtime import ParityResult, check_parity, custom_ops_available, ort_session

__all__ = [
    "export_onnx",
    "standard_op_model",
    "optimize_onnx",
    "rewritable_nodes",
    "OptimizeError",
    "Rewrite",
    "ort_session",
    "check_parity",
    "custom_ops_available",
    "ParityResult",
    "ExportError",
    "register_schemas",
    "schemas",
    "DOMAIN",
    "DOMAIN_VERSION",
    "DEFORM_OP",
    "DYNAMIC_OP",
]
