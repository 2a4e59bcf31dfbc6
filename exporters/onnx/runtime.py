"""onnxruntime helpers: sessions with the edgeconv kernel library, PyTorch/ONNX parity checks."""

from __future__ import annotations

import importlib
import os
from dataclasses import asdict, dataclass
from typing import Any

import onnx

from edgeconv.deploy.measure import parity, to_numpy_list

__all__ = ["ort_session", "check_parity", "custom_ops_available", "library_path", "ParityResult"]


def _library_module():
    try:
        return importlib.import_module("edgeconv._library")
    except ImportError:
        return None


def custom_ops_available() -> bool:
    """True when the edgeconv onnxruntime kernel library is built and can be located."""
    lib = _library_module()
    if lib is None:
        return False
    try:
        return bool(lib.library_available())
    except Exception:
        return False


def library_path() -> str | None:
    lib = _library_module()
    if lib is None or not custom_ops_available():
        return None
    return lib.get_library_path()


def ort_session(model_or_path: Any, threads: int | None = None, custom_ops: bool = True,
                providers: list[str] | None = None, profile_prefix: str | None = None):
    """An ``onnxruntime.InferenceSession`` for an ``onnx.ModelProto``, serialized bytes or a path.

    Args:
        threads: intra-op threads (None: onnxruntime's default); inter-op is set to 1.
        custom_ops: register the edgeconv kernel library when it is built (silently skipped
            otherwise; the model then runs through its fallback functions). ``"require"`` raises
            when the library is missing.
        profile_prefix: enable onnxruntime's profiler; ``session.end_profiling()`` then writes
            its JSON trace to ``<profile_prefix>_<date>.json`` and returns the path.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only (no shape-merge chatter about custom-domain outputs)
    if threads is not None:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile_prefix)
    if custom_ops:
        path = library_path()
        if path is not None:
            so.register_custom_ops_library(path)
        elif custom_ops == "require":
            lib = _library_module()
            if lib is None:
                raise RuntimeError("edgeconv._library is not importable")
            lib.get_library_path()  # raises FileNotFoundError with build instructions
    if isinstance(model_or_path, onnx.ModelProto):
        model_or_path = model_or_path.SerializeToString()
    elif isinstance(model_or_path, os.PathLike):
        model_or_path = os.fspath(model_or_path)
    return ort.InferenceSession(model_or_path, sess_options=so,
                                providers=providers or ["CPUExecutionProvider"])


@dataclass
class ParityResult:
    """PyTorch vs onnxruntime for one output.

    ``max_rel`` is ``max_abs`` divided by the largest magnitude of the PyTorch output (a norm-wise
    relative error, stable where outputs cross zero: :func:`edgeconv.deploy.measure.parity`;
    ``inf`` for a non-finite output).
    """

    output: str
    shape: tuple
    max_abs: float
    max_rel: float
    custom_ops: bool

    def as_dict(self) -> dict:
        return asdict(self)


def check_parity(model, args, onnx_model, *, custom_ops: bool = True, threads: int | None = None,
                 session=None) -> list[ParityResult]:
    """Run ``model(*args)`` in PyTorch and ``onnx_model`` in onnxruntime on the same inputs.

    Returns one :class:`ParityResult` per output (max abs / rel error). ``custom_ops`` as in
    :func:`ort_session`; ``custom_ops`` in the results tells whether the library was used.
    """
    import torch

    if not isinstance(args, tuple):
        args = (args,)
    with torch.no_grad():
        ref = to_numpy_list(model(*args))
    used_lib = bool(custom_ops) and custom_ops_available()
    sess = session or ort_session(onnx_model, threads=threads, custom_ops=custom_ops)
    arrays = to_numpy_list([a for a in args if isinstance(a, torch.Tensor)])
    names = [i.name for i in sess.get_inputs()]
    if len(names) != len(arrays):
        raise ValueError(f"the ONNX model has {len(names)} inputs ({names}), got {len(arrays)} tensors")
    feeds = dict(zip(names, arrays))
    got = sess.run(None, feeds)
    out_names = [o.name for o in sess.get_outputs()]
    if len(got) != len(ref):
        raise ValueError(f"PyTorch gave {len(ref)} outputs, onnxruntime {len(got)}")
    results = []
    for name, r, g in zip(out_names, ref, got):
        if r.shape != g.shape:
            raise ValueError(f"output {name}: PyTorch shape {r.shape} != onnxruntime shape {g.shape}")
        p = parity([r], [g], tol=float("inf"))
        results.append(ParityResult(name, tuple(r.shape), p.get("max_abs", float("inf")), p.get("rel", float("inf")),
                                    used_lib))
    return results
