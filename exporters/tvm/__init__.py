"""TVM (Relax, 0.27) export of edgeconv models: conv2d of every kind lowered to scheduled TensorIR.

    from edgeconv.exporters.tvm import compile_tvm
    compiled = compile_tvm("model.onnx", target="x86")      # host, callable on numpy arrays
    compile_tvm("model.onnx", target="arm64", output="model_arm64.so")  # cross-compiled

Pipelines ``edgeconv_x86`` / ``edgeconv_arm`` are registered for
``tvm.compile(mod, target, relax_pipeline="edgeconv_x86")`` on import.
"""

from .compile import CompiledModel, build_config, compile_tvm, import_model, set_num_threads
from .conv import ConvSpec, PlanOverrides, TargetInfo, conv2d_compute, schedule_conv2d
from .passes import LowerConv2d, edgeconv_pipeline, register_pipelines, target_info
from .targets import resolve_target

__all__ = [
    "compile_tvm",
    "CompiledModel",
    "import_model",
    "set_num_threads",
    "build_config",
    "ConvSpec",
    "PlanOverrides",
    "TargetInfo",
    "conv2d_compute",
    "schedule_conv2d",
    "LowerConv2d",
    "edgeconv_pipeline",
    "register_pipelines",
    "target_info",
    "resolve_target",
]
