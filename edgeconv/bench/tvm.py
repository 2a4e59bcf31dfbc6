"""Benchmark of edgeconv's TVM pipeline (``python -m edgeconv.bench tvm``).

For each case and each thread count it times, in one run:

* ``edgeconv``: ``compile_tvm(model, "x86")`` (our conv lowering + schedules, no tuning; blocked
  NCHW[8]c kernels wherever channels come in whole vectors),
* ``edgeconv_nchw``: the same with ``layout="nchw"`` (every kernel in NCHW), to show what the
  blocked layout buys,
* ``stock``: ``tvm.compile(mod, relax_pipeline="default")`` (TVM 0.27's generic conv loop nest),
* ``ort``: onnxruntime CPU with ``intra_op_num_threads``.

TVM's runtime thread pool reads ``TVM_NUM_THREADS`` when it is first used, so every thread count
runs in its own subprocess (``--worker``). The runtimes are timed in alternating blocks of 5 runs
(rotating order, short pause between blocks) so that load from other processes hits all alike;
medians over ``--repeats`` runs after warm-up, of wall-clock time and of process CPU time.
Writes ``tvm.json`` and ``tvm.png`` into ``--out`` (default ``bench-results/``) and prints a table.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgeconv.deploy.measure import max_rel_err

CASES = [
    "dw3x3_1x64x112x112_s1",
    "dw3x3_1x256x28x28_s1",
    "dw3x3_1x256x28x28_s2",
    "group3x3_g8_1x128x56x56",
    "separable_1x128x56x56",
    "small_model_1x3x112x112",
]
QUICK_CASES = ["dw3x3_1x256x28x28_s1"]


# --------------------------------------------------------------------------- models (onnx.helper)
def _const(rng, name, shape, scale=None):
    from onnx import numpy_helper

    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    s = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
    return numpy_helper.from_array((rng.standard_normal(shape) * s).astype("float32"), name)


class _G:
    """Tiny ONNX graph builder."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def _name(self, p):
        self.n += 1
        return f"{p}{self.n}"

    def conv(self, x, c, o, k, s=1, g=1, act="relu"):
        from onnx import helper

        w, b, y = self._name("w"), self._name("b"), self._name("conv")
        self.inits += [_const(self.rng, w, [o, c // g, k, k]), _const(self.rng, b, [o], 0.1)]
        self.nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k], strides=[s, s],
                                           pads=[k // 2] * 4, group=g))
        if act == "relu":
            r = self._name("relu")
            self.nodes.append(helper.make_node("Relu", [y], [r]))
            return r
        if act == "relu6":
            r = self._name("clip")
            lo, hi = self._name("lo"), self._name("hi")
            from onnx import numpy_helper

            self.inits += [numpy_helper.from_array(np.array(0, np.float32), lo),
                           numpy_helper.from_array(np.array(6, np.float32), hi)]
            self.nodes.append(helper.make_node("Clip", [y, lo, hi], [r]))
            return r
        return y

    def shuffle(self, x, n, c, h, w, g):
        from onnx import helper, numpy_helper

        s1, s2 = self._name("shape"), self._name("shape")
        self.inits += [numpy_helper.from_array(np.array([n, g, c // g, h, w], np.int64), s1),
                       numpy_helper.from_array(np.array([n, c, h, w], np.int64), s2)]
        a, t, y = self._name("r"), self._name("t"), self._name("shuf")
        self.nodes += [helper.make_node("Reshape", [x, s1], [a]),
                       helper.make_node("Transpose", [a], [t], perm=[0, 2, 1, 3, 4]),
                       helper.make_node("Reshape", [t, s2], [y])]
        return y

    def add(self, a, b):
        from onnx import helper

        y = self._name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [y]))
        return y

    def model(self, x_shape, out):
        from onnx import TensorProto, helper

        graph = helper.make_graph(self.nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                                  [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def build_case(name: str):
    """Return (onnx.ModelProto, input array) for a case name."""
    g = _G()
    rng = np.random.default_rng(1)
    if name.startswith("dw3x3_"):
        _, shape, s = name.split("_")
        n, c, h, w = (int(v) for v in shape.split("x"))
        y = g.conv("x", c, c, 3, int(s[1:]), c, act=None)
        x_shape = [n, c, h, w]
    elif name == "group3x3_g8_1x128x56x56":
        y = g.conv("x", 128, 128, 3, 1, 8, act=None)
        x_shape = [1, 128, 56, 56]
    elif name == "separable_1x128x56x56":
        d = g.conv("x", 128, 128, 3, 1, 128, act="relu")
        y = g.conv(d, 128, 128, 1, 1, 1, act="relu")
        x_shape = [1, 128, 56, 56]
    elif name == "small_model_1x3x112x112":
        # MobileNet/ShuffleNet-like: stem, separable blocks, shuffled group block with residual
        x = g.conv("x", 3, 16, 3, 2, act="relu6")  # 56
        x = g.conv(x, 16, 16, 3, 1, 16, act="relu6")
        x = g.conv(x, 16, 32, 1, act="relu6")
        x = g.conv(x, 32, 32, 3, 2, 32, act="relu6")  # 28
        x = g.conv(x, 32, 64, 1, act="relu6")
        r = g.conv(x, 64, 64, 1, 1, 4, act="relu")
        r = g.shuffle(r, 1, 64, 28, 28, 4)
        r = g.conv(r, 64, 64, 3, 1, 64, act=None)
        r = g.conv(r, 64, 64, 1, 1, 4, act=None)
        x = g.add(x, r)
        x = g.conv(x, 64, 64, 3, 2, 64, act="relu6")  # 14
        y = g.conv(x, 64, 128, 1, act="relu6")
        x_shape = [1, 3, 112, 112]
    else:
        raise ValueError(f"unknown case {name}")
    return g.model(x_shape, y), rng.standard_normal(x_shape).astype("float32")


# --------------------------------------------------------------------------- timing
def interleaved(fns: dict, warmup: int, repeats: int, budgets: dict, block: int = 5, pause: float = 0.1) -> dict:
    """Time several runtimes in alternating blocks of ``block`` runs (shuffled order, seeded), so that load
    from other processes on a shared machine hits all of them alike. Between blocks we pause
    (``pause`` s) so that spinning worker threads of one runtime's pool (onnxruntime and TVM both
    spin after a parallel region) do not steal the cores of the next one: with 20 ms, the runtime
    timed right after onnxruntime at 2 threads measured up to 2x slow.
    Returns {name: (median wall ms, median CPU ms)}."""
    walls = {k: [] for k in fns}
    cpus = {k: [] for k in fns}
    spent = {k: 0.0 for k in fns}
    order = list(fns)
    shuffle = random.Random(0).shuffle  # no runtime always follows the same one
    rounds = max(1, (repeats + block - 1) // block)
    for r in range(rounds):
        shuffle(order)
        for k in order:
            if spent[k] > budgets.get(k, 20.0) and len(walls[k]) >= 3:
                continue
            time.sleep(pause)
            for _ in range(warmup if r == 0 else 1):
                fns[k]()
            for _ in range(block):
                c = time.process_time()
                t = time.perf_counter()
                fns[k]()
                dt = time.perf_counter() - t
                cpus[k].append(time.process_time() - c)
                walls[k].append(dt)
                spent[k] += dt
    return {k: (statistics.median(walls[k]) * 1e3, statistics.median(cpus[k]) * 1e3) for k in fns}


def _worker(cases, threads: int, repeats: int, warmup: int, stock: bool) -> dict:
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from edgeconv.exporters.tvm import compile_tvm, import_model

    dev = tvm.cpu()
    results = {}
    for name in cases:
        model, x = build_case(name)
        row = {}
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x}
        ref = sess.run(None, feed)[0]
        fns = {"ort": lambda: sess.run(None, feed)}

        xt = tvm.runtime.tensor(x, dev)
        for key, layout in (("edgeconv", "blocked"), ("edgeconv_nchw", "nchw")):
            t0 = time.perf_counter()
            compiled = compile_tvm(model, target="x86", layout=layout)
            row[key + "_compile_s"] = time.perf_counter() - t0
            out = compiled.vm["main"](xt).numpy()
            row[key + "_max_rel_err"] = max_rel_err(out, ref)
            fns[key] = functools.partial(compiled.vm["main"], xt)

        if stock:
            mod, _, _ = import_model(model)
            t0 = time.perf_counter()
            ex = tvm.compile(mod, target=tvm.target.Target(compiled.target), relax_pipeline="default")
            row["stock_compile_s"] = time.perf_counter() - t0
            svm = relax.VirtualMachine(ex, dev)
            svm["main"](xt)
            fns["stock"] = lambda: svm["main"](xt)
        timed = interleaved(fns, warmup, repeats, {"stock": 8.0})
        for k, (wall, cpu) in timed.items():
            row[k], row[k + "_cpu"] = wall, cpu
        results[name] = row
        print(f"[threads={threads}] {name}: " + ", ".join(
            f"{k}={v:.3f}" for k, v in row.items() if isinstance(v, float)), file=sys.stderr, flush=True)
    return results


# --------------------------------------------------------------------------- driver
def run(cases=None, threads=(1, 2), repeats: int = 50, warmup: int = 10, stock: bool = True,
        out: str | os.PathLike | None = "bench-results", plot: bool = True) -> dict:
    """Run the benchmark (one subprocess per thread count). Returns the result dict."""
    cases = list(cases or CASES)
    result = {
        "benchmark": "tvm",
        "machine": {"platform": platform.platform(), "processor": cpu_name(), "cores": os.cpu_count()},
        "repeats": repeats,
        "unit": "ms (median)",
        "threads": {},
    }
    for th in threads:
        env = dict(os.environ, TVM_NUM_THREADS=str(th), OMP_NUM_THREADS=str(th))
        cmd = [sys.executable, "-m", "edgeconv.bench.tvm", "--worker", "--threads", str(th),
               "--repeats", str(repeats), "--warmup", str(warmup), "--cases", *cases]
        if not stock:
            cmd.append("--no-stock")
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark worker (threads={th}) failed with code {proc.returncode}")
        rows = json.loads(proc.stdout.strip().splitlines()[-1])
        for row in rows.values():
            if "ort" in row and "edgeconv" in row:
                row["speedup_vs_ort"] = row["ort"] / row["edgeconv"]
            if "stock" in row and "edgeconv" in row:
                row["speedup_vs_stock"] = row["stock"] / row["edgeconv"]
            if row.get("edgeconv_cpu"):
                if row.get("ort_cpu"):
                    row["cpu_speedup_vs_ort"] = row["ort_cpu"] / row["edgeconv_cpu"]
                if row.get("stock_cpu"):
                    row["cpu_speedup_vs_stock"] = row["stock_cpu"] / row["edgeconv_cpu"]
        result["threads"][str(th)] = rows
    if out is not None:
        outdir = Path(out)
        outdir.mkdir(parents=True, exist_ok=True)
        (outdir / "tvm.json").write_text(json.dumps(result, indent=2))
        if plot:
            try:
                _plot(result, outdir / "tvm.png")
            except Exception as err:  # pragma: no cover - plotting is optional
                print(f"plot skipped: {err}", file=sys.stderr)
    return result


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def log_bars(ax, rows: dict, keys, title: str) -> None:
    """Grouped bars of ``rows[name][key]`` (ms) per row name, log scale."""
    names = list(rows)
    xs = np.arange(len(names))
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        vals = [rows[n].get(key, np.nan) for n in names]
        ax.bar(xs + (i - (len(keys) - 1) / 2) * width, vals, width, label=key)
    ax.set_yscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("ms (median, log)")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=len(keys))


def _plot(result: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = list(result["threads"])
    fig, axes = plt.subplots(1, len(threads), figsize=(6 * len(threads), 4.5), squeeze=False)
    for ax, th in zip(axes[0], threads):
        log_bars(ax, result["threads"][th], ("edgeconv", "edgeconv_nchw", "ort", "stock"), f"{th} thread(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(result: dict) -> str:
    lines = []
    nan = float("nan")
    hdr = (f"{'case':26s} {'thr':>3s} {'edgeconv':>9s} {'nchw':>9s} {'ort':>9s} {'stock':>9s} {'x ort':>6s}"
           f" {'x stock':>8s}"
           f" | {'cpu x ort':>9s} {'cpu x stock':>11s}")
    lines += ["wall-clock medians (ms); 'cpu' ratios use process CPU time (robust to other load)", hdr,
              "-" * len(hdr)]
    for th, rows in result["threads"].items():
        for name, r in rows.items():
            lines.append(
                f"{name:26s} {th:>3s} {r.get('edgeconv', nan):9.3f} {r.get('edgeconv_nchw', nan):9.3f} "
                f"{r.get('ort', nan):9.3f} "
                f"{r.get('stock', nan):9.3f} {r.get('speedup_vs_ort', nan):6.2f} "
                f"{r.get('speedup_vs_stock', nan):8.1f} | {r.get('cpu_speedup_vs_ort', nan):9.2f} "
                f"{r.get('cpu_speedup_vs_stock', nan):11.1f}"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeconv.bench tvm", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench-results", help="output directory (tvm.json, tvm.png)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--cases", nargs="+", default=None, help=f"subset of {CASES}")
    p.add_argument("--no-stock", action="store_true", help="skip TVM's stock pipeline")
    p.add_argument("--quick", action="store_true", help="tiny smoke run: one case, 1 thread, few repeats")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        res = _worker(a.cases or CASES, a.threads[0], a.repeats, a.warmup, not a.no_stock)
        print(json.dumps(res))
        return 0
    if a.quick:
        cases, threads, repeats, warmup = (a.cases or QUICK_CASES), [1], 5, 2
    else:
        cases, threads, repeats, warmup = (a.cases or CASES), a.threads, a.repeats, a.warmup
    result = run(cases, threads, repeats, warmup, not a.no_stock, a.out)
    print(format_table(result))
    print(f"wrote {Path(a.out) / 'tvm.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
