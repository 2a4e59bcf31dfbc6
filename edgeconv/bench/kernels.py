"""Benchmark of the onnxruntime custom-op kernels (``python -m edgeconv.bench kernels``).

For each shape and thread count (onnxruntime ``intra_op_num_threads``) it times, in one run:

* deformable convolution: our ``edgeconv.DeformConv2d`` v1 (no mask) and v2 (mask), onnxruntime's
  built-in ``DeformConv`` (onnxruntime >= 1.25), a plain ``Conv`` of the same shape (weights as
  graph inputs, like every other variant, and "ort_Conv_constW": weights as initializers, which
  onnxruntime rewrites to its pre-packed NCHWc convolution), and the PyTorch reference ``torch.ops.edgeconv.deform_conv2d`` (when ``edgeconv.functional`` provides it);
* dynamic convolution (K experts): our ``edgeconv.DynamicConv2d``, a plain ``Conv``, and two
  standard-op decompositions: "mix" (MatMul mixes the weights per sample, then one Conv with the
  batch folded into groups; needs a fixed batch) and "kconv" (one Conv with K*O outputs, then an
  attention-weighted sum).

Medians over ``--repeats`` timed runs after warm-up; the variants of one shape and thread count are
timed round-robin so that load from other processes hits them alike; "thread_cpu_ms" (CPU time of
the calling thread) is the robust figure at 1 thread on a shared machine. Writes ``kernels.json`` and ``kernels.png``
into ``--out`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeconv.opdefs import DOMAIN, DOMAIN_VERSION

DEFAULT_SHAPES = ["1x64x56x56-64k3", "1x256x28x28-256k3", "8x64x56x56-64k3"]
EXPERTS = 4


@dataclass(frozen=True)
class Shape:
    N: int
    C: int
    H: int
    W: int
    O: int
    k: int

    @classmethod
    def parse(cls, s: str) -> "Shape":
        """'NxCxHxW-Ok<k>', e.g. '1x64x56x56-64k3' (stride 1, pad k//2)."""
        try:
            left, right = s.split("-")
            N, C, H, W = (int(v) for v in left.split("x"))
            O, k = (int(v) for v in right.split("k"))
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"bad shape {s!r}, expected like 1x64x56x56-64k3") from e
        return cls(N, C, H, W, O, k)

    def __str__(self) -> str:
        return f"{self.N}x{self.C}x{self.H}x{self.W}-{self.O}k{self.k}"

    @property
    def pad(self) -> int:
        return self.k // 2

    @property
    def out_hw(self) -> tuple[int, int]:
        return (self.H + 2 * self.pad - self.k + 1, self.W + 2 * self.pad - self.k + 1)


# ---------------------------------------------------------------------------------------------
# ONNX models


def _model(nodes, inputs, initializers=(), custom=False):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "bench", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=list(initializers))
    opsets = [helper.make_opsetid("", 19)] + ([helper.make_opsetid(DOMAIN, DOMAIN_VERSION)] if custom else [])
    m = helper.make_model(graph, opset_imports=opsets)
    m.ir_version = 9
    return m


def _pads(s: Shape) -> list[int]:
    return [s.pad] * 4


def _deform_models(s: Shape):
    from onnx import helper

    p = _pads(s)
    ours_v1 = _model([helper.make_node("DeformConv2d", ["X", "W", "offset", "", "B"], ["Y"], domain=DOMAIN, pads=p)],
                     ["X", "W", "offset", "B"], custom=True)
    ours_v2 = _model([helper.make_node("DeformConv2d", ["X", "W", "offset", "mask", "B"], ["Y"], domain=DOMAIN, pads=p)],
                     ["X", "W", "offset", "mask", "B"], custom=True)
    builtin = _model([helper.make_node("DeformConv", ["X", "W", "offset", "B", "mask"], ["Y"], pads=p)],
                     ["X", "W", "offset", "B", "mask"])
    conv = _model([helper.make_node("Conv", ["X", "W", "B"], ["Y"], pads=p)], ["X", "W", "B"])
    return {"edgeconv_v1": ours_v1, "edgeconv_v2": ours_v2, "ort_DeformConv_v2": builtin, "ort_Conv": conv}


def _dynamic_models(s: Shape, K: int):
    from onnx import helper, numpy_helper

    p = _pads(s)
    ours = _model([helper.make_node("DynamicConv2d", ["X", "Wk", "A", "Bk"], ["Y"], domain=DOMAIN, pads=p)],
                  ["X", "Wk", "A", "Bk"], custom=True)
    conv = _model([helper.make_node("Conv", ["X", "W", "B"], ["Y"], pads=p)], ["X", "W", "B"])
    OH, OW = s.out_hw
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.int64), name)  # noqa: E731
    # "mix": W~ = A @ Wk.reshape(K, -1) -> [N*O, C, k, k]; X -> [1, N*C, H, W]; Conv(group=N)
    mix_nodes = [
        helper.make_node("Reshape", ["Wk", "s_wflat"], ["Wflat"]),
        helper.make_node("MatMul", ["A", "Wflat"], ["Wmix"]),
        helper.make_node("Reshape", ["Wmix", "s_wconv"], ["Wconv"]),
        helper.make_node("MatMul", ["A", "Bk"], ["Bmix"]),
        helper.make_node("Reshape", ["Bmix", "s_bflat"], ["Bconv"]),
        helper.make_node("Reshape", ["X", "s_x"], ["Xg"]),
        helper.make_node("Conv", ["Xg", "Wconv", "Bconv"], ["Yg"], pads=p, group=s.N),
        helper.make_node("Reshape", ["Yg", "s_y"], ["Y"]),
    ]
    mix = _model(mix_nodes, ["X", "Wk", "A", "Bk"], [
        i64("s_wflat", [K, -1]), i64("s_wconv", [s.N * s.O, s.C, s.k, s.k]), i64("s_bflat", [-1]),
        i64("s_x", [1, s.N * s.C, s.H, s.W]), i64("s_y", [s.N, s.O, OH, OW])])
    # "kconv": Y_all = Conv(X, Wk as [K*O, C, k, k]) -> [N, K, O, OH*OW] * A[N, K, 1, 1] -> sum over K
    kconv_nodes = [
        helper.make_node("Reshape", ["Wk", "s_wk"], ["Wall"]),
        helper.make_node("Reshape", ["Bk", "s_bk"], ["Ball"]),
        helper.make_node("Conv", ["X", "Wall", "Ball"], ["Yall"], pads=p),
        helper.make_node("Reshape", ["Yall", "s_yall"], ["Y4"]),
        helper.make_node("Reshape", ["A", "s_a"], ["A4"]),
        helper.make_node("Mul", ["Y4", "A4"], ["Yw"]),
        helper.make_node("ReduceSum", ["Yw", "ax1"], ["Ys"], keepdims=0),
        helper.make_node("Reshape", ["Ys", "s_y"], ["Y"]),
    ]
    kconv = _model(kconv_nodes, ["X", "Wk", "A", "Bk"], [
        i64("s_wk", [K * s.O, s.C, s.k, s.k]), i64("s_bk", [-1]), i64("s_yall", [0, K, s.O, -1]),
        i64("s_a", [0, K, 1, 1]), i64("ax1", [1]), i64("s_y", [0, s.O, OH, OW])])
    return {"edgeconv": ours, "ort_Conv": conv, "decomp_mix": mix, "decomp_kconv": kconv}


def _with_initializers(model, feeds: dict[str, np.ndarray], names: list[str]):
    from onnx import numpy_helper

    keep = [i for i in model.graph.input if i.name not in names]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    model.graph.initializer.extend(numpy_helper.from_array(feeds[n], n) for n in names)
    return model


def _inputs(s: Shape, K: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    OH, OW = s.out_hw
    kk = s.k * s.k
    return {
        "X": rng.standard_normal((s.N, s.C, s.H, s.W), dtype=np.float32),
        "W": rng.standard_normal((s.O, s.C, s.k, s.k), dtype=np.float32),
        "B": rng.standard_normal(s.O, dtype=np.float32),
        "offset": rng.standard_normal((s.N, 2 * kk, OH, OW), dtype=np.float32),
        "mask": rng.random((s.N, kk, OH, OW), dtype=np.float32),
        "Wk": rng.standard_normal((K, s.O, s.C, s.k, s.k), dtype=np.float32),
        "Bk": rng.standard_normal((K, s.O), dtype=np.float32),
        "A": rng.dirichlet(np.ones(K), size=s.N).astype(np.float32),
    }


# ---------------------------------------------------------------------------------------------
# timing


def _time_interleaved(runs: list[tuple[Callable[[], Any], int]], warmup: int) -> list[dict[str, float]]:
    """Times several functions round-robin (function i runs in the first repeats_i rounds).
    Per function: wall-clock median/min/max and the median CPU time of the calling thread
    ("thread_cpu_ms"; at 1 intra-op thread all work runs in the calling thread, so it is the op's
    cost without the time stolen by other processes on a shared machine)."""
    for fn, _ in runs:
        for _ in range(warmup):
            fn()
    wall: list[list[float]] = [[] for _ in runs]
    cpu: list[list[float]] = [[] for _ in runs]
    for rnd in range(max((n for _, n in runs), default=0)):
        for i, (fn, n) in enumerate(runs):
            if rnd >= n:
                continue
            c0 = time.thread_time()
            t0 = time.perf_counter()
            fn()
            wall[i].append((time.perf_counter() - t0) * 1e3)
            cpu[i].append((time.thread_time() - c0) * 1e3)
    out = []
    for (_, n), ts, cs in zip(runs, wall, cpu):
        ts.sort()
        out.append({"median_ms": statistics.median(ts), "min_ms": ts[0], "max_ms": ts[-1],
                    "thread_cpu_ms": statistics.median(cs), "repeats": n})
    return out


def _ort_runner(model, feeds: dict[str, np.ndarray], threads: int, lib: str | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if lib:
        so.register_custom_ops_library(lib)
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    inputs = {n: feeds[n] for n in names}
    return lambda: sess.run(None, inputs)


def _torch_deform_runner(s: Shape, feeds, threads: int):
    import torch

    import edgeconv.functional  # noqa: F401  (registers torch.ops.edgeconv.deform_conv2d)

    op = torch.ops.edgeconv.deform_conv2d
    x, w, b = (torch.from_numpy(feeds[k]) for k in ("X", "W", "B"))
    off, mask = torch.from_numpy(feeds["offset"]), torch.from_numpy(feeds["mask"])
    p = s.pad

    def run():
        prev = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                return op(x, off, w, b, mask, [1, 1], [p, p], [1, 1])
        finally:
            torch.set_num_threads(prev)

    return run


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("onnxruntime", "onnx", "torch"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover
            out[mod] = "n/a"
    return out


def run(shapes=None, threads=(1, 2), repeats: int = 20, warmup: int = 3, experts: int = EXPERTS,
        lib: str | None = None, torch_ref: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Runs the benchmark and returns the result dict (see module docstring)."""
    import onnxruntime as ort

    from edgeconv._library import get_library_path

    lib = lib or get_library_path()
    shapes = [Shape.parse(x) if isinstance(x, str) else x for x in (shapes or DEFAULT_SHAPES)]
    has_builtin = tuple(int(v) for v in ort.__version__.split(".")[:2]) >= (1, 25)
    notes: list[str] = []
    if not has_builtin:
        notes.append(f"onnxruntime {ort.__version__} has no built-in DeformConv (>= 1.25): skipped")
    torch_ok = False
    if torch_ref:
        try:
            import torch

            import edgeconv.functional  # noqa: F401

            torch_ok = hasattr(torch.ops.edgeconv, "deform_conv2d")
        except Exception as e:  # pragma: no cover
            notes.append(f"PyTorch reference unavailable: {e}")
        if not torch_ok and not notes[-1:]:
            notes.append("torch.ops.edgeconv.deform_conv2d not available: PyTorch reference skipped")
    results: list[dict] = []
    for s in shapes:
        feeds = _inputs(s, experts)
        for t in threads:
            # (op, variant, runner, repeats): all variants of one shape/thread count are timed
            # round-robin, so that load drift on a shared machine hits them alike.
            runners: list[tuple[str, str, Callable[[], Any], int]] = []
            for name, model in _deform_models(s).items():
                if name == "ort_DeformConv_v2" and not has_builtin:
                    continue
                runners.append(("deform", name, _ort_runner(model, feeds, t, lib if name.startswith("edgeconv") else None),
                                repeats))
            # Conv with W, B as initializers: onnxruntime then rewrites it to its NCHWc layout
            # (pre-packed weights), the usual situation in a deployed model.
            const_conv = _with_initializers(_deform_models(s)["ort_Conv"], feeds, ["W", "B"])
            runners.append(("deform", "ort_Conv_constW", _ort_runner(const_conv, feeds, t, None), repeats))
            if torch_ok:
                runners.append(("deform", "torch_reference_v2", _torch_deform_runner(s, feeds, t), max(3, repeats // 4)))
            for name, model in _dynamic_models(s, experts).items():
                runners.append(("dynamic", name, _ort_runner(model, feeds, t, lib if name == "edgeconv" else None), repeats))
            timings = _time_interleaved([(fn, n) for _, _, fn, n in runners], warmup)
            for (op, name, _, _), r in zip(runners, timings):
                results.append({"op": op, "variant": name, "shape": str(s), "threads": t, **r})
                if log:
                    log(f"{op:7s} {s} t={t} {name:20s} {r['median_ms']:9.3f} ms (thread cpu {r['thread_cpu_ms']:.3f})")

    def med(op, variant, shape, t, key):
        for r in results:
            if (r["op"], r["variant"], r["shape"], r["threads"]) == (op, variant, shape, t):
                return r[key]
        return None

    ratios = []
    for key, label in (("median_ms", "wall"), ("thread_cpu_ms", "cpu")):
        for s, t in ((s, t) for s in shapes for t in threads):
            if label == "cpu" and t != 1:
                continue
            row: dict[str, Any] = {"shape": str(s), "threads": t, "metric": label}
            conv = med("deform", "ort_Conv", str(s), t, key)
            conv_c = med("deform", "ort_Conv_constW", str(s), t, key)
            bi = med("deform", "ort_DeformConv_v2", str(s), t, key)
            for v in ("edgeconv_v1", "edgeconv_v2"):
                m = med("deform", v, str(s), t, key)
                row[f"deform_{v}_over_conv"] = m / conv if m and conv else None
                row[f"deform_{v}_over_conv_constW"] = m / conv_c if m and conv_c else None
                row[f"deform_{v}_over_ort_deform"] = m / bi if m and bi else None
            dyn = med("dynamic", "edgeconv", str(s), t, key)
            dconv = med("dynamic", "ort_Conv", str(s), t, key)
            decs = [x for x in (med("dynamic", "decomp_mix", str(s), t, key),
                                med("dynamic", "decomp_kconv", str(s), t, key)) if x]
            row["dynamic_over_conv"] = dyn / dconv if dyn and dconv else None
            row["dynamic_over_best_decomposition"] = dyn / min(decs) if dyn and decs else None
            ratios.append(row)
    return {
        "benchmark": "kernels",
        "shapes": [str(s) for s in shapes],
        "threads": list(threads),
        "repeats": repeats,
        "warmup": warmup,
        "experts": experts,
        "library": lib,
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "versions": _versions(),
        "isa_override": os.environ.get("EDGECONV_ISA"),
        "results": results,
        "ratios": ratios,
        "notes": notes,
    }


# ---------------------------------------------------------------------------------------------
# reporting


_SHORT = {
    "deform_edgeconv_v1_over_conv": "v1/Conv",
    "deform_edgeconv_v1_over_ort_deform": "v1/ortDeform",
    "deform_edgeconv_v2_over_conv": "v2/Conv",
    "deform_edgeconv_v2_over_ort_deform": "v2/ortDeform",
    "deform_edgeconv_v1_over_conv_constW": "v1/ConvcW",
    "deform_edgeconv_v2_over_conv_constW": "v2/ConvcW",
    "dynamic_over_conv": "dyn/Conv",
    "dynamic_over_best_decomposition": "dyn/decomp",
}


def _print_table(res: dict) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover
        for r in res["results"]:
            print(f"{r['op']:8s} {r['shape']:20s} t={r['threads']} {r['variant']:22s} {r['median_ms']:9.3f} ms")
        for r in res["ratios"]:
            print(r)
        return
    con = Console()
    tab = Table(title=f"edgeconv kernels - median ms over {res['repeats']} runs ({res['cpu']})")
    for col in ("op", "shape", "threads", "variant", "median ms", "min ms", "thread cpu ms"):
        tab.add_column(col, justify="right" if "ms" in col or col == "threads" else "left")
    for r in res["results"]:
        tab.add_row(r["op"], r["shape"], str(r["threads"]), r["variant"], f"{r['median_ms']:.3f}", f"{r['min_ms']:.3f}",
                    f"{r['thread_cpu_ms']:.3f}" if r["threads"] == 1 else "-")
    con.print(tab)
    rt = Table(title="ratios of medians (edgeconv time / other time; lower is better); "
                     "time: wall clock, or CPU time of the calling thread (1 thread only)")
    keys = [k for k in res["ratios"][0] if k not in ("shape", "threads", "metric")] if res["ratios"] else []
    rt.add_column("shape")
    rt.add_column("thr", justify="right")
    rt.add_column("time")
    for k in keys:
        rt.add_column(_SHORT.get(k, k), justify="right")
    for r in res["ratios"]:
        rt.add_row(r["shape"], str(r["threads"]), r["metric"], *("-" if r[k] is None else f"{r[k]:.2f}" for k in keys))
    con.print(rt)
    for n in res["notes"]:
        con.print(f"[yellow]note:[/yellow] {n}")


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(op, s, t) for op in ("deform", "dynamic") for s in res["shapes"] for t in res["threads"]]
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    for ax, op in zip(axes, ("deform", "dynamic")):
        gs = [g for g in groups if g[0] == op]
        variants = sorted({r["variant"] for r in res["results"] if r["op"] == op})
        width = 0.8 / max(1, len(variants))
        for i, v in enumerate(variants):
            vals = []
            for _, s, t in gs:
                m = [r["median_ms"] for r in res["results"] if (r["op"], r["variant"], r["shape"], r["threads"]) == (op, v, s, t)]
                vals.append(m[0] if m else 0.0)
            ax.bar(np.arange(len(gs)) + i * width, vals, width, label=v)
        ax.set_xticks(np.arange(len(gs)) + 0.4 - width / 2)
        ax.set_xticklabels([f"{s}\n{t} thr" for _, s, t in gs], fontsize=7)
        ax.set_ylabel("median ms")
        ax.set_yscale("log")
        ax.set_title(f"{op} convolution")
        ax.legend(fontsize=7)
    fig.suptitle(f"edgeconv onnxruntime kernels ({res['cpu']}, onnxruntime {res['versions'].get('onnxruntime')})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeconv.bench kernels", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=None, help=f"shapes NxCxHxW-Ok<k> (default {' '.join(DEFAULT_SHAPES)})")
    ap.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts (default 1,2)")
    ap.add_argument("--repeats", type=int, default=20, help="timed runs per measurement (default 20)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--experts", type=int, default=EXPERTS, help="dynamic conv kernels K (default 4)")
    ap.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up (smoke test)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--library", default=None, help="libedgeconv_ort path (default: installed one)")
    ap.add_argument("--out", default="bench-results", help="output directory (default bench-results/)")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 3, 1
    threads = tuple(int(t) for t in str(args.threads).split(",") if t)
    res = run(args.shapes, threads, args.repeats, args.warmup, args.experts, args.library, not args.no_torch,
              log=lambda m: print(m, file=sys.stderr, flush=True))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernels.json").write_text(json.dumps(res, indent=2))
    if not args.no_plot:
        try:
            _plot(res, out / "kernels.png")
        except ImportError as e:  # pragma: no cover
            res["notes"].append(f"no plot: {e}")
    _print_table(res)
    print(f"wrote {out / 'kernels.json'}" + ("" if args.no_plot else f" and {out / 'kernels.png'}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
