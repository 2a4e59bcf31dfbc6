"""The stages of ``edgeconv deploy`` (and ``edgeconv bench model``): one table, :data:`TABLE`.

Each :class:`Stage` names the deploy target that selects it, the stages whose results it needs,
a probe for its optional dependency and the function that runs it on the typed :class:`Context`
(which carries what earlier stages produced: reference outputs, the ONNX file, libraries).
Adding a backend is one entry in :data:`TABLE`; targets, default targets, latency labels and
the ``bench model`` backends are all read from it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeconv._quiet import Captured, captured_fd2

from .measure import kind_latency_torch, one_line, parity, summarize_ms, time_callable, to_numpy_list

__all__ = [
    "DeployConfig", "StageResult", "Context", "Stage", "StageSkipped", "TABLE", "RPC", "DEPLOY_TARGETS",
    "DEFAULT_TARGETS", "BACKEND_LABELS", "BENCH_BACKENDS", "tvm_missing", "library_missing", "arm_missing",
    "make_ort_session", "export_model", "ort_run", "call_arm", "with_probe", "openvino_missing",
    "has_no_edgeconv_ops", "DEVICES",
]


@dataclass
class DeployConfig:
    """Inputs of :func:`edgeconv.deploy.run_deploy` (the CLI fills it from its arguments)."""

    model: Any
    model_name: str
    input_shape: Tuple[int, ...]
    outdir: Path
    targets: Optional[List[str]] = None  # None = DEFAULT_TARGETS, not named explicitly
    repeats: int = 20
    warmup: int = 3
    threads: Tuple[int, ...] = (1,)  # every latency is measured at each of these thread counts
    tol: float = 1e-4
    rpc: Optional[Dict[str, Any]] = None
    rpc_target: str = "arm64"
    opset: Optional[int] = None
    quiet: bool = False
    tune_trials: int = 0
    seed: int = 0
    onnx_model: Optional[Path] = None  # deploy this .onnx file (``model`` is then None)

    def __post_init__(self) -> None:
        self.threads = (int(self.threads),) if isinstance(self.threads, int) else tuple(int(t) for t in self.threads)
        if not self.threads or min(self.threads) < 1:
            raise ValueError(f"threads must be positive thread counts, got {self.threads!r}")


@dataclass
class StageResult:
    """One pipeline stage: ``status`` is ``passed``, ``failed`` or ``skipped``."""

    name: str
    status: str = "pending"
    reason: str = ""
    legit: bool = False  # for skipped stages: does the skip keep the exit code 0?
    seconds: Optional[float] = None
    parity: Optional[Dict[str, Any]] = None
    latency: Optional[Dict[str, Any]] = None
    artifacts: List[str] = field(default_factory=list)
    info: Dict[str, Any] = field(default_factory=dict)
    by_threads: Dict[int, Dict[str, Any]] = field(default_factory=dict)  # thread count -> latency summary
    memory: Dict[int, Dict[str, float]] = field(default_factory=dict)  # thread count -> peak RSS (MB)
    kernels: Optional[Dict[str, Any]] = None  # the runtime's per-kernel profile

    @property
    def ok(self) -> bool:
        return self.status == "passed" or (self.status == "skipped" and self.legit)


@dataclass
class Context:
    """What the stages share: the configuration, the seeded input and what earlier stages made."""

    cfg: DeployConfig
    model: Any  # None for an ONNX file
    x: Any  # the torch input (None for an ONNX file)
    outdir: Path
    inputs: List[np.ndarray] = field(default_factory=list)  # every graph input, in order
    ref: Optional[List[np.ndarray]] = None  # reference outputs (stage "torch" or "reference")
    onnx: Optional[Path] = None  # the ONNX model the backends run (stage "export" or "optimize")
    input_names: List[str] = field(default_factory=list)
    libs: Dict[str, Path] = field(default_factory=dict)  # TVM target -> compiled library
    profile: Any = None
    kinds: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    kind_latency_ms: Dict[str, float] = field(default_factory=dict)
    omitted: Dict[str, str] = field(default_factory=dict)  # selected stage -> why it was not run

    @property
    def inputs_npz(self) -> Path:
        """The inputs as ``inputs.npz`` (``input_0``, ``input_1``, ...) for the timing workers."""
        path = self.outdir / "inputs.npz"
        if not path.exists():
            np.savez(path, **{f"input_{i}": a for i, a in enumerate(self.inputs)})
        return path

    def input_shapes(self) -> Optional[Dict[str, List[int]]]:
        return {n: list(a.shape) for n, a in zip(self.input_names, self.inputs)} if self.input_names else None

    def feeds(self, names: Sequence[str]) -> Dict[str, np.ndarray]:
        """The inputs by graph-input name (``names`` in graph order, e.g. a session's inputs)."""
        return dict(zip(names, self.inputs))


class StageSkipped(Exception):
    """Raised by a stage that finds at run time that it cannot run here (``legit``: exit code 0)."""

    def __init__(self, reason: str, legit: bool) -> None:
        super().__init__(reason)
        self.reason, self.legit = reason, legit


#: what a failed probe means: skipped (exit 0) unless the target was named; always skipped; failed
SKIP_IF_DEFAULT, SKIP, FAIL = "skip-if-default", "skip", "fail"
#: ``Stage.target`` of stages selected by ``--rpc`` rather than by ``--targets``
RPC = "rpc"


@dataclass(frozen=True)
class Stage:
    """One row of :data:`TABLE`.

    ``target``: the deploy target that selects the stage (``None``: always runs; :data:`RPC`: runs
    with ``--rpc``); ``source``: the model it needs (``"torch"``: a PyTorch model, ``"onnx"``: an
    ONNX file, ``None``: either); ``needs``: stages that must have passed (a need that is not
    selected, the other source's stage, is ignored); ``probe()``: ``None`` or why the
    stage's optional dependency is missing (``missing`` says what that means); ``run(ctx, st)``
    fills ``st`` (``parity``, ``latency``, ``artifacts``, ``info``) and raises on failure.
    """

    name: str
    target: Optional[str]
    needs: Tuple[str, ...]
    probe: Optional[Callable[[], Optional[str]]]
    run: Callable[[Context, StageResult], None]
    missing: str = SKIP_IF_DEFAULT
    label: Optional[str] = None  # backend label in the latency table and plot
    default: bool = True  # part of the default target list
    bench: Optional[str] = None  # its name as an ``edgeconv bench model`` backend
    source: Optional[str] = None  # "torch", "onnx" or None (both)
    #: where its latency is a deployment candidate for the recommendation ("host", "rpc"; None: not one)
    device: Optional[str] = None
    #: ``applies(ctx)``: None, or why this selected stage would repeat another one and is not run
    applies: Optional[Callable[[Context], Optional[str]]] = None


# ------------------------------------------------------------------------------------------
# probes (None = available)
# ------------------------------------------------------------------------------------------


def tvm_missing() -> Optional[str]:
    try:
        importlib.import_module("tvm")
    except Exception as exc:  # ImportError, or a broken install raising something else
        return f"TVM not available ({one_line(exc)})"
    return None


def library_missing() -> Optional[str]:
    from edgeconv._library import get_library_path

    try:
        get_library_path()
    except Exception as exc:
        return f"edgeconv kernel library not built ({one_line(exc)})"
    return None


def arm_missing(arm=None) -> Optional[str]:
    """Why the emulated aarch64 runs cannot run here (no qemu-user or cross toolchain)."""
    if arm is None:
        arm = importlib.import_module("edgeconv.arm")
    ok, why = arm.tools_available()
    return None if ok else f"aarch64 tools missing: {why}"


def with_probe(stages: Sequence[Stage], probe: Callable[[], Optional[str]],
               replacement: Callable[[], Optional[str]]) -> List[Stage]:
    """``stages`` with every use of ``probe`` replaced (tests: pretend a tool is missing)."""
    from dataclasses import replace

    return [replace(s, probe=replacement) if s.probe is probe else s for s in stages]


# ------------------------------------------------------------------------------------------
# backend wrappers (also used by the CLI)
# ------------------------------------------------------------------------------------------


def make_ort_session(path, use_library: bool = True, threads: Optional[int] = None,
                     profile_prefix: Optional[str] = None):
    """onnxruntime session for ``path`` (or an ``onnx.ModelProto``) via :func:`edgeconv.ort_session`,
    with (``use_library``: required, ``FileNotFoundError`` if it is not built) or without the
    edgeconv kernel library (custom ops then run their model-local fallback functions);
    ``profile_prefix``: with onnxruntime's profiler on."""
    from edgeconv.exporters.onnx import ort_session

    model = path if hasattr(path, "SerializeToString") else str(path)
    return ort_session(model, threads=threads, custom_ops="require" if use_library else False,
                       profile_prefix=profile_prefix)


def export_model(model, input_shape: Sequence[int], path, *, opset: Optional[int] = None,
                 deform: Optional[str] = None, fallback: Optional[str] = None, example=None, **options: Any):
    """:func:`edgeconv.export_onnx` on a seeded random input of ``input_shape`` (dynamic batch);
    ``fallback`` is the exporter's ``deform_fallback``; ``options`` go to ``export_onnx`` as they
    are (``input_names``, ...). Returns the ``ModelProto``."""
    import torch

    from edgeconv.exporters.onnx import export_onnx

    if example is None:
        gen = torch.Generator().manual_seed(0)
        example = torch.randn(tuple(input_shape), generator=gen)
    kwargs: Dict[str, Any] = {}
    if opset is not None:
        kwargs["opset"] = opset
    if deform is not None:
        kwargs["deform"] = deform
    if fallback is not None:
        kwargs["deform_fallback"] = fallback
    kwargs.update(options)
    return export_onnx(model, (example,), str(path), **kwargs)


def _note_log(st: StageResult, text: str) -> None:
    """Keep captured compiler stderr (``-q``) in the stage info (report.json), deduplicated."""
    lines = [l for l in text.splitlines() if l.strip()]
    if lines:
        uniq = list(dict.fromkeys(l.split("] ", 1)[-1] for l in lines))
        st.info.setdefault("compiler_log", []).extend(uniq[:20])


def _tvm_compile(ctx: Context, st: StageResult, target: str, lib: Path, tune_trials: int = 0):
    """compile_tvm on model.onnx (its edgeconv ops are compiled from their standard-op form)."""
    from edgeconv.exporters.tvm import compile_tvm

    # -q: compiler output on fd 2 (TVM's C++ LOG lines) and Python's go to the report instead
    with captured_fd2(python_stderr_passes=False) if ctx.cfg.quiet else contextlib.nullcontext(Captured()) as cap:
        cm = compile_tvm(str(ctx.onnx), target=target, output=str(lib), tune_trials=tune_trials,
                         input_shapes=ctx.input_shapes(), work_dir=str(ctx.outdir / "tvm-tuning"))
    _note_log(st, cap.text)
    return cm


# ------------------------------------------------------------------------------------------
# stage functions
# ------------------------------------------------------------------------------------------


def _torch(ctx: Context, st: StageResult) -> None:
    """Reference outputs; eager latency at each thread count (in this process: torch's intra-op
    pool can be resized at any time)."""
    import torch

    torch.set_num_threads(ctx.cfg.threads[0])
    with torch.no_grad():
        ctx.ref = to_numpy_list(ctx.model(ctx.x))
    np.save(ctx.outdir / "torch_output.npy", ctx.ref[0])
    st.artifacts += ["input.npy", "torch_output.npy"]
    with torch.no_grad():
        for n in ctx.cfg.threads:
            torch.set_num_threads(n)
            st.by_threads[n] = time_callable(lambda: ctx.model(ctx.x), ctx.cfg.repeats, ctx.cfg.warmup)
    st.latency = st.by_threads[ctx.cfg.threads[0]]
    st.info["output_shapes"] = [list(r.shape) for r in ctx.ref]


def _reference(ctx: Context, st: StageResult) -> None:
    """The ONNX file on stock onnxruntime; if it cannot run there (custom ops of another library),
    its optimized form's fallback functions (standard operators)."""
    from edgeconv.exporters.onnx import optimize_onnx

    cfg = ctx.cfg
    try:
        sess = make_ort_session(cfg.onnx_model, use_library=False, threads=cfg.threads[0])
        st.info["reference"] = "the file as given, on stock onnxruntime"
    except Exception as exc:
        sess = make_ort_session(optimize_onnx(cfg.onnx_model), use_library=False, threads=cfg.threads[0])
        st.info["reference"] = "its optimized form's fallback functions on stock onnxruntime"
        st.info["note"] = (f"stock onnxruntime cannot run the file ({one_line(exc)[:120]}): reference = "
                           "optimize_onnx's fallback functions, so ort-nolib matches it by construction")
    feeds = ctx.feeds([i.name for i in sess.get_inputs()])
    ctx.ref = to_numpy_list(sess.run(None, feeds))
    np.save(ctx.outdir / "reference_output.npy", ctx.ref[0])
    st.artifacts += ["input.npy", "reference_output.npy"]
    st.latency = time_callable(lambda: sess.run(None, feeds), cfg.repeats, cfg.warmup)
    st.info["output_shapes"] = [list(r.shape) for r in ctx.ref]


def _profile(ctx: Context, st: StageResult) -> None:
    import torch

    from edgeconv.analysis import kind_summary, profile

    prof = profile(ctx.model, ctx.cfg.input_shape)
    ctx.profile, ctx.kinds = prof, kind_summary(prof)
    st.info.update(total_params=prof.total_params, total_macs=prof.total_macs, layers=len(prof.rows))
    torch.set_num_threads(ctx.cfg.threads[0])
    ctx.kind_latency_ms = kind_latency_torch(ctx.model, ctx.x, prof, repeats=max(3, ctx.cfg.repeats // 2))


def _export(ctx: Context, st: StageResult) -> None:
    path = ctx.outdir / "model.onnx"
    export_model(ctx.model, ctx.cfg.input_shape, path, opset=ctx.cfg.opset, example=ctx.x)
    _describe_onnx(ctx, st, path)


def _optimize(ctx: Context, st: StageResult) -> None:
    """:func:`edgeconv.optimize_onnx` on the file -> ``model.onnx`` (what the backends run)."""
    from edgeconv.exporters.onnx import optimize_onnx

    path = ctx.outdir / "model.onnx"
    rewrites: List[Any] = []
    optimize_onnx(ctx.cfg.onnx_model, path, report=rewrites)
    st.info["rewrites"] = [str(r) for r in rewrites]
    st.info["note"] = f"optimize_onnx rewrote {len(rewrites)} node(s)"
    _describe_onnx(ctx, st, path)


def _describe_onnx(ctx: Context, st: StageResult, path: Path) -> None:
    """``path`` becomes the model of the backends; its opsets, node count, ops and inputs."""
    import onnx

    ctx.onnx = path
    st.artifacts.append(path.name)
    m = onnx.load(str(path), load_external_data=False)
    st.info["opset"] = {o.domain or "ai.onnx": o.version for o in m.opset_import}
    st.info["nodes"] = len(m.graph.node)
    st.info["ops"] = sorted({(n.domain + "::" if n.domain else "") + n.op_type for n in m.graph.node})
    ctx.input_names = [i.name for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}]


def _onnx_check(ctx: Context, st: StageResult) -> None:
    import onnx

    import edgeconv.exporters.onnx  # noqa: F401  (registers the edgeconv op schemas)

    onnx.checker.check_model(str(ctx.onnx), full_check=True)
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(ctx.onnx)), check_type=True, strict_mode=True)
    st.info["output_shapes"] = [
        [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in o.type.tensor_type.shape.dim]
        for o in inferred.graph.output
    ]


def _time_deployed(ctx: Context, st: StageResult, kind: str, artifact: Path, profile: bool = True) -> None:
    """After parity passed: the runtime's per-kernel profile (``profile``, in this process at the
    first thread count), then latency and peak memory at every thread count, each in a fresh
    process (:func:`edgeconv.deploy.backends.time_in_fresh_process`)."""
    from .backends import kernel_profile, time_in_fresh_process

    cfg = ctx.cfg
    if profile:
        st.kernels = kernel_profile(kind, artifact, ctx.inputs, cfg.threads[0], max(3, cfg.repeats // 2), ctx.outdir)
    for n in cfg.threads:
        res = time_in_fresh_process(kind, artifact, ctx.inputs_npz, n, cfg.repeats, cfg.warmup)
        st.by_threads[n] = summarize_ms(res["samples_ms"])
        st.memory[n] = {"peak_rss_mb": res["rss_peak_kb"] / 1024,
                        "increase_mb": (res["rss_peak_kb"] - res["rss_before_load_kb"]) / 1024}
    st.latency = st.by_threads[cfg.threads[0]]
    st.info["threads"] = list(cfg.threads)


def ort_run(use_library: bool, session: Callable[..., Any] = make_ort_session) -> Callable[[Context, StageResult], None]:
    """The onnxruntime stage with or without the kernel library; ``session`` builds the session
    of the parity check (tests inject broken ones); latency: :func:`_time_deployed`."""

    def run(ctx: Context, st: StageResult) -> None:
        sess = session(ctx.onnx, use_library=use_library, threads=ctx.cfg.threads[0])
        feeds = ctx.feeds([i.name for i in sess.get_inputs()])
        st.parity = parity(ctx.ref, sess.run(None, feeds), ctx.cfg.tol)
        if st.parity["ok"]:
            _time_deployed(ctx, st, "ort" if use_library else "ort-nolib", ctx.onnx)

    return run


def has_no_edgeconv_ops(ctx: Context) -> Optional[str]:
    """``ort-nolib``'s condition: without edgeconv ops onnxruntime runs the same graph with or
    without the kernel library, so the row would repeat ``ort``."""
    import onnx

    from edgeconv.opdefs import DOMAIN

    if ctx.onnx is None:
        return None  # the export failed: the stage reports its upstream failure
    model = onnx.load(str(ctx.onnx), load_external_data=False)
    if any(n.domain == DOMAIN for n in model.graph.node):
        return None
    return ("the model has no edgeconv ops: onnxruntime without the kernel library runs the same graph "
            "as 'ort', so the row would repeat it")


def _tvm_x86(ctx: Context, st: StageResult) -> None:
    """Compile for the host -> ``model_x86.so``; parity and timing on that library as deployed."""
    from .backends import open_backend

    lib = ctx.outdir / "model_x86.so"
    t0 = time.perf_counter()
    _tvm_compile(ctx, st, "x86", lib, ctx.cfg.tune_trials)
    st.info["compile_s"] = time.perf_counter() - t0
    st.artifacts.append(lib.name)
    ctx.libs["x86"] = lib
    st.parity = parity(ctx.ref, open_backend("tvm", lib, ctx.cfg.threads[0])(ctx.inputs), ctx.cfg.tol)
    if st.parity["ok"]:
        _time_deployed(ctx, st, "tvm", lib)


def openvino_missing() -> Optional[str]:
    try:
        importlib.import_module("openvino")
    except Exception as exc:
        return f"OpenVINO not available ({one_line(exc)})"
    return None


def _openvino(ctx: Context, st: StageResult) -> None:
    """OpenVINO CPU on the ONNX model. OpenVINO converts neither the edgeconv domain nor model-local
    functions, so a model with edgeconv ops is given its fallback functions inlined
    (``onnx.inliner``); when OpenVINO cannot convert those either (the standard ``DeformConv``
    fallback: OpenVINO has no ONNX ``DeformConv`` rule), their decomposed form
    (:func:`edgeconv.exporters.onnx.standard_op_model`, what TVM compiles). -> ``model_openvino.onnx``."""
    import onnx
    import onnx.inliner

    from edgeconv.exporters.onnx import standard_op_model
    from edgeconv.opdefs import DOMAIN

    from .backends import open_backend

    model = onnx.load(str(ctx.onnx))
    path, run = ctx.onnx, None
    if any(n.domain == DOMAIN for n in model.graph.node):
        path = ctx.outdir / "model_openvino.onnx"
        onnx.save(onnx.inliner.inline_local_functions(model), str(path))
        try:
            run = open_backend("openvino", path, ctx.cfg.threads[0])
            st.info["note"] = "runs the file's fallback functions, inlined (model_openvino.onnx)"
        except RuntimeError as exc:  # OpenVINO's message: a location line, then the summary
            why = next((l.strip(" -") for l in str(exc).splitlines() if "No conversion rule" in l), one_line(exc))
            onnx.save(standard_op_model(model, ctx.input_shapes()), str(path))
            st.info["note"] = (f"OpenVINO cannot convert the inlined fallback functions ({why}): runs their "
                               "decomposed standard-op form (model_openvino.onnx)")
        st.artifacts.append(path.name)
    run = run or open_backend("openvino", path, ctx.cfg.threads[0])
    st.parity = parity(ctx.ref, run(ctx.inputs), ctx.cfg.tol)
    if st.parity["ok"]:
        _time_deployed(ctx, st, "openvino", path, profile=False)


def _tvm_arm64(ctx: Context, st: StageResult) -> None:
    lib = ctx.outdir / "model_arm64.so"
    t0 = time.perf_counter()
    _tvm_compile(ctx, st, "arm64", lib)
    st.info["compile_s"] = time.perf_counter() - t0
    st.artifacts.append(lib.name)
    ctx.libs["arm64"] = lib


def call_arm(arm, artifact: Path, backend: str, inputs: List[np.ndarray], ref: List[np.ndarray], cfg: DeployConfig,
             workdir: Path) -> Dict[str, Any]:
    """Run ``backend`` under qemu with the ARM helper's ``edgeconv.arm.verify_arm``: ``"tvm"``
    (``artifact`` = the arm64 TVM library) or ``"ort"`` (``artifact`` = the ONNX model; aarch64
    onnxruntime with the aarch64 build of the edgeconv kernels).

    Returns ``{"outputs": [...], "latency": {...} | None}`` or ``{"skipped": reason}`` when the
    helper reports that a host tool is missing or nothing could run.
    """
    try:
        res = arm.verify_arm(str(artifact), inputs=list(inputs), tvm=backend == "tvm", ort=backend == "ort", workdir=str(workdir),
                             rtol=cfg.tol, threads=cfg.threads[0], repeat=max(1, min(cfg.repeats, 5)),
                             reference=ref)
    except arm.ArmToolError as exc:  # a host tool is missing
        return {"skipped": f"aarch64 tools missing: {exc}"}
    if res.skipped:
        return {"skipped": res.skipped}
    b = res.backends.get(backend)
    if b is not None and not b.ok:
        raise RuntimeError(f"aarch64 {backend} run {b.status}: {b.message}".strip())
    if not res.outputs:
        raise RuntimeError("the aarch64 run produced no outputs")
    info: Dict[str, Any] = {"outputs": res.outputs, "latency": res.latency, "emulated": True}
    if b is not None:
        info["emulation_wall_s"] = b.wall_s
        info["arm_rel_err_vs_reference"] = b.max_rel_err
    return info


def _emulated(backend: str, workdir: str) -> Callable[[Context, StageResult], None]:
    """Run the arm64 TVM library (``"tvm"``) or the ONNX model (``"ort"``) under qemu; parity."""

    def run(ctx: Context, st: StageResult) -> None:
        artifact = ctx.libs["arm64"] if backend == "tvm" else ctx.onnx
        res = call_arm(importlib.import_module("edgeconv.arm"), artifact, backend, ctx.inputs, ctx.ref, ctx.cfg,
                       ctx.outdir / workdir)
        if res.get("skipped"):
            raise StageSkipped(str(res["skipped"]), legit=True)
        st.parity = parity(ctx.ref, res["outputs"], ctx.cfg.tol)
        if res.get("latency"):
            st.latency = res["latency"]
        st.info.update({k: v for k, v in res.items() if k not in ("outputs", "latency")})

    return run


def _tvm_rpc(ctx: Context, st: StageResult) -> None:
    from edgeconv.exporters.tvm.rpc import run_rpc

    cfg = ctx.cfg
    target = cfg.rpc_target
    lib = ctx.libs.get(target)
    if lib is None:
        lib = ctx.outdir / f"model_rpc_{target}.so"
        _tvm_compile(ctx, st, target, lib)
        st.artifacts.append(lib.name)
    res = run_rpc(lib, cfg.rpc, ctx.inputs, repeats=cfg.repeats)
    st.parity = parity(ctx.ref, res["outputs"], cfg.tol)
    st.latency = res["latency"]
    st.info.update(target=target, remote=f"{cfg.rpc['host']}:{cfg.rpc['port']}" + (f"/{cfg.rpc['key']}" if cfg.rpc.get("key") else ""))


# the stages that make the reference outputs / the ONNX model, for a PyTorch model or an ONNX file
_REF, _MODEL = ("torch", "reference"), ("export", "optimize")

#: the stage table: every stage, in pipeline order
TABLE: Tuple[Stage, ...] = (
    Stage("torch", None, (), None, _torch, label="PyTorch eager", bench="torch", source="torch"),
    Stage("reference", None, (), None, _reference, label="onnxruntime (reference)", source="onnx"),
    Stage("profile", None, (), None, _profile, source="torch"),
    Stage("export", None, (), None, _export, source="torch"),
    Stage("optimize", None, (), None, _optimize, source="onnx"),
    Stage("onnx-check", None, _MODEL, None, _onnx_check),
    Stage("ort", "ort", _REF + _MODEL, library_missing, ort_run(True),
          label="onnxruntime + edgeconv kernels", bench="ort", device="host"),
    Stage("ort-nolib", "ort", _REF + _MODEL, None, ort_run(False),
          label="onnxruntime (fallback functions)", bench="ort-nolib", device="host", applies=has_no_edgeconv_ops),
    Stage("tvm-x86", "tvm-x86", _REF + _MODEL, tvm_missing, _tvm_x86, label="TVM x86 (host)", bench="tvm",
          device="host"),
    # opt-in comparison: a runtime edgeconv does not target
    Stage("openvino", "openvino", _REF + _MODEL, openvino_missing, _openvino, label="OpenVINO CPU", default=False,
          device="host"),
    Stage("tvm-arm64", "tvm-arm64", _MODEL, tvm_missing, _tvm_arm64),
    Stage("tvm-arm64-run", "tvm-arm64", _REF + ("tvm-arm64",), arm_missing, _emulated("tvm", "arm"), missing=SKIP,
          label="TVM arm64 (qemu, emulated)"),
    # opt-in: its first use cross-builds the kernels
    Stage("ort-arm64-run", "ort-arm64", _REF + _MODEL, arm_missing, _emulated("ort", "arm-ort"), missing=SKIP,
          label="onnxruntime arm64 + kernels (qemu, emulated)", default=False),
    Stage("tvm-rpc", RPC, _REF + _MODEL, tvm_missing, _tvm_rpc, missing=FAIL, label="TVM via RPC", device="rpc"),
)

#: deploy targets (``--targets``), in pipeline order
DEPLOY_TARGETS = tuple(dict.fromkeys(s.target for s in TABLE if s.target not in (None, RPC)))
#: targets run when none are named
DEFAULT_TARGETS = tuple(dict.fromkeys(s.target for s in TABLE if s.target not in (None, RPC) and s.default))
#: backend label used in the latency table/plot, per stage that measures latency
BACKEND_LABELS = {s.name: s.label for s in TABLE if s.label}
#: ``edgeconv bench model --backends`` name -> stage
BENCH_BACKENDS = {s.bench: s.name for s in TABLE if s.bench}
#: stage -> the device its latency is a deployment candidate on (the recommendation's groups)
DEVICES = {s.name: s.device for s in TABLE if s.device}
