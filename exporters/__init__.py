"""Exporters, installed as ``edgeconv.exporters``: PyTorch -> ONNX (``onnx``) and
ONNX/PyTorch -> TVM Relax with edgeconv's convolution pipelines (``tvm``)."""

# scikit-build-core's editable install puts the repository root on sys.path (for Cython), which
# would also expose this folder as a generic top-level ``exporters`` package: refuse that name.
if __name__ != "edgeconv.exporters":
    raise ImportError("'exporters' is part of edgeconv: import it as 'edgeconv.exporters'")
