"""``edgeconv deploy``: one model from PyTorch to every backend, verified and timed, with a report.

Pipeline (each stage is recorded with status, wall time, parity and latency; a failing stage
records its error and the pipeline goes on with whatever does not depend on it). The stages are
the rows of :data:`edgeconv.deploy.stages.TABLE`:

============== ================================================================================
stage           what it does
============== ================================================================================
torch           reference outputs on a seeded random input; eager latency
profile         :func:`edgeconv.analysis.profile`: params/MACs per layer and per kind; per-kind latency
export          :func:`edgeconv.export_onnx` -> ``model.onnx``
onnx-check      ``onnx.checker.check_model(full_check=True)`` + strict shape inference
ort             onnxruntime with the edgeconv kernel library (target ``ort``)
ort-nolib       onnxruntime without it: custom ops run their model-local fallback functions (only for a
                model with edgeconv ops: otherwise it would repeat ``ort``, and is not run)
tvm-x86         :func:`edgeconv.compile_tvm` for the host, run, parity, latency (``tvm-x86``)
openvino        (opt-in target ``openvino``) OpenVINO CPU on the ONNX model, edgeconv ops as their
                inlined fallback functions (OpenVINO converts neither the domain nor local functions)
tvm-arm64       cross-compile for aarch64 -> ``model_arm64.so`` (target ``tvm-arm64``)
tvm-arm64-run   run that library under qemu via the ARM helper (:mod:`edgeconv.arm`), parity
ort-arm64-run   (opt-in target ``ort-arm64``) aarch64 onnxruntime + the aarch64 kernel build under
                qemu via ``edgeconv.arm.verify_arm``, parity
tvm-rpc         (``--rpc``) upload/load/run the library on an RPC server, parity, latency
============== ================================================================================

An ``.onnx`` file instead of a PyTorch model (``DeployConfig.onnx_model``): ``reference`` replaces
``torch`` (stock onnxruntime on the file as given; a file it cannot run, e.g. mmdeploy's custom ops,
is referenced by its optimized form's fallback functions on stock onnxruntime, said in the report),
``profile`` does not run (no PyTorch layers), and ``optimize`` replaces ``export``
(:func:`edgeconv.optimize_onnx` -> ``model.onnx``: DeformConv / mmcv deformable nodes become
``edgeconv.DeformConv2d``). Every graph input gets a seeded random array (the first one of
``input_shape``, symbolic dims of the others 1).

Parity (:func:`~edgeconv.deploy.measure.parity`): ``max|y - y_ref| / max|y_ref| <= tol``
(default ``1e-4``) over all outputs. Latency: median (and p10/p90) of ``repeats`` timed runs
after warm-up, at each of ``threads`` (a list); the deployed runtimes are timed in a fresh process
per thread count, which also gives their peak memory (:mod:`edgeconv.deploy.backends`), and
profiled per kernel by their own profilers (TVM, onnxruntime).

The report (:mod:`edgeconv.deploy.report`) opens with its decision: per device and thread count,
the fastest backend that passed parity, its margin over the runner-up and whether that margin is
inside the run-to-run noise; then sizes (parameters, bytes of every ``.onnx``/``.so``), stages,
latency per thread count, peak memory and the top kernels per runtime.

Exit-code rule (:func:`exit_code`): **0** iff every stage passed or was *legitimately skipped*,
else **1**. Legitimate skips:

* a target's optional dependency is missing (TVM not installed -> ``tvm-*``; the kernel library
  not built -> ``ort``) **and** the target was not named with ``--targets`` (i.e. it came from the
  default list). A target named explicitly must run: the same condition is then a failure;
* the emulated runs (``tvm-arm64-run``, ``ort-arm64-run``) when the ARM helper reports that its
  runner cannot run here (no qemu-user/cross toolchain): the cross-compilation itself still has
  to pass.

A stage skipped because a stage it needs failed ("upstream failed") is not legitimate, but its
upstream failure already makes the exit code 1. Usage errors (unknown model, malformed shape,
bad target) never get here: the CLI exits 2 before the pipeline starts.

Outputs in ``outdir``: ``report.md``, ``report.json``, ``latency.png`` (matplotlib Agg),
``model.onnx``, compiled libraries, ``input.npy`` and ``torch_output.npy`` (``reference_output.npy``).
"""

import importlib

from .measure import kind_latency_torch, parity, summarize_ms, time_callable
from .pipeline import DeployResult, exit_code, onnx_inputs, run_deploy
from .stages import DEFAULT_TARGETS, DEPLOY_TARGETS, DeployConfig, StageResult, export_model, make_ort_session

__all__ = [
    "DeployConfig",
    "StageResult",
    "DeployResult",
    "run_deploy",
    "exit_code",
    "time_callable",
    "summarize_ms",
    "make_ort_session",
    "export_model",
    "onnx_inputs",
    "parity",
    "kind_summary",
    "kind_latency_torch",
    "run_rpc",
    "DEPLOY_TARGETS",
    "DEFAULT_TARGETS",
]

# defined elsewhere, imported on first use (``edgeconv.analysis`` needs torch, the RPC client TVM)
_LAZY = {"kind_summary": "edgeconv.analysis", "run_rpc": "edgeconv.exporters.tvm.rpc"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'edgeconv.deploy' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
