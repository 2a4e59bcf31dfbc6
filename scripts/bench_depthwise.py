"""Latency of one depthwise ``edgeconv.DynamicConv2d`` layer (K experts, W and B initializers,
as exported from a CondConv model) in onnxruntime:

* ``edgeconv kernels``: libedgeconv_ort (the package's library, or ``--lib PATH``);
* ``before`` (with ``--before PATH``): another build of the library, e.g. main's, timed in the
  same process (the library exports only RegisterCustomOps: two builds do not clash);
* ``fallback``: stock onnxruntime running the decomposed fallback function (no library);
* ``plain Conv``: onnxruntime's own depthwise Conv of the same shape with one fixed weight, a
  lower bound (no mixing, no per-sample weights).

Each thread count runs in a fresh process; variants are timed interleaved
(:func:`edgeconv.bench.tvm.interleaved`). Usage:
``python scripts/bench_depthwise.py [--before LIB] [--lib LIB] [--repeats 50]``.
"""

import argparse
import json
import subprocess
import sys

import numpy as np

# N, C, H, W, kernel, stride, experts
SHAPES = [(1, 672, 14, 14, 5, 1, 4), (1, 144, 56, 56, 3, 1, 4)]


def _models(N, C, H, W, k, s, K):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeconv.exporters.onnx import fallbacks, register_schemas

    rng = np.random.default_rng(0)
    p = k // 2
    attrs = dict(strides=[s, s], pads=[p, p, p, p], dilations=[1, 1], group=C)
    wk = rng.standard_normal((K, C, 1, k, k), dtype=np.float32)
    bk = rng.standard_normal((K, C), dtype=np.float32)

    def model(node, inputs, inits, opsets):
        vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs]
        graph = helper.make_graph([node], "g", vi, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                                  initializer=[numpy_helper.from_array(v, n) for n, v in inits.items()])
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
        m.ir_version = 9
        return m

    register_schemas()
    dyn = model(helper.make_node("DynamicConv2d", ["X", "W", "attention", "B"], ["Y"], domain="edgeconv", **attrs),
                ["X", "attention"], {"W": wk, "B": bk}, [("", 20), ("edgeconv", 1)])
    with_fallback = onnx.ModelProto()
    with_fallback.CopyFrom(dyn)
    with_fallback.functions.append(fallbacks.dynamic_decomposed_function(20, True))
    conv = model(helper.make_node("Conv", ["X", "W", "B"], ["Y"], **attrs), ["X"], {"W": wk[0], "B": bk[0]},
                 [("", 20)])
    feeds = {"X": rng.standard_normal((N, C, H, W), dtype=np.float32),
             "attention": rng.dirichlet(np.ones(K), size=N).astype(np.float32)}
    return dyn, with_fallback, conv, feeds


def _session(model, threads, lib=None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if lib:
        so.register_custom_ops_library(lib)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def worker(threads: int, repeats: int, lib: str, before: str | None) -> dict:
    from edgeconv.bench.tvm import interleaved

    out = {}
    for shape in SHAPES:
        dyn, with_fallback, conv, feeds = _models(*shape)
        sessions = {"edgeconv kernels": (_session(dyn, threads, lib), feeds)}
        if before:
            sessions["before"] = (_session(dyn, threads, before), feeds)
        sessions["fallback (stock ORT)"] = (_session(with_fallback, threads), feeds)
        sessions["plain depthwise Conv"] = (_session(conv, threads), {"X": feeds["X"]})
        ref = sessions["fallback (stock ORT)"][0].run(None, feeds)[0]
        for name in ("edgeconv kernels", "before"):
            if name in sessions:
                y = sessions[name][0].run(None, feeds)[0]
                assert np.allclose(y, ref, rtol=1e-4, atol=1e-3), f"{name} disagrees with the fallback"
        fns = {k: (lambda s=s, f=f: s.run(None, f)) for k, (s, f) in sessions.items()}
        times = interleaved(fns, warmup=5, repeats=repeats, budgets={k: 30.0 for k in fns})
        out["{}x{}x{}x{} {}x{} s{} K={}".format(*shape[:5], *shape[4:])] = {k: times[k][0] for k in fns}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", help="library to time (default: the package's)")
    ap.add_argument("--before", help="a second library build to time alongside")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.lib is None:
        from edgeconv._library import get_library_path

        args.lib = get_library_path()
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeats, args.lib, args.before)))
        return 0
    results = {}
    for threads in (1, 2):
        cmd = [sys.executable, __file__, "--worker", str(threads), "--repeats", str(args.repeats), "--lib", args.lib]
        if args.before:
            cmd += ["--before", args.before]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[threads] = json.loads(out.stdout.strip().splitlines()[-1])
    print("| layer | variant | 1 thread (ms) | 2 threads (ms) |\n|---|---|---|---|")
    for layer, variants in results[1].items():
        for v, ms in variants.items():
            print(f"| {layer} | {v} | {ms:.3f} | {results[2][layer][v]:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
