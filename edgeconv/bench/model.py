"""End-to-end model benchmark: PyTorch eager, onnxruntime with/without the edgeconv kernels, TVM.

    python -m edgeconv.bench model [MODEL] [--input 1,3,64,64] [--repeats 30] [--threads 1]
                                   [--backends torch,ort,ort-nolib,tvm] [--rpc HOST:PORT[/KEY]]
                                   [--rpc-target arm64] [--json out.json]
    edgeconv bench model ...        (same)

The model is exported once (``edgeconv.export_onnx``); every backend runs the same seeded input,
is checked against PyTorch (``max|diff| / max|ref|``) and timed: median (p10/p90) of
``--repeats`` runs after warm-up, at ``--threads`` threads. TVM is compiled for the host
(``x86``); ``--rpc`` also runs a module compiled for ``--rpc-target`` on an RPC device
(``time_evaluator`` on the device). A backend that cannot run (TVM not installed, library not
built) is reported as ``skipped``/``failed`` with the reason; exit code 1 if any requested backend
failed, 2 for bad arguments, else 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

BACKENDS = ("torch", "ort", "ort-nolib", "tvm")


def _parser() -> argparse.ArgumentParser:
    from edgeconv.cli import TARGETS, _Parser, _positive_float, _positive_int, _rpc_arg, _shape_arg

    p = _Parser(prog="edgeconv bench model", description="benchmark one model on every backend (medians)")
    p.add_argument("model", nargs="?", default="edgenet", help="registered name or path/to/file.py:factory")
    p.add_argument("--input", type=_shape_arg, default=None, help="input shape N,C,H,W (default: the model's)")
    p.add_argument("--repeats", type=_positive_int, default=30, help="timed runs per backend (default 30)")
    p.add_argument("--warmup", type=_positive_int, default=3, help="warm-up runs (default 3)")
    p.add_argument("--threads", type=_positive_int, default=1, help="threads per backend (default 1)")
    p.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated subset of {','.join(BACKENDS)}")
    p.add_argument("--rpc", type=_rpc_arg, default=None, metavar="HOST:PORT[/KEY]", help="also run TVM on an RPC device")
    p.add_argument("--rpc-target", default="arm64", choices=TARGETS, help="target of the module sent over RPC (default arm64)")
    p.add_argument("--tol", type=_positive_float, default=1e-4, help="parity tolerance (default 1e-4)")
    p.add_argument("--json", default=None, help="write results as JSON to this file")
    p.add_argument("-q", "--quiet", action="store_true", help="only the final table")
    return p


def run(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Benchmark ``args.model`` on ``args.backends``; one result dict per backend."""
    import torch

    from edgeconv.cli import CLIError, resolve_model
    from edgeconv.deploy import (
        _one_line, export_model, make_ort_session, parity, run_rpc, summarize_ms, time_callable,
    )

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in backends if b not in BACKENDS]
    if bad or not backends:
        raise CLIError(f"bad --backends {args.backends!r}: expected a subset of {','.join(BACKENDS)}")
    model, shape, name = resolve_model(args.model, args.input)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    x_np = x.numpy().copy()
    prev = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    results: List[Dict[str, Any]] = []
    try:
        with torch.no_grad():
            ref = [model(x).detach().numpy()]
        tmp = tempfile.TemporaryDirectory(prefix="edgeconv-bench-")
        onnx_path = Path(tmp.name) / "model.onnx"
        need_onnx = any(b != "torch" for b in backends) or args.rpc
        export_error: Optional[str] = None
        if need_onnx:
            try:
                export_model(model, shape, onnx_path, example=x)
            except Exception as exc:
                export_error = f"export failed: {_one_line(exc)}"

        def record(backend: str, fn) -> None:
            res: Dict[str, Any] = {"backend": backend, "model": name, "input_shape": list(shape), "threads": args.threads}
            if not args.quiet:
                print(f"[bench model] {backend} ...", file=sys.stderr, flush=True)
            try:
                if backend != "torch" and export_error:
                    raise RuntimeError(export_error)
                outs, lat = fn()
                res["parity"] = parity(ref, outs, args.tol)
                res["latency"] = lat
                res["status"] = "passed" if res["parity"]["ok"] else "failed"
            except _SkipBackend as sk:
                res["status"], res["reason"] = "skipped", str(sk)
            except Exception as exc:
                res["status"], res["reason"] = "failed", _one_line(exc)
            results.append(res)

        if "torch" in backends:
            def torch_fn():
                with torch.no_grad():
                    lat = time_callable(lambda: model(x), args.repeats, args.warmup)
                return ref, lat
            record("torch", torch_fn)
        for use_lib, label in ((True, "ort"), (False, "ort-nolib")):
            if label not in backends:
                continue

            def ort_fn(use_lib=use_lib):
                from edgeconv.exporters.onnx import custom_ops_available

                if use_lib and not custom_ops_available():
                    raise _SkipBackend("edgeconv kernel library not built")
                sess = make_ort_session(onnx_path, use_library=use_lib, threads=args.threads)
                feeds = {sess.get_inputs()[0].name: x_np}
                outs = sess.run(None, feeds)
                return outs, time_callable(lambda: sess.run(None, feeds), args.repeats, args.warmup)
            record(label, ort_fn)
        if "tvm" in backends:
            def tvm_fn():
                try:
                    from edgeconv.exporters.tvm import compile_tvm, set_num_threads
                except ImportError as exc:
                    raise _SkipBackend(f"TVM not available ({exc})") from exc
                set_num_threads(args.threads)
                import onnx

                in_name = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name
                cm = compile_tvm(str(onnx_path), target="x86", input_shapes={in_name: list(shape)})
                outs = cm(x_np)
                times = cm.benchmark(x_np, number=1, repeat=args.repeats)
                return outs, summarize_ms([t * 1e3 for t in times])
            record("tvm", tvm_fn)
        if args.rpc:
            def rpc_fn():
                from edgeconv.exporters.tvm import compile_tvm
                import onnx

                in_name = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name
                lib = Path(tmp.name) / f"model_{args.rpc_target}.so"
                compile_tvm(str(onnx_path), target=args.rpc_target, output=str(lib), input_shapes={in_name: list(shape)})
                res = run_rpc(lib, args.rpc, [x_np], repeats=args.repeats)
                return res["outputs"], res["latency"]
            record(f"tvm-rpc({args.rpc_target})", rpc_fn)
        tmp.cleanup()
    finally:
        torch.set_num_threads(prev)
    return results


class _SkipBackend(Exception):
    pass


def _print(results: List[Dict[str, Any]]) -> None:
    from edgeconv.cli import _print_table

    base = next((r["latency"]["median_ms"] for r in results if r["backend"] == "torch" and r.get("latency")), None)
    rows = []
    for r in results:
        lat = r.get("latency") or {}
        par = r.get("parity") or {}
        med = lat.get("median_ms")
        rows.append((
            r["backend"], r["status"],
            f"{med:.3f}" if med is not None else "", f"{lat['p10_ms']:.3f}" if "p10_ms" in lat else "",
            f"{lat['p90_ms']:.3f}" if "p90_ms" in lat else "",
            f"{base / med:.2f}x" if base and med else "",
            f"{par['rel']:.2e}" if "rel" in par else "", r.get("reason", ""),
        ))
    first = results[0] if results else {}
    _print_table(
        f"{first.get('model', '')} {'x'.join(map(str, first.get('input_shape', [])))}, "
        f"{first.get('threads', '')} thread(s)",
        ("backend", "status", "median ms", "p10 ms", "p90 ms", "vs torch", "rel err", "note"), rows, right=(2, 3, 4, 5, 6),
    )


def main(argv: Optional[List[str]] = None) -> int:
    from edgeconv.cli import CLIError

    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        results = run(args)
    except CLIError as exc:
        print(f"edgeconv: error: {exc}", file=sys.stderr)
        return 2
    _print(results)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any(r["status"] == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
