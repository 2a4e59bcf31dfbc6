"""``verify_arm``: run a model's aarch64 builds under qemu and compare them with x86 onnxruntime.

    from edgeconv.arm import verify_arm, format_table
    res = verify_arm("model.onnx")          # or an onnx.ModelProto, or a torch nn.Module
    print(format_table(res)); assert res.ok

Backends:
  ``ort``  the aarch64 onnxruntime (PyPI aarch64 wheel) through ``runners/ort_runner.cc``, with the
           aarch64 build of ``custom_ops/`` registered when the model uses the ``edgeconv`` domain;
  ``tvm``  the model compiled for arm64 by ``edgeconv.exporters.tvm.compile_tvm`` (TVM's stock
           Relax flow when that is not importable), run by ``runners/tvm_runner.cc``.
The reference is onnxruntime on the host (x86-64) with ``edgeconv.get_library_path()``.

Errors: ``max_rel_err`` is ``max|y - y_ref| / max|y_ref|`` over all outputs (a norm-wise relative
error that does not blow up at zeros: :func:`edgeconv.deploy.measure.parity`); ``max_abs_err`` is
``max|y - y_ref|``. A backend is ``ok``
when ``max_rel_err <= rtol``.
"""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgeconv.deploy.measure import parity
from edgeconv.opdefs import DOMAIN

from .runners import build_kernels, build_runners, run_ort, run_tvm
from .toolchain import ArmToolError, find_tools

__all__ = ["verify_arm", "format_table", "ArmVerifyResult", "BackendResult"]

# "ran": a backend ran but there was nothing to compare with (prebuilt library, no reference)
_GOOD = ("ok", "ran")
_NEUTRAL = ("skipped", "unsupported")


@dataclass
class BackendResult:
    backend: str                       # "ort" | "tvm"
    status: str = "skipped"            # "ok" | "mismatch" | "error" | "skipped" | "unsupported"
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    wall_s: float | None = None        # emulation wall time of the runner process (qemu)
    load_ms: float | None = None       # runner-reported load time (under emulation)
    run_ms: float | None = None        # runner-reported median inference time (under emulation)
    build_s: float | None = None       # host build/compile time attributable to this backend
    output_shapes: list[list[int]] = field(default_factory=list)
    message: str = ""
    outputs: list = field(default_factory=list, repr=False)      # the aarch64 outputs (numpy)
    run_ms_all: list[float] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.status in _GOOD


@dataclass
class ArmVerifyResult:
    model: str
    input_shapes: list[list[int]]
    reference: str                     # e.g. "onnxruntime 1.32.0 (x86_64)"
    rtol: float
    backends: dict[str, BackendResult]
    commands: list[str]                # every build and emulation command that was run
    workdir: str
    total_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when at least one backend ran and matched and none failed or mismatched
        (``skipped``, e.g. TVM not installed, and ``unsupported``, e.g. TVM has no lowering for a
        custom op, do not count)."""
        st = [b.status for b in self.backends.values()]
        return any(s in _GOOD for s in st) and all(s in _GOOD + _NEUTRAL for s in st)

    def _primary(self) -> BackendResult | None:
        for b in self.backends.values():
            if b.outputs:
                return b
        return None

    @property
    def outputs(self) -> list:
        """aarch64 outputs of the first backend that ran (order: ort, tvm); [] if every backend
        was skipped. Raises RuntimeError (with the backends' messages) when none ran because of
        errors."""
        b = self._primary()
        if b is not None:
            return list(b.outputs)
        errors = [f"{x.backend}: {x.message}" for x in self.backends.values() if x.status == "error"]
        if errors:
            raise RuntimeError("no aarch64 backend produced outputs: " + "; ".join(errors))
        return []

    @property
    def latency(self) -> dict | None:
        """Emulated inference times of that backend: median/p10/p90 (ms) and repeats."""
        b = self._primary()
        if b is None or not b.run_ms_all:
            return None
        t = np.asarray(b.run_ms_all, dtype=np.float64)
        return {"median_ms": float(np.median(t)), "p10_ms": float(np.percentile(t, 10)),
                "p90_ms": float(np.percentile(t, 90)), "repeats": int(t.size)}

    @property
    def skipped(self) -> str | None:
        """Why nothing ran (every backend skipped/unsupported), else None."""
        if self.backends and all(b.status in _NEUTRAL for b in self.backends.values()):
            return "; ".join(f"{b.backend}: {b.message}" for b in self.backends.values())
        return None

    def raise_for_status(self) -> ArmVerifyResult:
        if not self.ok:
            raise AssertionError("aarch64 verification failed:\n" + format_table(self))
        return self

    def to_dict(self) -> dict:
        """JSON-friendly summary (without the output arrays)."""
        d = asdict(self)
        for b in d["backends"].values():
            b.pop("outputs", None)
        return d


# ----------------------------------------------------------------------------------------------
# model / inputs


def _is_torch_module(obj) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(obj, torch.nn.Module)


def _to_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, order="C")


def _graph_inputs(model) -> list:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


_NP_OF_ONNX = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 9: np.bool_,
               10: np.float16, 11: np.float64}


def _random_inputs(model, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for vi in _graph_inputs(model):
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tt.shape.dim]
        dt = _NP_OF_ONNX.get(tt.elem_type)
        if dt is None:
            raise TypeError(f"input {vi.name!r}: unsupported element type {tt.elem_type}; pass inputs=")
        if np.issubdtype(dt, np.floating):
            out.append(rng.standard_normal(shape).astype(dt))
        elif dt is np.bool_:
            out.append(rng.random(shape) < 0.5)
        else:
            out.append(np.zeros(shape, dtype=dt))
    return out


def _normalize_inputs(inputs, names: list[str]) -> list[np.ndarray] | None:
    if inputs is None:
        return None
    if isinstance(inputs, dict):
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ValueError(f"inputs lacks {missing} (model inputs: {names})")
        return [_to_numpy(inputs[n]) for n in names]
    if isinstance(inputs, (list, tuple)):
        arrs = [_to_numpy(a) for a in inputs]
    else:
        arrs = [_to_numpy(inputs)]
    if names and len(arrs) != len(names):
        raise ValueError(f"the model has {len(names)} inputs {names}, got {len(arrs)} arrays")
    return arrs


def _export_torch(module, inputs, path: Path):
    try:
        from edgeconv import export_onnx
    except (ImportError, AttributeError) as e:  # exporters/onnx not available
        raise ImportError(f"verify_arm on a torch module needs edgeconv.export_onnx ({e}); "
                          "pass an ONNX model instead") from e
    if inputs is None:
        raise ValueError("verify_arm(torch module) needs example inputs: inputs=(x, ...)")
    import torch

    args = tuple(torch.as_tensor(_to_numpy(a)) for a in (inputs if isinstance(inputs, (list, tuple)) else [inputs]))
    module = module.eval()
    res = export_onnx(module, args, str(path))
    import onnx

    if isinstance(res, onnx.ModelProto):
        if not path.is_file():
            onnx.save(res, str(path))
        return res
    return onnx.load(str(path))


def _uses_domain(model, domain: str) -> bool:
    nodes = list(model.graph.node)
    for f in model.functions:
        nodes += list(f.node)
    stack = list(nodes)
    while stack:
        n = stack.pop()
        if n.domain == domain:
            return True
        for a in n.attribute:
            if a.g is not None:
                stack += list(a.g.node)
            for g in a.graphs:
                stack += list(g.node)
    return False


# ----------------------------------------------------------------------------------------------
# reference and comparison


def _x86_reference(onnx_path: Path, inputs, names, uses_custom: bool):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if uses_custom:
        from edgeconv._library import get_library_path

        so.register_custom_ops_library(get_library_path())
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    outs = sess.run(None, dict(zip(names, inputs)))
    return [np.asarray(o) for o in outs], f"onnxruntime {ort.__version__} ({platform.machine()})"


def _fill(br: BackendResult, run, refs, rtol):
    br.wall_s = run.wall_s
    br.load_ms = run.load_ms
    br.run_ms = float(np.median(run.run_ms)) if run.run_ms else None
    br.run_ms_all = list(run.run_ms)
    br.outputs = list(run.outputs)
    br.output_shapes = [list(o.shape) for o in run.outputs]
    if refs is None:
        br.status = "ran"
        br.message = "no reference to compare with"
        return
    p = parity(refs, run.outputs, rtol)
    br.max_abs_err, br.max_rel_err = p.get("max_abs", float("inf")), p.get("rel", float("inf"))
    br.status = "ok" if p["ok"] else "mismatch"
    if br.status == "mismatch":
        br.message = p.get("error") or f"max rel err {br.max_rel_err:.3g} > rtol {rtol:g}"


class _Unsupported(Exception):
    pass


def _compile_tvm_arm(onnx_path: Path, names, inputs, out: Path, commands: list[str]) -> str:
    """Compile for arm64 (compile_tvm lowers edgeconv ops through their standard-op form);
    returns a description of the flow used; raises _Unsupported for ops TVM cannot import."""
    try:
        return _compile_tvm_arm_once(onnx_path, names, inputs, out, commands)
    except Exception as e:  # noqa: BLE001
        if type(e).__name__ != "OpNotImplemented":
            raise
        raise _Unsupported(f"{type(e).__name__}: {e}") from e


def _compile_tvm_arm_once(onnx_path: Path, names, inputs, out: Path, commands: list[str]) -> str:
    shapes = {n: list(a.shape) for n, a in zip(names, inputs)}
    try:
        from edgeconv.exporters.tvm import compile_tvm
    except ImportError as e:
        compile_tvm = None
        why = str(e)
    if compile_tvm is not None:
        commands.append(f"# python: edgeconv.exporters.tvm.compile_tvm({str(onnx_path)!r}, target='arm64', "
                        f"output={str(out)!r}, input_shapes={shapes!r})")
        compile_tvm(str(onnx_path), target="arm64", output=str(out), input_shapes=shapes)
        return "edgeconv pipeline"
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    commands.append(f"# python: stock TVM flow (edgeconv.exporters.tvm unavailable: {why}): from_onnx + "
                    "tvm.compile(target=aarch64 NEON) + export_library(cross_compiler aarch64-linux-gnu-g++)")
    mod = from_onnx(onnx.load(str(onnx_path)), shape_dict=shapes, keep_params_in_input=False)
    mod = relax.transform.DecomposeOpsForInference()(mod)
    target = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72",
                                "mattr": ["+neon"]})
    ex = tvm.compile(mod, target=target)
    ex.export_library(str(out), fcompile=tvm.support.cc.cross_compiler("aarch64-linux-gnu-g++"))
    return "stock TVM"


# ----------------------------------------------------------------------------------------------


def _is_shared_library(obj) -> bool:
    if not isinstance(obj, (str, os.PathLike)):
        return False
    p = Path(obj)
    if p.suffix != ".so" and ".so." not in p.name:
        return False
    with open(p, "rb") as f:
        return f.read(4) == b"\x7fELF"


def verify_arm(model_or_onnx_path, inputs=None, *, tvm: bool = True, ort: bool = True, workdir=None,
               rtol: float = 1e-4, threads: int = 1, repeat: int = 1, seed: int = 0,
               reference=None, timeout: float = 900.0) -> ArmVerifyResult:
    """Build what is needed, run the aarch64 backends under ``qemu-aarch64`` and compare them with
    onnxruntime on the host.

    model_or_onnx_path: ``onnx.ModelProto``, path to an ``.onnx`` file, a ``torch.nn.Module``
        (exported with ``edgeconv.export_onnx``; then ``inputs`` are required example inputs), or
        the path of an already compiled TVM arm64 library (``.so``): then only the TVM runner runs,
        ``inputs`` are required, and it is compared with ``reference`` when given.
    inputs: None (random normal float inputs from the graph's input shapes, symbolic dims = 1,
        ``seed``), one array, a sequence in graph-input order, or a dict name -> array.
    tvm / ort: which aarch64 backends to run. workdir: where models, inputs, outputs and the TVM
        library go (default: a new temporary directory, kept for inspection).
    threads / repeat: runner threads and inference repetitions (timings: median).
    reference: expected outputs (an array or a list, one per output); default: computed with
        onnxruntime on the host (with ``edgeconv.get_library_path()`` for ``edgeconv`` ops).

    Raises :class:`~edgeconv.arm.toolchain.ArmToolError` when a host tool is missing (naming
    the Debian package). Per-backend build/run failures are recorded in the result
    (``status == "error"``); check ``result.ok`` or call ``result.raise_for_status()``. The
    result also has ``outputs`` / ``latency`` (of the first backend that ran) and ``skipped``.
    """
    t_start = time.perf_counter()
    find_tools()  # fail early, with the Debian package names
    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="edgeconv-arm-"))
    workdir.mkdir(parents=True, exist_ok=True)
    commands: list[str] = []
    refs = None
    if reference is not None:
        refs = [_to_numpy(r) for r in (reference if isinstance(reference, (list, tuple)) else [reference])]

    if _is_shared_library(model_or_onnx_path):
        return _verify_prebuilt_tvm(Path(model_or_onnx_path).resolve(), inputs, refs, workdir, commands,
                                    rtol=rtol, threads=threads, repeat=repeat, timeout=timeout, t_start=t_start)

    import onnx

    if _is_torch_module(model_or_onnx_path):
        onnx_path = workdir / "model.onnx"
        model = _export_torch(model_or_onnx_path, inputs, onnx_path)
        label = type(model_or_onnx_path).__name__
    elif isinstance(model_or_onnx_path, onnx.ModelProto):
        model = model_or_onnx_path
        onnx_path = workdir / "model.onnx"
        onnx.save(model, str(onnx_path))
        label = model.graph.name or "ModelProto"
    elif isinstance(model_or_onnx_path, (str, os.PathLike)):
        onnx_path = Path(model_or_onnx_path).resolve()
        model = onnx.load(str(onnx_path), load_external_data=False)
        label = str(model_or_onnx_path)
    else:
        raise TypeError(f"expected an onnx.ModelProto, a path to .onnx, a TVM arm64 .so or a torch.nn.Module, "
                        f"got {type(model_or_onnx_path).__name__}")

    names = [vi.name for vi in _graph_inputs(model)]
    arrs = _normalize_inputs(inputs, names)
    if arrs is None:
        arrs = _random_inputs(model, seed)
    uses_custom = _uses_domain(model, DOMAIN)
    if refs is None:
        refs, ref_desc = _x86_reference(onnx_path, arrs, names, uses_custom)
    else:
        ref_desc = "given reference"

    backends: dict[str, BackendResult] = {}
    if ort:
        backends["ort"] = BackendResult("ort")
    if tvm:
        backends["tvm"] = BackendResult("tvm")
    runners = None
    runner_build_s = 0.0
    if backends:
        t0 = time.perf_counter()
        runners = build_runners(commands=commands)
        runner_build_s = time.perf_counter() - t0

    if ort:
        br = backends["ort"]
        try:
            t0 = time.perf_counter()
            libs = [build_kernels(commands=commands)] if uses_custom else []
            br.build_s = time.perf_counter() - t0 + runner_build_s
            run = run_ort(onnx_path, arrs, workdir, custom_op_libs=libs, threads=threads, repeat=repeat,
                          runners=runners, commands=commands, timeout=timeout)
            _fill(br, run, refs, rtol)
            if uses_custom:
                br.message = (br.message + "; " if br.message else "") + "aarch64 libedgeconv_ort"
        except (RuntimeError, ValueError, OSError, ArmToolError, subprocess.TimeoutExpired) as e:
            br.status, br.message = "error", str(e)

    if tvm:
        br = backends["tvm"]
        try:
            import tvm as _tvm  # noqa: F401
        except ImportError:
            br.status, br.message = "skipped", "TVM is not installed (pip install apache-tvm)"
        else:
            lib = workdir / "model_arm64.so"
            try:
                t0 = time.perf_counter()
                flow = _compile_tvm_arm(onnx_path, names, arrs, lib, commands)
                br.build_s = time.perf_counter() - t0
                run = run_tvm(lib, arrs, workdir, threads=threads, repeat=repeat, runners=runners,
                              commands=commands, timeout=timeout)
                _fill(br, run, refs, rtol)
                br.message = (br.message + "; " if br.message else "") + flow
            except _Unsupported as e:
                br.status, br.message = "unsupported", f"TVM cannot import this model: {e}"
            except Exception as e:  # noqa: BLE001 - TVM raises many types (TVMError, ValueError...)
                br.status, br.message = "error", f"{type(e).__name__}: {e}"

    return ArmVerifyResult(model=label, input_shapes=[list(a.shape) for a in arrs], reference=ref_desc,
                           rtol=rtol, backends=backends, commands=commands, workdir=str(workdir),
                           total_s=time.perf_counter() - t_start)


def _verify_prebuilt_tvm(lib: Path, inputs, refs, workdir: Path, commands: list[str], *, rtol, threads,
                         repeat, timeout, t_start) -> ArmVerifyResult:
    if inputs is None:
        raise ValueError("verify_arm on a compiled TVM library needs inputs= (in main's parameter order)")
    if isinstance(inputs, dict):
        raise TypeError("a compiled TVM library has no input names: pass inputs as a sequence")
    arrs = _normalize_inputs(inputs, [])
    br = BackendResult("tvm")
    try:
        run = run_tvm(lib, arrs, workdir, threads=threads, repeat=repeat, commands=commands, timeout=timeout)
        _fill(br, run, refs, rtol)
        br.message = (br.message + "; " if br.message else "") + "prebuilt library"
    except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired) as e:
        br.status, br.message = "error", str(e)
    return ArmVerifyResult(model=str(lib), input_shapes=[list(a.shape) for a in arrs],
                           reference="given reference" if refs is not None else "none", rtol=rtol,
                           backends={"tvm": br}, commands=commands, workdir=str(workdir),
                           total_s=time.perf_counter() - t_start)


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def format_table(result: ArmVerifyResult, *, commands: bool = False) -> str:
    """A plain-text table of ``result`` (one row per backend); ``commands=True`` appends them."""
    head = ["backend", "status", "max abs err", "max rel err", "qemu wall s", "load ms", "run ms",
            "build s", "note"]
    rows = []
    for b in result.backends.values():
        note = b.message.splitlines()[0] if b.message else ""
        if len(note) > 90:
            note = note[:87] + "..."
        rows.append([f"aarch64 {b.backend}", b.status, _fmt(b.max_abs_err, ".3g"), _fmt(b.max_rel_err, ".3g"),
                     _fmt(b.wall_s, ".2f"), _fmt(b.load_ms, ".0f"), _fmt(b.run_ms, ".1f"),
                     _fmt(b.build_s, ".1f"), note])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [f"model: {result.model}   inputs: {result.input_shapes}   reference: {result.reference}   "
           f"rtol: {result.rtol:g}",
           line(head), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    out.append(f"{'OK' if result.ok else 'FAILED'}  (total {result.total_s:.1f} s, workdir {result.workdir})")
    if commands:
        out.append("commands:")
        out += [f"  {c}" for c in result.commands]
    return "\n".join(out)
