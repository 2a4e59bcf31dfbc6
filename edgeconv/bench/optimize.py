"""``python -m edgeconv.bench optimize``: onnxruntime's own deformable convolution vs ours after
:func:`edgeconv.optimize_onnx`, on files built with ``onnx.helper``.

Two files of the same layer (default 1x64x56x56, 3x3, 64 -> 64, stride 1, pad 1, offset groups 1,
mask and bias; W and B initializers, X/offset/mask graph inputs):

* ``standard``: ONNX ``DeformConv`` (opset 19). Runtimes: stock onnxruntime on the file as is
  (its built-in ``DeformConv``), and the optimized file with the edgeconv kernels;
* ``mmdeploy``: ``mmdeploy::MMCVModulatedDeformConv2d`` (opset 11, mmdeploy's default). Stock
  onnxruntime cannot run it (mmdeploy's kernel library is not a Python package); after optimize it
  runs with our kernels, or on stock onnxruntime through the fallback function (decomposed
  body: the file is opset 11).

Each thread count runs in a fresh process; runtimes are timed in shuffled, alternating blocks
(:func:`edgeconv.bench.tvm.interleaved`): medians of wall time and of process CPU time (all
threads; at 1 thread the figure that load from other processes on a shared machine hardly moves).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

import numpy as np


def build_files(n=1, c=64, hw=56, o=64, k=3, og=1, seed=0):
    """-> (standard DeformConv model, mmdeploy model, feeds)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    feeds = {
        "X": rng.standard_normal((n, c, hw, hw), dtype=np.float32),
        "offset": rng.standard_normal((n, og * 2 * k * k, hw, hw), dtype=np.float32),
        "mask": rng.random((n, og * k * k, hw, hw), dtype=np.float32),
    }
    inits = [numpy_helper.from_array((0.05 * rng.standard_normal((o, c, k, k))).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(o, dtype=np.float32), "B")]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(v.shape)) for name, v in feeds.items()]
    out = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, o, hw, hw])]
    p = k // 2

    def model(node, opsets):
        m = helper.make_model(helper.make_graph([node], "g", inputs, out, inits),
                              opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
        m.ir_version = 9
        onnx.checker.check_model(m)
        return m

    std = model(helper.make_node("DeformConv", ["X", "W", "offset", "B", "mask"], ["Y"], pads=[p] * 4,
                                 offset_group=og), [("", 19)])
    mm = model(helper.make_node("MMCVModulatedDeformConv2d", ["X", "offset", "mask", "W", "B"], ["Y"],
                                domain="mmdeploy", stride=[1, 1], padding=[p, p], dilation=[1, 1], groups=1,
                                deform_groups=og), [("", 11), ("mmdeploy", 1)])
    return std, mm, feeds


def _worker(threads: int, repeats: int, warmup: int) -> dict:
    from edgeconv.bench.tvm import interleaved, max_rel_err
    from edgeconv.exporters.onnx import optimize_onnx, ort_session

    std, mm, feeds = build_files()
    sessions = {
        "standard: onnxruntime DeformConv": ort_session(std, threads, custom_ops=False),
        "standard: ours after optimize": ort_session(optimize_onnx(std), threads, custom_ops="require"),
        "mmdeploy: ours after optimize": ort_session(optimize_onnx(mm), threads, custom_ops="require"),
        "mmdeploy: fallback on stock onnxruntime": ort_session(optimize_onnx(mm), threads, custom_ops=False),
    }
    ref = sessions["standard: onnxruntime DeformConv"].run(None, feeds)[0]
    row = {"max_rel_err": {k: max_rel_err(s.run(None, feeds)[0], ref) for k, s in sessions.items()}}
    fns = {k: (lambda s=s: s.run(None, feeds)) for k, s in sessions.items()}
    timed = interleaved(fns, warmup, repeats, {k: 30.0 for k in fns})
    row["median_ms"] = {k: wall for k, (wall, _) in timed.items()}
    row["median_cpu_ms"] = {k: cpu for k, (_, cpu) in timed.items()}  # process CPU, all threads
    return row


def run(threads=(1, 2), repeats: int = 50, warmup: int = 5) -> dict:
    from edgeconv.bench.tvm import cpu_name

    import onnxruntime

    result = {"benchmark": "optimize", "layer": "1x64x56x56, 3x3, 64->64, offset groups 1, mask, bias",
              "machine": {"platform": platform.platform(), "processor": cpu_name(), "cores": os.cpu_count()},
              "onnxruntime": onnxruntime.__version__, "repeats": repeats,
              "unit": "ms (median wall, median process CPU)", "threads": {}}
    for t in threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(t))
        cmd = [sys.executable, "-m", "edgeconv.bench.optimize", "--worker", str(t),
               "--repeats", str(repeats), "--warmup", str(warmup)]
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
        result["threads"][str(t)] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def format_table(result: dict) -> str:
    threads = list(result["threads"])
    names = list(next(iter(result["threads"].values()))["median_ms"])
    lines = ["| file: runtime | " + " | ".join(f"{t} thread{'s' if t != '1' else ''}: wall / CPU (ms)" for t in threads)
             + " | max rel err vs ORT DeformConv |", "|---|" + "---:|" * len(threads) + "---:|"]
    for n in names:
        cells = [f"{result['threads'][t]['median_ms'][n]:.2f} / {result['threads'][t]['median_cpu_ms'][n]:.2f}"
                 for t in threads]
        err = max(result["threads"][t]["max_rel_err"][n] for t in threads)
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {err:.1e} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeconv.bench optimize", description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the result to this file")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(_worker(args.worker, args.repeats, args.warmup)))
        return 0
    result = run(args.threads, args.repeats, args.warmup)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
