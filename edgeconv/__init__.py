"""edgeconv: every convolution kind of modern CNNs, from a PyTorch layer to a verified, fast
deployment on edge CPUs (onnxruntime, TVM; x86 and aarch64).

Everything is imported lazily, on first use of its entry point (``edgeconv.functional``, which
defines the ``torch.ops.edgeconv`` ops, included): ``import edgeconv`` imports neither torch nor
TVM, so ``edgeconv --help`` is fast and the package works without TVM installed.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "functional": "edgeconv.functional",
    "layers": "edgeconv.layers",
    "analysis": "edgeconv.analysis",
    "models": "edgeconv.models",
    "exporters": "edgeconv.exporters",
    "create_conv2d": "edgeconv.layers",
    "profile": "edgeconv.analysis",
    "export_onnx": "edgeconv.exporters.onnx",
    "optimize_onnx": "edgeconv.exporters.onnx",
    "ort_session": "edgeconv.exporters.onnx",
    "check_parity": "edgeconv.exporters.onnx",
    "compile_tvm": "edgeconv.exporters.tvm",
    "get_library_path": "edgeconv._library",
    "convert": "edgeconv.thirdparty",
    "thirdparty": "edgeconv.thirdparty",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'edgeconv' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if module_name.endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value
