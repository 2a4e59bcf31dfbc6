"""Latency of the "bring your own model" exports in onnxruntime (numbers of the README note).

* timm ``efficientnet_cc_b0_4e``: ``edgeconv.convert`` + dynamic batch (``edgeconv.DynamicConv2d``,
  our kernels) vs the unconverted model exported with ``dynamic_batch=False`` (plain Conv, the
  batch baked in), and the converted model without the kernel library (fallback functions);
* the torchvision DCN model of ``tests/thirdparty/byom_models.py``: onnxruntime's own
  ``DeformConv`` (``deform="standard"``) vs ``edgeconv.DeformConv2d`` with our kernels.

Each thread count runs in a fresh process; variants are timed interleaved
(:func:`edgeconv.bench.tvm.interleaved`). Usage: ``python scripts/bench_byom.py [repeats] [before_lib]``;
``before_lib``, another build of libedgeconv_ort (e.g. main's), adds the converted model run with it
(timed in the same process: the library exports only RegisterCustomOps, two builds do not clash).
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _session_with_library(path: Path, threads: int, lib: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.register_custom_ops_library(lib)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def worker(threads: int, repeats: int, before_lib: str | None = None) -> dict:
    sys.path.insert(0, str(ROOT / "tests" / "thirdparty"))
    import byom_models
    import torch

    import edgeconv
    from edgeconv.bench.tvm import interleaved, max_rel_err

    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    tmp = Path(tempfile.mkdtemp())
    cc = byom_models.efficientnet_cc(convert=False)
    dcn = byom_models.dcn()
    exports = {
        "cc dynamic (edgeconv.DynamicConv2d)": (cc, edgeconv.convert(cc), {}, "require"),
        "cc dynamic, no kernel library": (cc, edgeconv.convert(cc), {}, False),
        **({"cc dynamic, before_lib": (cc, edgeconv.convert(cc), {}, before_lib)} if before_lib else {}),
        "cc static batch (plain Conv)": (cc, cc, {"dynamic_batch": False}, False),
        "dcn ORT DeformConv (deform=standard)": (dcn, dcn, {"deform": "standard"}, False),
        "dcn edgeconv.DeformConv2d": (dcn, dcn, {}, "require"),
    }
    fns, errs = {}, {}
    for i, (name, (ref_model, model, kwargs, lib)) in enumerate(exports.items()):
        path = tmp / f"m{i}.onnx"
        edgeconv.export_onnx(model, (x,), path, **kwargs)
        if lib in (False, "require"):
            sess = edgeconv.ort_session(str(path), threads=threads, custom_ops=lib)
        else:  # a library file
            sess = _session_with_library(path, threads, lib)
        feeds = {sess.get_inputs()[0].name: x.numpy()}
        with torch.no_grad():
            errs[name] = max_rel_err(sess.run(None, feeds)[0], ref_model(x).numpy())
        fns[name] = lambda s=sess, f=feeds: s.run(None, f)
    times = interleaved(fns, warmup=3, repeats=repeats, budgets={k: 60.0 for k in fns})
    return {k: {"median_ms": times[k][0], "max_rel_err": errs[k]} for k in fns}


def main() -> int:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    before = sys.argv[2:3]
    results = {}
    for threads in (1, 2):
        out = subprocess.run([sys.executable, __file__, "--worker", str(threads), str(repeats), *before],
                             capture_output=True, text=True, check=True)
        results[threads] = json.loads(out.stdout.strip().splitlines()[-1])
    names = list(results[1])
    print(f"| model / export | 1 thread (ms) | 2 threads (ms) | max rel err |\n|---|---|---|---|")
    for n in names:
        print(f"| {n} | {results[1][n]['median_ms']:.2f} | {results[2][n]['median_ms']:.2f} | "
              f"{max(results[1][n]['max_rel_err'], results[2][n]['max_rel_err']):.1e} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:5])))
        sys.exit(0)
    sys.exit(main())
