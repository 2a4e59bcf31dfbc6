"""Real-model benchmark (``python -m edgeconv.bench models``, also ``edgeconv bench models``).

Third-party architectures from ``pytorchcv`` (a pure-PyTorch zoo, random weights, 1x3x224x224)
plus our zoo's ``edgenet`` and ``dcn_resnet18``; each model is exported once with
``edgeconv.export_onnx`` and run, on the same seeded input, by

* ``edgeconv``: ``compile_tvm(model, "x86", input_shapes=...)`` (our pipeline, no tuning),
* ``ort``: onnxruntime CPU with the edgeconv kernel library (``intra_op_num_threads``),
* ``openvino``: OpenVINO CPU (``INFERENCE_NUM_THREADS``, ``PERFORMANCE_HINT=LATENCY``, float32 precision,
  static shape),
* ``stock``: ``tvm.compile(..., relax_pipeline="default")`` (TVM's generic lowering; slow: its
  time budget is capped, skip it with ``--no-stock``).

Every (thread count, model) runs in its own subprocess: TVM's pool reads ``TVM_NUM_THREADS`` on
first use and a crash of one runtime loses one row only. The runtimes are timed interleaved in
seeded shuffled blocks with pauses (``edgeconv.bench.tvm.interleaved``); medians of wall time,
compile times, and parity ``max|out - torch| / max|torch|`` per backend. Writes ``models.json``
and ``models.png`` into ``--out`` and prints the table with geometric means.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgeconv.bench.tvm import cpu_name, interleaved
from edgeconv.deploy.measure import max_rel_err
from edgeconv.opdefs import DOMAIN

# benchmark name -> pytorchcv module (``pytorchcv.models.<module>.<name>``)
PYTORCHCV = {
    "mobilenetv2_w1": "mobilenetv2",
    "mobilenetv3_small_w1": "mobilenetv3",
    "mobilenetv3_large_w1": "mobilenetv3",
    "shufflenetv2_w1": "shufflenetv2",
    "mixnet_s": "mixnet",
    "ghostnet": "ghostnet",
    "regnetx002": "regnet",
    "resnet18": "resnet",
    "mnasnet_b1": "mnasnet",
    "efficientnet_b0": "efficientnet",
}
ZOO = ("edgenet", "dcn_resnet18")
MODELS = (*PYTORCHCV, *ZOO)
BACKENDS = ("edgeconv", "ort", "openvino", "stock")
PYTORCHCV_INPUT = (1, 3, 224, 224)


def resolve_bench_model(spec: str, input_shape=None):
    """``(model in eval mode, input shape, name)`` for a pytorchcv name (``mixnet_s`` or
    ``pytorchcv:mixnet_s``), else what ``edgeconv.cli.resolve_model`` resolves. Weights are the
    seeded random initialisation (no downloads)."""
    import torch

    name = spec.split(":", 1)[1] if spec.startswith("pytorchcv:") else spec
    if name not in PYTORCHCV:
        if spec.startswith("pytorchcv:"):
            from edgeconv.cli import CLIError

            raise CLIError(f"unknown pytorchcv model {name!r}; benchmarked ones: {', '.join(PYTORCHCV)}")
        from edgeconv.cli import resolve_model

        torch.manual_seed(0)
        return resolve_model(spec, input_shape)
    try:
        module = importlib.import_module(f"pytorchcv.models.{PYTORCHCV[name]}")
    except ImportError as exc:
        from edgeconv.cli import CLIError

        raise CLIError(f"pytorchcv is not installed ({exc}); run `make setup`") from exc
    torch.manual_seed(0)
    shape = tuple(input_shape) if input_shape else PYTORCHCV_INPUT
    kwargs = {"in_size": tuple(shape[2:])} if input_shape else {}
    model = getattr(module, name)(pretrained=False, **kwargs)
    return model.eval(), shape, name


# --------------------------------------------------------------------------- one model, one process
def _setup_backends(proto, path: str, shape, x, threads: int, backends, row: dict) -> dict:
    """Build every backend; return {backend: zero-argument run function}. Failures go into ``row``."""
    fns = {}

    def _try(key, build):
        t0 = time.perf_counter()
        try:
            fn, out = build()
        except Exception as exc:  # one failing runtime must not lose the others' numbers
            row[key + "_error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]
            return
        row[key + "_compile_s"] = time.perf_counter() - t0
        row[key + "_rel_err"] = max_rel_err(out, row["_ref"])
        fns[key] = fn

    in_name = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}][0]

    def _ort():
        from edgeconv.exporters.onnx import ort_session

        custom = any(n.domain == DOMAIN for n in proto.graph.node)
        sess = ort_session(path, threads=threads, custom_ops="require" if custom else False)
        feed = {in_name: x}
        return (lambda: sess.run(None, feed)), sess.run(None, feed)[0]

    def _tvm(pipeline):
        def build():
            import tvm

            from edgeconv.exporters.tvm import compile_tvm

            compiled = compile_tvm(proto, "x86", input_shapes={in_name: list(shape)}, pipeline=pipeline)
            vm, xt = compiled.vm, tvm.runtime.tensor(x, tvm.cpu())
            return (lambda: vm["main"](xt)), vm["main"](xt).numpy()

        return build

    def _openvino():
        import openvino as ov

        from edgeconv.deploy.backends import openvino_config
        from edgeconv.exporters.onnx import standard_op_model

        core = ov.Core()
        # OpenVINO does not know the edgeconv domain: give it the standard-op form TVM gets too
        src = proto if not any(n.domain == DOMAIN for n in proto.graph.node) else standard_op_model(proto)
        model = core.read_model(src.SerializeToString(), b"") if src is not proto else core.read_model(path)
        model.reshape({model.inputs[0].any_name: list(shape)})
        compiled = core.compile_model(model, "CPU", openvino_config(threads))
        req = compiled.create_infer_request()
        req.infer({0: x})
        return (lambda: req.infer({0: x})), req.get_output_tensor(0).data.copy()

    builders = {"ort": _ort, "edgeconv": _tvm("edgeconv"), "stock": _tvm("stock"), "openvino": _openvino}
    for key in backends:
        _try(key, builders[key])
    return fns


def _worker(name: str, threads: int, repeats: int, warmup: int, backends) -> dict:
    import tempfile

    import onnx
    import torch

    from edgeconv.exporters.onnx import export_onnx

    torch.set_num_threads(threads)
    model, shape, name = resolve_bench_model(name)
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    row = {"input_shape": list(shape), "_ref": ref}
    with tempfile.TemporaryDirectory(prefix="edgeconv-bench-models-") as tmp:
        path = str(Path(tmp) / "model.onnx")
        t0 = time.perf_counter()
        export_onnx(model, (torch.from_numpy(x),), path)
        row["export_s"] = time.perf_counter() - t0
        proto = onnx.load(path)
        fns = _setup_backends(proto, path, shape, x, threads, backends, row)
        # stock TVM takes 0.05-2.5 s per run: cap its time, the others get the full repeats
        timed = interleaved(fns, warmup, repeats, {"stock": 6.0}) if fns else {}
    del row["_ref"]
    for key, (wall, cpu) in timed.items():
        row[key], row[key + "_cpu"] = wall, cpu
    return row


# --------------------------------------------------------------------------- driver
def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def geomean(values) -> float:
    vals = [v for v in values if v and v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, vals)) / len(vals)) if vals else float("nan")


def summarize(result: dict) -> dict:
    """Geometric means of ``backend / edgeconv`` over the pytorchcv models, per thread count."""
    out = {}
    for th, rows in result["threads"].items():
        out[th] = {}
        for other in ("ort", "openvino", "stock"):
            ratios = [r[other] / r["edgeconv"] for n, r in rows.items()
                      if n in PYTORCHCV and r.get(other) and r.get("edgeconv")]
            if ratios:
                out[th][f"edgeconv_vs_{other}_geomean"] = geomean(ratios)
                out[th][f"edgeconv_vs_{other}_min"] = min(ratios)
                out[th][f"edgeconv_vs_{other}_models"] = len(ratios)
    return out


def run(models=MODELS, threads=(1, 2), repeats: int = 30, warmup: int = 5, backends=BACKENDS,
        out: str | os.PathLike | None = "bench-results", plot: bool = True) -> dict:

    result = {
        "benchmark": "models",
        "machine": {"platform": platform.platform(), "processor": cpu_name(), "cores": os.cpu_count()},
        "load_before": _load(),
        "repeats": repeats,
        "backends": list(backends),
        "unit": "ms (median wall time, batch 1, float32)",
        "threads": {},
    }
    for th in threads:
        rows = result["threads"].setdefault(str(th), {})
        for name in models:
            env = dict(os.environ, TVM_NUM_THREADS=str(th), OMP_NUM_THREADS=str(th))
            cmd = [sys.executable, "-m", "edgeconv.bench.models", "--worker", name, "--threads", str(th),
                   "--repeats", str(repeats), "--warmup", str(warmup), "--backends", *backends]
            proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
            lines = proc.stdout.strip().splitlines()
            if proc.returncode != 0 or not lines:
                rows[name] = {"error": f"worker exited with code {proc.returncode}"}
            else:
                rows[name] = json.loads(lines[-1])
            print(f"[threads={th}] {name}: " + ", ".join(
                f"{k}={v:.3g}" for k, v in rows[name].items() if isinstance(v, float) and not k.endswith("_cpu")),
                file=sys.stderr, flush=True)
    result["load_after"] = _load()
    result["summary"] = summarize(result)
    if out is not None:
        outdir = Path(out)
        outdir.mkdir(parents=True, exist_ok=True)
        (outdir / "models.json").write_text(json.dumps(result, indent=2))
        if plot:
            _plot(result, outdir / "models.png")
    return result


def _plot(result: dict, path: Path):
    import matplotlib

    from edgeconv.bench.tvm import log_bars

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = list(result["threads"])
    fig, axes = plt.subplots(len(threads), 1, figsize=(12, 4.2 * len(threads)), squeeze=False)
    keys = [k for k in BACKENDS if k in result["backends"]]
    for ax, th in zip(axes[:, 0], threads):
        log_bars(ax, result["threads"][th], keys, f"batch 1, float32, {th} thread(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(result: dict) -> str:
    nan = float("nan")
    keys = [k for k in BACKENDS if k in result["backends"]]
    hdr = f"{'model':22s} {'thr':>3s} " + " ".join(f"{k:>9s}" for k in keys) + \
        "  " + " ".join(f"{'x ' + k:>10s}" for k in keys if k != "edgeconv") + f" {'compile s':>9s} {'max rel err':>11s}"
    lines = ["median wall ms; 'x B' = B / edgeconv (>1: edgeconv faster)", hdr, "-" * len(hdr)]
    for th, rows in result["threads"].items():
        for name, r in rows.items():
            ed = r.get("edgeconv", nan)
            errs = [r[k + "_rel_err"] for k in keys if k + "_rel_err" in r]
            lines.append(f"{name:22s} {th:>3s} " + " ".join(f"{r.get(k, nan):9.2f}" for k in keys) + "  " +
                         " ".join(f"{r.get(k, nan) / ed:10.2f}" for k in keys if k != "edgeconv") +
                         f" {r.get('edgeconv_compile_s', nan):9.1f} {max(errs) if errs else nan:11.1e}")
            for k in keys:
                if k + "_error" in r:
                    lines.append(f"    {k} failed: {r[k + '_error']}")
            if "error" in r:
                lines.append(f"    {r['error']}")
    for th, s in result.get("summary", {}).items():
        lines.append(f"geomean over pytorchcv models, {th} thread(s): " + ", ".join(
            f"edgeconv vs {o} {s[f'edgeconv_vs_{o}_geomean']:.2f}x (min {s[f'edgeconv_vs_{o}_min']:.2f}x, "
            f"{s[f'edgeconv_vs_{o}_models']} models)" for o in ("ort", "openvino", "stock") if f"edgeconv_vs_{o}_geomean" in s))
    lines.append(f"load average before {result.get('load_before')}, after {result.get('load_after')}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeconv.bench models", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=None, metavar="NAME", help=f"subset of {' '.join(MODELS)}")
    p.add_argument("--backends", nargs="+", default=None, metavar="B", help=f"subset of {' '.join(BACKENDS)}")
    p.add_argument("--no-stock", action="store_true", help="skip TVM's stock pipeline (slow to run)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", default="bench-results", help="output directory (models.json, models.png)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    backends = a.backends or list(BACKENDS)
    bad = [b for b in backends if b not in BACKENDS] + [m for m in (a.models or []) if m not in MODELS]
    if bad or min(a.threads) < 1 or a.repeats < 1:
        p.error(f"unknown models/backends {bad}" if bad else "threads and repeats must be positive")
    if a.no_stock:
        backends = [b for b in backends if b != "stock"]
    if a.worker:
        print(json.dumps(_worker(a.worker, a.threads[0], a.repeats, a.warmup, backends)))
        return 0
    result = run(a.models or MODELS, a.threads, a.repeats, a.warmup, backends, a.out)
    print(format_table(result))
    print(f"wrote {Path(a.out) / 'models.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
