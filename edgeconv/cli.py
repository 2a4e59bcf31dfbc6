"""``edgeconv`` command line: layers, models, profile, export, optimize, run, compile, bench, deploy.

Why argparse: it is in the standard library, so the console script adds no dependency (click or
typer would be one more pinned package in every deployment image for what is a dozen options);
sub-parsers give per-command ``--help`` and usage errors with exit code 2 for free. Output
formatting uses ``rich`` (already a dependency) for tables and progress.

Exit codes (all commands):

* ``0`` success (for ``deploy``: every requested stage passed or was legitimately skipped,
  see :func:`edgeconv.deploy.exit_code`);
* ``1`` the command ran but something failed: a deploy stage failed or lost parity, a benchmark
  backend failed, an export/compile error (one line ``edgeconv: error: <Type>: ...``);
* ``2`` usage error, one line ``edgeconv: error: ...`` on stderr and no traceback (``--debug``
  shows it): unknown command/option, unknown model, bad target, unreadable file, malformed
  ``--input`` shape, an input array of the wrong dtype/shape, an operator the back end cannot
  import or export (``run``, ``compile``, ``export`` alike).

The back ends (torch, onnx, onnxruntime, TVM, matplotlib) are imported inside the commands that
use them, so ``edgeconv --help`` stays fast and a missing optional one (TVM) only affects those
commands. Their known-harmless warnings are filtered at edgeconv's API boundary; ``--verbose``
shows them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from edgeconv.cli_common import (  # shared with edgeconv.bench
    PROG, TARGETS, CLIError, parse_rpc, parse_shape,
    Parser as _Parser, console as _console, fmt_count as _fmt_int,
    non_negative_int as _non_negative_int, positive_float as _positive_float, positive_int as _positive_int,
    print_table as _print_table, rpc_arg as _rpc_arg, shape_arg as _shape_arg, thread_counts as _thread_counts,
)
from edgeconv.bench.__main__ import BENCHMARKS
from edgeconv.deploy.stages import DEPLOY_TARGETS
from edgeconv import __version__
from edgeconv._quiet import VERBOSE_ENV

__all__ = ["main", "build_parser", "CLIError", "parse_shape", "resolve_model", "TARGETS"]

DEPLOY_EXIT_RULE = """\
exit codes:
  0  every stage passed or was legitimately skipped. Legitimate skips: an optional dependency of a
     target that came from the default target list is missing (TVM not installed -> tvm-*, kernel
     library not built -> ort); the emulated arm64 runs when their tools (cross toolchain,
     qemu-user) are unavailable. Targets named with --targets must run: the same conditions
     (but the emulator's) are then failures.
  1  a stage failed: an error, or parity above --tol (max|y - y_torch| / max|y_torch|).
  2  usage error (unknown model, malformed --input, bad target, unreadable file).
"""


def _writable_dir(path, what: str = "output directory") -> Path:
    """Create ``path`` (and parents) if needed; ``CLIError`` if it cannot be written."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot create {what} {str(path)!r}: {exc.strerror or exc}") from None
    if not p.is_dir() or not os.access(p, os.W_OK):
        raise CLIError(f"cannot write to {what} {str(path)!r}")
    return p


def _readable_file(path: str, what: str = "file") -> Path:
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"cannot read {what} {path!r}: no such file")
    if not os.access(p, os.R_OK):
        raise CLIError(f"cannot read {what} {path!r}: permission denied")
    return p


# ------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------


def _load_factory(spec: str) -> Callable[..., Any]:
    """``path/to/file.py:factory`` -> the callable (``CLIError`` if missing/unreadable)."""
    path, _, attr = spec.rpartition(":")
    if not attr.isidentifier():
        raise CLIError(f"malformed model {spec!r}: expected NAME or path/to/file.py:factory")
    file = _readable_file(path, "model file")
    mod_name = f"_edgeconv_user_model_{abs(hash(str(file.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(mod_name, file)
    if module_spec is None or module_spec.loader is None:
        raise CLIError(f"cannot import model file {path!r}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[mod_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # user code: report, do not crash with a traceback
        raise CLIError(f"cannot import model file {path!r}: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise CLIError(f"model file {path!r} has no callable {attr!r}")
    return factory


def _is_file_spec(spec: str) -> bool:
    path, sep, _ = spec.rpartition(":")
    return bool(sep) and (path.endswith(".py") or os.sep in path or "/" in path)


def resolve_model(
    spec: str, input_shape: Optional[Sequence[int]] = None, **kwargs: Any
) -> Tuple[Any, Tuple[int, ...], str]:
    """Build the model named by ``spec`` -> ``(model in eval mode, input shape, display name)``.

    ``spec`` is a registered name (``edgeconv models``) or ``path/to/file.py:factory``. Without
    ``input_shape`` the registered default input is used (``1,3,224,224`` for file models). A
    factory that takes ``input_size`` (GDC models) gets ``input_shape[2:]``.
    """
    if _is_file_spec(spec):
        factory = _load_factory(spec)
        default = (1, 3, 224, 224)
        name = spec
    else:
        import edgeconv.models as zoo

        try:
            entry = zoo.get_entry(spec)
        except KeyError:
            raise CLIError(f"unknown model {spec!r}; known models: {', '.join(zoo.list_models())}") from None
        factory, default, name = entry.factory, entry.default_input, entry.name
    shape = tuple(input_shape) if input_shape else tuple(default)
    try:
        params = inspect.signature(factory).parameters
        takes_size = "input_size" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        takes_size = False
    if takes_size and "input_size" not in kwargs:
        kwargs["input_size"] = tuple(shape[2:])
    try:
        model = factory(**kwargs)
    except Exception as exc:  # user/zoo factory rejected the arguments: a usage error
        raise CLIError(f"cannot build model {spec!r} for input {','.join(map(str, shape))}: "
                       f"{type(exc).__name__}: {exc}") from exc
    import torch

    if not isinstance(model, torch.nn.Module):
        raise CLIError(f"model factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval(), shape, name


# ------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------

def layer_comparison(c: int = 64, n: int = 64, hw: int = 56, k: int = 3) -> List[Dict[str, Any]]:
    """Every conv kind on ``1 x c x hw x hw -> n`` (k x k where applicable) vs a standard conv.

    Numbers come from :func:`edgeconv.analysis.profile` of the layers themselves and the kind
    from :mod:`edgeconv.kinds`; ``expected`` is the seed article's formula for the parameter
    ratio, to compare with the measured one.
    """
    import torch
    from torch import nn

    from edgeconv import layers as L
    from edgeconv.analysis import profile
    from edgeconv.kinds import kind_of

    g, p, kd = 4, 4, 4
    rows_spec = [
        (lambda: nn.Conv2d(c, n, k, padding=k // 2), "N*C*K*K", 1.0),
        (lambda: L.TrueConv2d(c, n, k, padding=k // 2), "same as conv, flipped kernel", 1.0),
        (lambda: L.GroupConv2d(c, n, k, g), f"1/G (G={g})", 1 / g),
        (lambda: L.DepthwiseConv2d(c, k), "1/N (G=C=N)", 1 / n),
        (lambda: L.GlobalDepthwiseConv2d(c, hw), "C*H*W, output 1x1", (c * hw * hw) / (n * c * k * k)),
        (lambda: L.ShuffledGroupConv2d(c, n, k, g), f"1/G (G={g}), shuffle free", 1 / g),
        (lambda: L.DepthwiseSeparableConv2d(c, n, k), "(C*K*K + C*N)/(N*C*K*K) = 1/N + 1/K^2",
         1 / n + 1 / (k * k)),
        (lambda: L.MixConv2d(c, (3, 5, 7)), "depthwise, sum_i C_i*K_i^2 (kernels 3/5/7)",
         sum(ci * ki * ki for ci, ki in zip(L.split_channels(c, 3), (3, 5, 7))) / (n * c * k * k)),
        (lambda: L.DilatedConv2d(c, n, k, dilation=2), "same params, RF 5x5 (d=2)", 1.0),
        (lambda: L.DeformConv2d(c, n, k), "conv + offset conv (2*K*K outputs)",
         1 + (2 * k * k) / n),
        (lambda: L.ModulatedDeformConv2d(c, n, k), "conv + offset + mask convs (3*K*K)",
         1 + (3 * k * k) / n),
        (lambda: L.SpatiallySeparableConv2d(c, n, k), "2K vs K^2: 6 vs 9 multiplies (K=3)",
         2 / k),
        (lambda: L.FlattenedConv2d(c, n, k), "(C*N + 2*N*K)/(N*C*K*K)", (c + 2 * k) / (c * k * k)),
        (lambda: L.HetConv2d(c, n, k, p=p), f"1/P + (1 - 1/P)/K^2 (P={p})", 1 / p + (1 - 1 / p) / (k * k)),
        (lambda: L.DynamicConv2d(c, n, k, num_kernels=kd),
         f"{kd}x kernels + attention; MACs +attention +mixing (paper: ~+4% FLOPs on MobileNet)", float(kd)),
    ]
    shape = (1, c, hw, hw)
    out: List[Dict[str, Any]] = []
    base_params = base_macs = base_weights = None
    for build, claim, expected in rows_spec:
        torch.manual_seed(0)
        layer = build()
        kind = "conv (reference)" if base_params is None else kind_of(layer)
        prof = profile(layer, shape)
        params, macs = prof.total_params, prof.total_macs
        bias = sum(p.numel() for name, p in layer.named_parameters() if name.rsplit(".", 1)[-1] == "bias")
        weights = params - bias
        if base_params is None:
            base_params, base_macs, base_weights = params, macs, weights
        out.append({
            "kind": kind,
            "layer": type(layer).__name__,
            "params": params,
            "macs": macs,
            "params_ratio": params / base_params,
            "weights": weights,
            "weights_ratio": weights / base_weights,
            "macs_ratio": macs / base_macs,
            "expected_params_ratio": expected,
            "claim": claim,
            "output_shape": list(prof.rows[-1].output_shape) if prof.rows else [],
            "bias_params": bias,
        })
    return out


def cmd_layers(args: argparse.Namespace) -> int:
    rows = layer_comparison(args.channels, args.channels, args.size, args.kernel)
    if args.json:
        import json

        print(json.dumps(rows, indent=2))
        return 0
    table = [
        (
            r["kind"], r["layer"], f"{r['params']:,}", f"{r['weights_ratio']:.4f}",
            "-" if r["expected_params_ratio"] is None else f"{r['expected_params_ratio']:.4f}",
            _fmt_int(r["macs"]), f"{r['macs_ratio']:.3f}", "x".join(map(str, r["output_shape"])), r["claim"],
        )
        for r in rows
    ]
    c, s, k = args.channels, args.size, args.kernel
    _print_table(
        f"conv kinds on 1x{c}x{s}x{s} -> {c}, K={k}: measured with edgeconv.analysis.profile "
        "(params incl. bias; weights/std = parameters without biases vs the standard conv, "
        "expected = the article's formula)",
        ("kind", "layer", "params", "weights/std", "expected", "MACs", "MACs/std", "output", "claim"),
        table,
        right=(2, 3, 4, 5, 6),
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    import edgeconv.models as zoo
    from edgeconv.analysis import count_parameters

    rows = []
    for name in zoo.list_models():
        entry = zoo.get_entry(name)
        params = "-"
        if not args.no_params:
            kw = {"input_size": entry.default_input[2:]} if entry.accepts("input_size") else {}
            params = _fmt_int(count_parameters(entry.factory(**kw)))
        rows.append((name, "x".join(map(str, entry.default_input)), params, ", ".join(entry.kinds), entry.description))
    _print_table("edgeconv models", ("name", "default input", "params", "conv kinds", "description"), rows, right=(2,))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from edgeconv.analysis import profile

    if args.backend == "tvm":
        return _profile_tvm(args)
    model, shape, name = resolve_model(args.model, args.input)
    prof = profile(model, shape)
    if args.json:
        import json

        print(json.dumps({"model": name, "input_shape": list(shape), "total_params": prof.total_params,
                          "total_macs": prof.total_macs, "rows": prof.as_dicts()}, indent=2))
        return 0
    rows = [
        (r.name, r.kind, f"{r.params:,}", f"{r.macs:,}", "x".join(map(str, r.output_shape)))
        for r in prof.rows
    ]
    rows.append(("TOTAL", "", f"{prof.total_params:,}", f"{prof.total_macs:,}", ""))
    _print_table(f"{name} on {'x'.join(map(str, shape))}", ("layer", "kind", "params", "MACs", "output"), rows,
                 right=(2, 3))
    from edgeconv.analysis import kind_summary

    krows = [
        (k, v["layers"], f"{v['params']:,}", f"{v['macs']:,}", f"{100 * v['mac_share']:.1f}%")
        for k, v in kind_summary(prof).items()
    ]
    _print_table("per kind", ("kind", "layers", "params", "MACs", "MAC share"), krows, right=(1, 2, 3, 4))
    return 0


def _profile_tvm(args: argparse.Namespace) -> int:
    """Per-kernel time of MODEL compiled by edgeconv's TVM pipeline (the VM's instrumentation)."""
    from edgeconv.bench.models import resolve_bench_model
    from edgeconv.exporters.tvm.profile import format_profile, profile_model

    model, shape, name = resolve_bench_model(args.model, args.input)
    prof = profile_model(model, shape, threads=args.threads, runs=args.runs)
    if args.json:
        import json

        print(json.dumps({"model": name, "input_shape": list(shape), "threads": args.threads, **prof.as_dict()},
                         indent=2))
    else:
        print(f"{name} on {'x'.join(map(str, shape))}, TVM (edgeconv pipeline), {args.threads} thread(s)")
        print(format_profile(prof, top=args.top))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from edgeconv.deploy import export_model

    out = Path(args.output)
    _writable_dir(out.parent if str(out.parent) else ".")
    model, shape, name = resolve_model(args.model, args.input)
    from edgeconv.exporters.onnx import ExportError

    names = {k: v for k, v in (("input_names", args.input_names), ("output_names", args.output_names)) if v}
    try:
        with _status(args, f"exporting {name} ({'x'.join(map(str, shape))}) to {out}"):
            export_model(model, shape, out, opset=args.opset, deform=args.deform, fallback=args.fallback, **names)
    except ExportError as exc:
        if exc.op is None and exc.option is None:
            raise  # a failure of the export itself: exit 1
        raise CLIError(_first_line(exc)) from exc  # a bad option, or the model uses an op we cannot export
    _console().print(f"wrote {out}")
    return 0


def _optimized(path: Path, quiet: bool = False):
    """``path`` as a ``ModelProto`` with its DeformConv / mmcv deformable nodes rewritten by
    :func:`edgeconv.optimize_onnx` (one note per node on stderr), or ``None`` if it has none.
    A node that cannot be mapped is a usage error (exit 2)."""
    import onnx

    from edgeconv.exporters.onnx import OptimizeError, optimize_onnx, rewritable_nodes

    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise CLIError(f"cannot read ONNX model {str(path)!r}: {exc}") from exc
    if not rewritable_nodes(model):
        return None
    rewrites: List[Any] = []
    try:
        model = optimize_onnx(model, report=rewrites)
    except OptimizeError as exc:
        raise CLIError(f"cannot optimize {str(path)!r}: {exc}") from exc
    if not quiet:
        con = _console(stderr=True)
        for r in rewrites:
            con.print(f"optimize: {r}")
    return model


def cmd_optimize(args: argparse.Namespace) -> int:
    from edgeconv.exporters.onnx import OptimizeError, optimize_onnx

    path = _readable_file(args.model, "ONNX model")
    out = Path(args.output)
    _writable_dir(out.parent if str(out.parent) else ".")
    rewrites: List[Any] = []
    try:
        model = optimize_onnx(str(path), out, fallback=args.fallback, report=rewrites)
    except OptimizeError as exc:
        raise CLIError(str(exc)) from exc
    con = _console()
    for r in rewrites:
        con.print(f"rewrote {r}")
    others = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx", "edgeconv")})
    if others:
        con.print(f"left as is (custom ops of other libraries): {', '.join(others)}")
    if not rewrites:
        con.print(f"{path}: no DeformConv / MMCVDeformConv2d / MMCVModulatedDeformConv2d node to rewrite")
    con.print(f"wrote {out} ({len(rewrites)} node{'s' if len(rewrites) != 1 else ''} rewritten)")
    return 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _names_arg(text: str) -> List[str]:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated non-empty names, got {text!r}")
    return names


def _load_onnx_inputs(path: Path, arrays: Optional[List[str]], seed: int = 0):
    """Inputs for an ONNX model: ``.npy`` files in graph-input order, else random (dynamic dims -> 1)."""
    import numpy as np
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise CLIError(f"cannot read ONNX model {str(path)!r}: {exc}") from exc
    inits = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in inits]
    if arrays:
        if len(arrays) != len(graph_inputs):
            raise CLIError(f"{path} has {len(graph_inputs)} inputs, got {len(arrays)} --inputs files")
        feeds = {}
        for vi, a in zip(graph_inputs, arrays):
            p = _readable_file(a, "input array")
            try:
                feeds[vi.name] = np.load(p, allow_pickle=False)
            except Exception as exc:
                raise CLIError(f"cannot read input array {a!r}: {exc}") from exc
            _check_input_array(vi, feeds[vi.name], a)
        return model, feeds
    from edgeconv.deploy import onnx_inputs

    return model, onnx_inputs(path, None, seed)


def _check_input_array(vi, array, file: str) -> None:
    """``CLIError`` naming the file and the graph input when ``array`` has another dtype, rank or
    static dim than the ONNX graph input ``vi`` declares (onnxruntime's own message names neither)."""
    import numpy as np
    import onnx

    tt = vi.type.tensor_type
    want = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
    if array.dtype != want:
        raise CLIError(f"input array {file!r} has dtype {array.dtype}, the model's input {vi.name!r} takes {want} "
                       f"(convert it with numpy: np.save(path, a.astype(np.{want.name})))")
    if not tt.HasField("shape"):
        return
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    shown = "x".join("?" if d is None else str(d) for d in dims)
    if array.ndim != len(dims) or any(d is not None and d != n for d, n in zip(dims, array.shape)):
        raise CLIError(f"input array {file!r} has shape {'x'.join(map(str, array.shape))}, the model's input "
                       f"{vi.name!r} takes {shown} (? = any size)")


def cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    from edgeconv.deploy import make_ort_session, time_callable

    path = _readable_file(args.model, "ONNX model")
    _, feeds = _load_onnx_inputs(path, args.inputs)
    use_library = not args.no_custom_ops
    if use_library:
        from edgeconv.exporters.onnx import custom_ops_available

        if not custom_ops_available():
            _console(stderr=True).print("warning: the edgeconv kernel library is not built; edgeconv ops run "
                                        "their fallback functions")
            use_library = False
    model = _optimized(path, args.quiet)
    try:
        sess = make_ort_session(path if model is None else model, use_library=use_library, threads=args.threads)
    except Exception as exc:
        raise CLIError(f"onnxruntime cannot load {str(path)!r}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from exc
    outputs = sess.run(None, feeds)
    names = [o.name for o in sess.get_outputs()]
    con = _console()
    for n, a in zip(names, outputs):
        a = np.asarray(a)
        con.print(f"{n}: shape={list(a.shape)} dtype={a.dtype} mean={a.mean():.6g} std={a.std():.6g} "
                  f"min={a.min():.6g} max={a.max():.6g}")
    if args.output:
        out_dir = Path(args.output)
        out_dir.mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(outputs):
            np.save(out_dir / f"output_{i}.npy", a)
    if args.repeat:
        stats = time_callable(lambda: sess.run(None, feeds), repeats=args.repeat, warmup=2)
        con.print(f"latency: median {stats['median_ms']:.3f} ms over {args.repeat} runs "
                  f"(p10 {stats['p10_ms']:.3f}, p90 {stats['p90_ms']:.3f}), "
                  f"threads={args.threads or 'onnxruntime default'}, "
                  f"custom ops={'off' if args.no_custom_ops else 'on'}")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    path = _readable_file(args.model, "ONNX model")
    _writable_dir(Path(args.output).parent if str(Path(args.output).parent) else ".")
    try:
        from edgeconv.exporters.tvm import compile_tvm
    except ImportError as exc:
        raise CLIError(f"TVM is not available ({exc}); install edgeconv[tvm]") from exc

    _, feeds = _load_onnx_inputs(path, None)
    shapes = None
    if args.input is not None:
        import numpy as np

        first = next(iter(feeds))
        shapes = {first: list(args.input)}
        feeds[first] = np.random.default_rng(0).standard_normal(args.input).astype(feeds[first].dtype)
    import tvm.error

    work_dir = None
    if args.tune:
        if args.rpc and not args.rpc.get("key"):
            raise CLIError("--tune with --rpc measures through an RPC tracker: use --rpc HOST:PORT/KEY")
        if args.target.startswith("arm64") and not args.rpc:
            raise CLIError(f"--tune for --target {args.target} measures on a board: add --rpc HOST:PORT/KEY")
        work_dir = _writable_dir(args.work_dir or f"{Path(args.output).with_suffix('')}-tuning", "--work-dir")
    model = _optimized(path, args.quiet)
    try:
        with _tuning_progress(args) as on_trial:
            cm = compile_tvm(str(path) if model is None else model, target=args.target, output=args.output, tune_trials=args.tune,
                             input_shapes=shapes, work_dir=work_dir and str(work_dir),
                             rpc=args.rpc if args.tune else None, on_trial=on_trial)
    except tvm.error.OpNotImplemented as exc:  # an op TVM's ONNX frontend cannot import: input error, as in `run`
        raise CLIError(f"TVM cannot import {str(path)!r}: {_first_line(exc)}") from exc
    con = _console()
    con.print(f"wrote {args.output}")
    if cm.tuning is not None:
        t = cm.tuning
        faster = ", ".join(f"{name} {x:.2f}x" for name, x in t.applied.items()) or "none"
        con.print(f"tuning: {t.trials} trials, {t.valid} valid measured, on {len(t.tasks)} kernels; faster than "
                  f"untuned and applied: {faster}; database and logs: {t.work_dir} (logs in {t.log_dir})")
    if args.rpc:
        import numpy as np

        from edgeconv.exporters.tvm.rpc import run_rpc

        res = run_rpc(args.output, args.rpc, list(feeds.values()), repeats=args.repeat or 10)
        out = res["outputs"]
        con.print(f"rpc {args.rpc['host']}:{args.rpc['port']}: outputs {[list(np.shape(o)) for o in out]}, "
                  f"median {res['latency']['median_ms']:.3f} ms")
    return 0


def cmd_bench(args: argparse.Namespace, rest: List[str]) -> int:
    """Dispatch to ``edgeconv.bench.<what>.main(argv)`` with the remaining arguments."""
    which = args.what
    if which is None:
        if any(a in ("-h", "--help") for a in rest):
            sys.stdout.write(args.bench_help())
            return 0
        raise CLIError("bench needs a benchmark name: kernels, tvm, model or models")
    module_name = BENCHMARKS[which]
    try:
        module = importlib.import_module(module_name)
        bench_main = module.main
    except (ImportError, AttributeError) as exc:
        raise CLIError(f"benchmark {which!r} unavailable ({module_name}: {exc})") from exc
    argv = list(rest)
    if args.rpc_raw:
        parse_rpc(args.rpc_raw)  # validate early: exit 2 on a malformed address
        if not getattr(module, "SUPPORTS_RPC", False):
            raise CLIError(f"'edgeconv bench {which}' does not support --rpc; use 'edgeconv bench model --rpc' "
                           "or 'edgeconv deploy --rpc'")
        argv += ["--rpc", args.rpc_raw]
    if args.quiet and which == "model":
        argv.append("-q")
    rc = bench_main(argv)
    return int(rc or 0)


def cmd_deploy(args: argparse.Namespace) -> int:
    from edgeconv.deploy import DeployConfig, run_deploy

    targets = None
    if args.targets is not None:
        targets = [t.strip() for t in args.targets.split(",") if t.strip()]
        bad = [t for t in targets if t not in DEPLOY_TARGETS]
        if bad or not targets:
            raise CLIError(f"bad --targets {args.targets!r}: expected a comma-separated subset of {','.join(DEPLOY_TARGETS)}")
    _writable_dir(args.output)
    onnx_model = None
    if args.model.endswith(".onnx"):  # an existing ONNX file: optimize_onnx, then every backend
        onnx_model = _readable_file(args.model, "ONNX model")
        _optimized(onnx_model, quiet=True)  # a node optimize cannot map: usage error before the pipeline
        model, name = None, onnx_model.name
        shape = tuple(next(iter(_load_onnx_inputs(onnx_model, None)[1].values())).shape) if args.input is None \
            else tuple(args.input)
    else:
        model, shape, name = resolve_model(args.model, args.input)
    cfg = DeployConfig(
        model=model,
        model_name=name,
        input_shape=shape,
        onnx_model=onnx_model,
        outdir=Path(args.output),
        targets=targets,
        repeats=args.repeats,
        threads=args.threads,
        tol=args.tol,
        rpc=args.rpc,
        rpc_target=args.rpc_target,
        opset=args.opset,
        quiet=args.quiet,
        tune_trials=args.tune,
    )
    result = run_deploy(cfg)
    con = _console()  # -q silences progress, not the result
    con.print(result.summary_text())
    con.print(f"report: {cfg.outdir / 'report.md'}")
    return result.exit_code


@contextlib.contextmanager
def _tuning_progress(args: argparse.Namespace):
    """One progress bar over the MetaSchedule trials (``on_trial(done, total)``), else the spinner."""
    if not args.tune or args.quiet:
        with _status(args, f"compiling {args.model} for {args.target}"):
            yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(f"tuning {args.model} for {args.target}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=_console(stderr=True), transient=True) as progress:
        task = progress.add_task("", total=args.tune)
        yield lambda done, total: progress.update(task, completed=done, total=total)


class _NullStatus:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _status(args: argparse.Namespace, text: str):
    if getattr(args, "quiet", False):
        return _NullStatus()
    return _console(stderr=True).status(text)


# ------------------------------------------------------------------------------------------
# parser
# ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress output")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show the back ends' own warnings and logs (TVM, torch.onnx), filtered by default")

    parser = _Parser(prog=PROG, description="Every convolution kind, from a PyTorch layer to a verified edge deployment.",
                     parents=[common])
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("layers", parents=[common], help="params/MACs of every conv kind vs a standard conv")
    p.add_argument("--channels", type=_positive_int, default=64, help="in = out channels (default 64)")
    p.add_argument("--size", type=_positive_int, default=56, help="input height = width (default 56)")
    p.add_argument("--kernel", type=_positive_int, default=3, choices=(3, 5, 7), help="kernel size (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("models", parents=[common], help="list the model zoo")
    p.add_argument("--no-params", action="store_true", help="do not instantiate models to count parameters")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("profile", parents=[common],
                       help="per-layer params/MACs of a model; --backend tvm: time per compiled kernel")
    p.add_argument("model", help="registered name, pytorchcv:NAME or path/to/file.py:factory")
    p.add_argument("--input", type=_shape_arg, default=None, help="input shape N,C,H,W (default: the model's)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--backend", choices=("tvm",), default=None,
                   help="tvm: compile with edgeconv's TVM pipeline and time every kernel (VM instrumentation)")
    p.add_argument("--threads", type=_positive_int, default=1, help="--backend tvm: runtime threads (default 1)")
    p.add_argument("--runs", type=_positive_int, default=20, help="--backend tvm: profiled runs, medians (default 20)")
    p.add_argument("--top", type=_positive_int, default=25, help="--backend tvm: kernels listed (default 25)")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("export", parents=[common], help="export a model to ONNX")
    p.add_argument("model", help="registered name or path/to/file.py:factory")
    p.add_argument("-o", "--output", required=True, help="output .onnx path")
    p.add_argument("--input", type=_shape_arg, default=None, help="input shape N,C,H,W (default: the model's)")
    p.add_argument("--opset", type=_positive_int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--deform", choices=("auto", "standard", "custom"), default="auto",
                   help="deformable conv as standard ONNX DeformConv, edgeconv custom op, or auto")
    p.add_argument("--fallback", choices=("standard", "decomposed"), default="standard",
                   help="model-local function attached to custom ops for runtimes without our library")
    p.add_argument("--input-names", type=_names_arg, default=None, metavar="A[,B...]",
                   help="graph input names, in forward() order (default: the forward() parameter names)")
    p.add_argument("--output-names", type=_names_arg, default=None, metavar="Y[,Z...]",
                   help="graph output names, in output order (default: torch's node names)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("optimize", parents=[common],
                       help="rewrite an ONNX file's DeformConv / mmcv deformable convs to edgeconv ops")
    p.add_argument("model", help="path to a .onnx file")
    p.add_argument("-o", "--output", required=True, help="output .onnx path")
    p.add_argument("--fallback", choices=("auto", "standard", "decomposed"), default="auto",
                   help="fallback function body: one ONNX DeformConv (opset >= 19), opset-13 operators, or auto "
                        "(standard from opset 19, else decomposed)")
    p.set_defaults(func=cmd_optimize)

    p = sub.add_parser("run", parents=[common], help="run an ONNX model in onnxruntime (with edgeconv kernels)")
    p.add_argument("model", help="path to a .onnx file")
    p.add_argument("--inputs", nargs="+", default=None, metavar="NPY", help=".npy arrays, one per graph input")
    p.add_argument("--threads", type=_positive_int, default=None, help="intra-op threads (default: onnxruntime's)")
    p.add_argument("--no-custom-ops", action="store_true", help="do not load the edgeconv kernel library")
    p.add_argument("--repeat", type=_non_negative_int, default=0, help="also time N runs (median)")
    p.add_argument("--output", default=None, help="directory to save outputs as .npy")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compile", parents=[common], help="compile an ONNX model with TVM")
    p.add_argument("model", help="path to a .onnx file")
    p.add_argument("--target", required=True, choices=TARGETS, help="TVM target")
    p.add_argument("-o", "--output", required=True, help="output shared library (.so)")
    p.add_argument("--input", type=_shape_arg, default=None,
                   help="shape N,C,H,W of the first input: fixes symbolic dims (a dynamic batch), which "
                        "edgeconv's kernels need (else TVM's generic conv, with a warning)")
    p.add_argument("--tune", type=_non_negative_int, default=0, metavar="N",
                   help="at most N MetaSchedule trials, shared by the kernels left to generic schedules; a tuned "
                        "schedule is kept only where it measured faster (default 0)")
    p.add_argument("--work-dir", default=None, metavar="DIR",
                   help="--tune: MetaSchedule's database (reused across runs) and logs (default: OUTPUT without "
                        ".so + '-tuning')")
    p.add_argument("--rpc", type=_rpc_arg, default=None, metavar="HOST:PORT[/KEY]",
                   help="with --tune: measure the trials on the boards of an RPC tracker (HOST:PORT/KEY); "
                        "without: run the compiled module on an RPC server (or tracker/key)")
    p.add_argument("--repeat", type=_non_negative_int, default=10, help="timed runs for --rpc")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("bench", parents=[common], add_help=False,
                       help="benchmarks: kernels | tvm | model | models (extra args passed on)",
                       description="Run a benchmark; arguments after its name go to it "
                                   "('edgeconv bench model --help' shows them).")
    p.add_argument("what", nargs="?", choices=tuple(BENCHMARKS), help="benchmark to run")
    p.add_argument("--rpc", dest="rpc_raw", type=str, default=None, metavar="HOST:PORT[/KEY]",
                   help="run TVM modules on a remote device (tvm, model)")
    p.set_defaults(func=cmd_bench, passthrough=True, bench_help=p.format_help)

    p = sub.add_parser(
        "deploy", parents=[common], help="profile, export, check, run, compile; write a report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Profile MODEL, export it to ONNX, check it, run it in onnxruntime with and without the "
                    "edgeconv kernels, compile it with TVM for the host and for arm64 (run under qemu via "
                    "edgeconv.arm), check parity against PyTorch and time every backend; write "
                    "OUTPUT/report.md, report.json and latency.png.",
        epilog=DEPLOY_EXIT_RULE,
    )
    p.add_argument("model", nargs="?", default="edgenet",
                   help="registered name, path/to/file.py:factory or an existing .onnx file (its DeformConv / mmcv "
                        "deformable nodes are rewritten by 'edgeconv optimize'; default edgenet)")
    p.add_argument("--input", type=_shape_arg, default=None, help="input shape N,C,H,W (default: the model's; edgenet 1,3,64,64)")
    p.add_argument("--targets", default=None,
                   help=f"comma-separated subset of {','.join(DEPLOY_TARGETS)} (default: ort,tvm-x86,tvm-arm64; with "
                        "the default, targets whose optional dependency is missing are skipped instead of failing; "
                        "ort-arm64 = aarch64 onnxruntime + kernels under qemu, opt-in; openvino = OpenVINO CPU, "
                        "an opt-in comparison)")
    p.add_argument("-o", "--output", default="deploy-report", help="output directory (default deploy-report)")
    p.add_argument("--rpc", type=_rpc_arg, default=None, metavar="HOST:PORT[/KEY]",
                   help="also run the TVM module on an RPC server / tracker key")
    p.add_argument("--rpc-target", default="arm64", choices=TARGETS, help="target compiled for the --rpc device (default arm64)")
    p.add_argument("--repeats", type=_positive_int, default=20, help="timed runs per backend (median; default 20)")
    p.add_argument("--threads", type=_thread_counts, default=(1,), metavar="N[,N...]",
                   help="thread counts: every latency is measured at each (a report column per count; default 1)")
    p.add_argument("--tol", type=_positive_float, default=1e-4, help="parity tolerance: max|diff| / max|torch| (default 1e-4)")
    p.add_argument("--opset", type=_positive_int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--tune", type=_non_negative_int, default=0, metavar="N", help="MetaSchedule trials for TVM (default 0)")
    p.set_defaults(func=cmd_deploy)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``edgeconv`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.quiet = getattr(args, "quiet", False)
    args.debug = getattr(args, "debug", False)
    if getattr(args, "verbose", False):
        os.environ[VERBOSE_ENV] = "1"  # read by the filters at the API boundary (edgeconv._quiet)
    try:
        if getattr(args, "passthrough", False):
            return args.func(args, rest)
        return args.func(args)
    except CLIError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except Exception as exc:  # unexpected failure: one line unless --debug
        if args.debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        sys.stderr.write(f"{PROG}: error: {type(exc).__name__}: {msg} (rerun with --debug for the traceback)\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
