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

from edgeconv.cli_common import (
    TARGETS, CLIError, Parser, positive_float, positive_int, print_table, rpc_arg, shape_arg,
)
from edgeconv.deploy.stages import BENCH_BACKENDS, TABLE, DeployConfig

#: ``edgeconv bench --rpc`` is passed on to this benchmark
SUPPORTS_RPC = True
BACKENDS = tuple(BENCH_BACKENDS)


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="edgeconv bench model", description="benchmark one model on every backend (medians)")
    p.add_argument("model", nargs="?", default="edgenet", help="registered name or path/to/file.py:factory")
    p.add_argument("--input", type=shape_arg, default=None, help="input shape N,C,H,W (default: the model's)")
    p.add_argument("--repeats", type=positive_int, default=30, help="timed runs per backend (default 30)")
    p.add_argument("--warmup", type=positive_int, default=3, help="warm-up runs (default 3)")
    p.add_argument("--threads", type=positive_int, default=1, help="threads per backend (default 1)")
    p.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated subset of {','.join(BACKENDS)}")
    p.add_argument("--rpc", type=rpc_arg, default=None, metavar="HOST:PORT[/KEY]", help="also run TVM on an RPC device")
    p.add_argument("--rpc-target", default="arm64", choices=TARGETS, help="target of the module sent over RPC (default arm64)")
    p.add_argument("--tol", type=positive_float, default=1e-4, help="parity tolerance (default 1e-4)")
    p.add_argument("--json", default=None, help="write results as JSON to this file")
    p.add_argument("-q", "--quiet", action="store_true", help="only the final table")
    return p


def run(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Benchmark ``args.model`` on ``args.backends``: the deploy stages of those backends (plus
    ``torch`` for the reference and ``export``), missing optional tools skipped; one result dict
    per backend."""
    from edgeconv.cli import resolve_model
    from edgeconv.deploy.pipeline import make_context, run_stages

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in backends if b not in BACKENDS]
    if bad or not backends:
        raise CLIError(f"bad --backends {args.backends!r}: expected a subset of {','.join(BACKENDS)}")
    model, shape, name = resolve_model(args.model, args.input)
    wanted = {BENCH_BACKENDS[b]: b for b in backends}
    if args.rpc:
        wanted["tvm-rpc"] = f"tvm-rpc({args.rpc_target})"
    stages = [s for s in TABLE if s.name in wanted or s.name == "torch"
              or (s.name == "export" and set(wanted) - {"torch"})]
    with tempfile.TemporaryDirectory(prefix="edgeconv-bench-") as tmp:
        cfg = DeployConfig(model=model, model_name=name, input_shape=shape, outdir=Path(tmp), repeats=args.repeats,
                           warmup=args.warmup, threads=args.threads, tol=args.tol, rpc=args.rpc,
                           rpc_target=args.rpc_target, quiet=args.quiet)

        def announce(stage: str) -> None:
            if stage in wanted and not args.quiet:
                print(f"[bench model] {wanted[stage]} ...", file=sys.stderr, flush=True)

        ctx = make_context(cfg)
        done = {st.name: st for st in run_stages(ctx, stages, explicit=False, on_start=announce)}
    needs = {s.name: s.needs for s in TABLE}
    results = []
    for stage, backend in wanted.items():
        res: Dict[str, Any] = {"backend": backend, "model": name, "input_shape": list(shape), "threads": args.threads}
        if stage in ctx.omitted:  # e.g. ort-nolib of a model without edgeconv ops
            results.append({**res, "status": "skipped", "reason": ctx.omitted[stage]})
            continue
        st = done[stage]
        if st.parity is not None:
            res["parity"] = st.parity
        if st.latency is not None:
            res["latency"] = st.latency
        failed_need = next((d for d in needs[stage] if d in done and done[d].status == "failed"), None)
        if failed_need is not None:  # report the cause, not "upstream failed"
            res["status"], res["reason"] = "failed", f"{failed_need} failed: {done[failed_need].reason}"
        else:
            res["status"] = st.status
            if st.reason:
                res["reason"] = st.reason
        results.append(res)
    return results


def _print(results: List[Dict[str, Any]]) -> None:
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
    print_table(
        f"{first.get('model', '')} {'x'.join(map(str, first.get('input_shape', [])))}, "
        f"{first.get('threads', '')} thread(s)",
        ("backend", "status", "median ms", "p10 ms", "p90 ms", "vs torch", "rel err", "note"), rows, right=(2, 3, 4, 5, 6),
    )


def main(argv: Optional[List[str]] = None) -> int:
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
