"""Import (ONNX / torch / IRModule) -> edgeconv pipeline -> compiled model."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np

from edgeconv.deploy.measure import to_numpy_list
from edgeconv.opdefs import DOMAIN

__all__ = ["import_model", "compile_tvm", "CompiledModel", "set_num_threads", "build_config"]


def build_config() -> dict:
    """PassContext config our kernels want (partition the zero-padding loops)."""
    return {"s_tir.LoopPartition": {"partition_const_loop": True}}


_KBIG = 1  # threading::ThreadGroup::kBig: the affinity mode TVM's pool starts in


def _pool_workers(want: int) -> int:
    """Workers of this thread's TVM pool, creating it with ``want`` workers if it does not exist.

    TVM 0.27 (src/runtime/thread_pool.cc) sizes a thread's pool once, from ``TVM_NUM_THREADS``
    (default: half the hardware threads) when the pool is first touched; ``config_threadpool``
    can then only use fewer of those workers, never more. Asking the pool for ``want`` threads
    returns what it can give, which is how big it is.
    """
    import tvm

    os.environ["TVM_NUM_THREADS"] = str(want)  # read if this call creates the pool
    tvm.get_global_func("runtime.config_threadpool")(_KBIG, want)
    return int(tvm.get_global_func("runtime.NumThreads")())


def set_num_threads(n: int) -> None:
    """Run TVM kernels on ``n`` threads from now on (any number of times, up and down).

    The pool is created with a worker per CPU (or ``n`` if larger) and ``n`` of them are used;
    parallel launches read ``TVM_NUM_THREADS`` (1: run inline). A pool that TVM created smaller
    before edgeconv configured it cannot grow: that is a clear error, not a silent 1-thread run.
    """
    import tvm

    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads needs n >= 1, got {n}")
    have = _pool_workers(max(n, os.cpu_count() or 1))
    if have < n:
        raise RuntimeError(
            f"TVM's thread pool was created with {have} worker(s) before edgeconv configured it; "
            f"call set_num_threads({n}) before running any TVM module, or start with TVM_NUM_THREADS={n}")
    os.environ["TVM_NUM_THREADS"] = str(n)
    tvm.get_global_func("runtime.config_threadpool")(_KBIG, n)


def _ensure_pool() -> None:
    """Before our first VM: a pool big enough for any later set_num_threads, using TVM's
    default thread count (``TVM_NUM_THREADS`` if set) until then."""
    global _POOL_READY
    if _POOL_READY:
        return
    _POOL_READY = True
    default = os.environ.get("TVM_NUM_THREADS")
    n = int(default) if default and default.isdigit() and int(default) > 0 else max(1, (os.cpu_count() or 2) // 2)
    set_num_threads(n)


_POOL_READY = False


# What TVM prints on valid input, filtered at our API boundary (``EDGECONV_VERBOSE=1`` shows it).
# Python warnings: TVM's ONNX frontend runs onnx.checker and re-raises its complaints as warnings,
# then imports the model anyway (graph outputs without a shape are legal in files from other
# exporters; a node it cannot import is an OpNotImplemented error, which names the op).
_HARMLESS_WARNING_MODULES = (r"tvm\.relax\.frontend\.onnx",)
# C++ LOG(WARNING) lines on fd 2: the stock pipeline legalizes an ONNX Gather as take(mode="fast"),
# harmless for the in-range indices ONNX requires (our pipeline uses mode="clip", no warning).
_HARMLESS_NATIVE = (r"Warning: Fast mode segfaults when there are out-of-bounds indices",)


@contextlib.contextmanager
def _quiet_tvm():
    from edgeconv._quiet import native_stderr_filtered, verbose

    with warnings.catch_warnings(), native_stderr_filtered(_HARMLESS_NATIVE):
        if not verbose():
            for module in _HARMLESS_WARNING_MODULES:
                warnings.filterwarnings("ignore", category=UserWarning, module=module)
        yield


def _onnx_io(model):
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    return [i.name for i in inputs], [o.name for o in model.graph.output]


def import_model(model, input_shapes: dict | None = None, example_inputs=None):
    """Return ``(IRModule, input_names, output_names)``; parameters are bound as constants.

    ``model``: ``onnx.ModelProto``, a path to an ``.onnx`` file, a ``tvm.IRModule`` or a
    ``torch.nn.Module`` (then ``example_inputs`` is required; imported via ``torch.export``).
    ONNX ``DeformConv`` and mmcv/mmdeploy deformable nodes are first rewritten by
    :func:`edgeconv.optimize_onnx` (``OptimizeError`` if one cannot be mapped).
    ``input_shapes`` fixes symbolic input dims of an ONNX model (name -> shape).
    """
    import tvm

    if isinstance(model, tvm.ir.IRModule):
        return model, None, None
    if isinstance(model, (str, os.PathLike)):
        import onnx

        model = onnx.load(str(model))
    try:
        import onnx

        is_onnx = isinstance(model, onnx.ModelProto)
    except ImportError:  # pragma: no cover
        is_onnx = False
    if is_onnx:
        from tvm.relax.frontend.onnx import from_onnx

        from ..onnx import optimize_onnx, rewritable_nodes

        if rewritable_nodes(model):
            # DeformConv / mmcv deformable nodes: TVM's frontend knows none of them; as
            # edgeconv.DeformConv2d they take the standard-op path below.
            model = optimize_onnx(model)
        in_names, out_names = _onnx_io(model)
        converters = {}
        if any(n.domain == DOMAIN for n in model.graph.node):
            # TVM's frontend knows neither the edgeconv ops nor model-local functions: ops we
            # have TVM kernels for stay nodes (converted by ours), the others are decomposed.
            from ..onnx import standard_op_model
            from .deform import onnx_converters

            converters = onnx_converters()
            model = standard_op_model(model, input_shapes, keep=tuple(converters))
        with _quiet_tvm(), _frontend_converters(converters):
            mod = from_onnx(model, shape_dict=input_shapes, keep_params_in_input=False)
        return mod, in_names, out_names
    try:
        import torch
    except ImportError:  # pragma: no cover
        torch = None
    if torch is not None and isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise ValueError("a torch module needs example_inputs")
        from tvm.relax.frontend.torch import from_exported_program

        args = tuple(torch.as_tensor(np.asarray(a)) if not isinstance(a, torch.Tensor) else a for a in example_inputs)
        with torch.no_grad():
            ep = torch.export.export(model.eval(), args)
        mod = from_exported_program(ep, keep_params_as_input=False)
        return mod, None, None
    raise TypeError(f"cannot import model of type {type(model).__name__}")


@contextlib.contextmanager
def _frontend_converters(extra: dict):
    """TVM's ONNX frontend with ``extra`` (op_type -> converter) in its converter map: it has
    no registry for custom ops, the map comes from the module function ``_get_convert_map``."""
    if not extra:
        yield
        return
    from tvm.relax.frontend.onnx import onnx_frontend

    stock = onnx_frontend._get_convert_map
    onnx_frontend._get_convert_map = lambda: {**stock(), **extra}
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = stock


class CompiledModel:
    """A TVM-compiled model. Callable on numpy arrays for host targets."""

    def __init__(self, executable, target: dict, family: str, is_host: bool, input_names, output_names, mod):
        self.executable = executable
        self.target = target
        self.family = family
        self.is_host = is_host
        self.input_names = input_names
        self.output_names = output_names
        self.mod = mod  # the Relax IRModule after import (before our pipeline)
        self.tuning = None  # a tune.TuningSummary when compiled with tune_trials
        self._vm = None

    @property
    def vm(self):
        if self._vm is None:
            if not self.is_host:
                raise RuntimeError(f"model was compiled for {self.target}, not for this host")
            import tvm
            from tvm import relax

            _ensure_pool()
            self._vm = relax.VirtualMachine(self.executable, tvm.cpu())
        return self._vm

    def __call__(self, *inputs, **named):
        import tvm

        if named:
            if not self.input_names:
                raise TypeError("this model takes positional inputs only")
            inputs = tuple(inputs) + tuple(named[n] for n in self.input_names[len(inputs):])
        self._check_shapes(inputs)
        dev = tvm.cpu()
        args = [tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in inputs]
        out = self.vm["main"](*args)
        return to_numpy_list(out)

    def _check_shapes(self, inputs) -> None:
        """A clear error for an input whose static dims differ from what was compiled (the VM's
        own message names neither the input nor the fix)."""
        from tvm import relax, tirx

        params = self.mod["main"].params if "main" in [g.name_hint for g in self.mod.get_global_vars()] else []
        for i, (param, arr) in enumerate(zip(params, inputs)):
            sinfo = param.ty
            if not isinstance(sinfo, relax.TensorType) or not isinstance(sinfo.shape, relax.ShapeExpr):
                continue
            want = [int(v) if isinstance(v, tirx.IntImm) else None for v in sinfo.shape.values]
            have = list(np.shape(arr))
            if len(want) != len(have) or any(w is not None and w != h for w, h in zip(want, have)):
                name = self.input_names[i] if self.input_names and i < len(self.input_names) else f"#{i}"
                shown = tuple("?" if w is None else w for w in want)
                raise ValueError(f"input {name!r} has shape {tuple(have)}, the model was compiled for {shown}; "
                                 f"compile with input_shapes={{{name!r}: {list(have)}}} for this shape")

    def benchmark(self, *inputs, number: int = 10, repeat: int = 5) -> list[float]:
        """Per-run times (seconds) via the VM's time evaluator: one value per repeat."""
        import tvm

        dev = tvm.cpu()
        args = [tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in inputs]
        self.vm.set_input("main", *args)
        res = self.vm.time_evaluator("invoke_stateful", dev, number=number, repeat=repeat)("main")
        return list(res.results)

    def export_library(self, path):
        import tvm

        path = str(path)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if self.family == "arm" and not self.is_host:
            from tvm.support import cc

            self.executable.export_library(path, fcompile=cc.cross_compiler("aarch64-linux-gnu-g++"))
        elif not self.is_host and self.family == "x86":
            self.executable.export_library(path, fcompile=tvm.support.cc.cross_compiler("x86_64-linux-gnu-g++"))
        else:
            self.executable.export_library(path)
        return path


def compile_tvm(
    model,
    target="x86",
    output=None,
    tune_trials: int = 0,
    *,
    input_shapes: dict | None = None,
    example_inputs=None,
    pipeline: str | None = None,
    layout: str = "blocked",
    work_dir: str | None = None,
    overrides=None,
    rpc: dict | None = None,
    on_trial=None,
) -> CompiledModel:
    """Compile ``model`` with edgeconv's TVM pipeline.

    target: ``x86`` (host; AVX-512 if /proc/cpuinfo has it, else AVX2), ``x86-avx2``,
    ``x86-avx512``, ``arm64`` (NEON, cortex-a72), ``arm64-dotprod`` or a JSON-dict TVM target.
    output: path of a shared library to write (cross-compiled for arm64).
    tune_trials: > 0 runs MetaSchedule on the kernels our pipeline leaves to generic schedules
    and keeps a tuned schedule only where it measured faster (see :mod:`.tune`); needs
    ``work_dir`` (database and logs, reused across runs). ``rpc`` (``{"host", "port", "key"}``
    of an RPC tracker) measures on remote boards, required for a target that is not this host;
    ``on_trial(done, total)`` is called after each measured batch. The result's ``tuning``
    is a :class:`~.tune.TuningSummary`.
    pipeline: ``"edgeconv"`` (default) or ``"stock"`` (TVM's default pipeline, for comparison).
    layout: ``"blocked"`` (default; NCHW[b]c kernels wherever channels come in whole vector blocks,
    layout transforms only at the graph edges) or ``"nchw"`` (every kernel in NCHW).
    overrides: a :class:`~.conv.PlanOverrides` (explicit tiling choices, for experiments).

    A symbolic batch dim (``export_onnx``'s default) compiles to our kernels with the batch as
    their outer loop: one module serves every batch size. Other symbolic dims, and models with
    edgeconv ops (their standard-op form is fixed to ``input_shapes``, else 1), need static
    shapes.
    """
    import tvm

    from .passes import edgeconv_pipeline, register_pipelines
    from .targets import resolve_target

    register_pipelines()
    tdict, family, is_host = resolve_target(target)
    mod, in_names, out_names = import_model(model, input_shapes, example_inputs)
    tgt = tvm.target.Target(tdict)
    from .conv import DEFAULT_OVERRIDES

    overrides = overrides or DEFAULT_OVERRIDES
    if pipeline in (None, "edgeconv"):
        relax_pipeline = edgeconv_pipeline(family, layout=layout, overrides=overrides)
    elif pipeline == "stock":
        relax_pipeline = "default"
    else:
        relax_pipeline = pipeline
    with tvm.transform.PassContext(opt_level=3, config=build_config()), _quiet_tvm():
        tuning = None
        if tune_trials and tune_trials > 0:
            from .tune import tune_and_build

            if work_dir is None:
                raise ValueError("tuning needs work_dir= (MetaSchedule's database and logs go there)")
            ex, tuning = tune_and_build(mod, tgt, family, tune_trials, work_dir, layout, overrides, rpc=rpc,
                                        on_trial=on_trial, is_host=is_host)
        else:
            ex = tvm.compile(mod, target=tgt, relax_pipeline=relax_pipeline)
    cm = CompiledModel(ex, tdict, family, is_host, in_names, out_names, mod)
    cm.tuning = tuning
    if output is not None:
        cm.export_library(output)
    return cm
