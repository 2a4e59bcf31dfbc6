"""The deployed runtimes as run functions over one artifact, and their timing in a fresh process.

:func:`open_backend` loads an artifact the way a deployment would (``model.onnx`` in
onnxruntime with or without the edgeconv kernel library, the compiled ``model_x86.so`` in TVM's
VM, an ONNX file in OpenVINO) and returns ``run(inputs) -> outputs``. The deploy stages use it for
parity in the pipeline's process and :func:`time_in_fresh_process` for latency and memory:

* **latency** at each thread count is measured in a fresh ``python -m edgeconv.deploy.worker``
  process per (backend, thread count): TVM's thread pool is sized at first use and cannot grow
  later, onnxruntime and OpenVINO fix theirs per session, and a fresh process also keeps one
  backend's allocations and threads from disturbing the next one;
* **peak memory** is that process's peak resident set size (``VmHWM`` of ``/proc/self/status``,
  the high-water mark of its own address space; ``ru_maxrss`` is not used because Linux carries
  the forking parent's peak over ``exec``) at the end of the timed runs, and its increase over
  the same process's peak after importing the runtime (and the edgeconv modules that open it)
  but before loading the model: what loading and running this model costs in this runtime.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

import numpy as np

__all__ = ["KINDS", "open_backend", "time_in_fresh_process", "openvino_config"]

#: backend kinds :func:`open_backend` knows
KINDS = ("ort", "ort-nolib", "tvm", "openvino")
#: what :func:`open_backend` imports per kind (imported before the worker's "before load" peak)
_IMPORTS = {"ort": ("onnxruntime", "edgeconv.exporters.onnx"), "ort-nolib": ("onnxruntime", "edgeconv.exporters.onnx"),
            "tvm": ("tvm", "tvm.relax", "edgeconv.exporters.tvm"), "openvino": ("openvino",)}


def openvino_config(threads: int) -> Dict[str, Any]:
    """OpenVINO CPU settings: ``threads`` inference threads, latency mode, float32 (on CPUs with
    bf16 units OpenVINO would otherwise run bf16 and lose parity)."""
    return {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}


def open_backend(kind: str, artifact: os.PathLike | str, threads: int) -> Callable[[Sequence[np.ndarray]], List[np.ndarray]]:
    """``run(inputs) -> outputs`` (numpy, graph order) of ``artifact`` in the runtime ``kind``."""
    from .measure import to_numpy_list

    path = str(artifact)
    if kind in ("ort", "ort-nolib"):
        from .stages import make_ort_session

        sess = make_ort_session(path, use_library=kind == "ort", threads=threads)
        names = [i.name for i in sess.get_inputs()]
        return lambda inputs: sess.run(None, dict(zip(names, inputs)))
    if kind == "tvm":
        import tvm
        from tvm import relax

        from edgeconv.exporters.tvm import set_num_threads

        set_num_threads(threads)
        vm = relax.VirtualMachine(tvm.runtime.load_module(path), tvm.cpu())

        def run_tvm(inputs):
            return to_numpy_list(vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a), tvm.cpu()) for a in inputs]))

        return run_tvm
    if kind == "openvino":
        import openvino as ov

        request = ov.Core().compile_model(path, "CPU", openvino_config(threads)).create_infer_request()

        def run_openvino(inputs):
            request.infer(dict(enumerate(inputs)))
            return [request.get_output_tensor(i).data.copy() for i in range(len(request.model_outputs))]

        return run_openvino
    raise ValueError(f"unknown backend kind {kind!r}; expected one of {', '.join(KINDS)}")


def time_in_fresh_process(kind: str, artifact: os.PathLike | str, inputs_npz: os.PathLike | str, threads: int,
                          repeats: int, warmup: int, timeout: float = 900.0) -> Dict[str, Any]:
    """Run the worker for ``kind`` on ``artifact`` at ``threads`` threads: ``{"samples_ms": [...],
    "rss_before_load_kb": ..., "rss_peak_kb": ...}`` (peak RSS, see the module docstring); ``RuntimeError`` with the worker's last
    stderr line if it fails."""
    spec = {"kind": kind, "artifact": str(artifact), "inputs": str(inputs_npz), "threads": int(threads),
            "repeats": int(repeats), "warmup": int(warmup)}
    env = dict(os.environ, TVM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-m", "edgeconv.deploy.worker", json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        err = [l for l in proc.stderr.strip().splitlines() if l.strip()]
        raise RuntimeError(f"{kind} timing worker ({threads} thread(s)) exited with code {proc.returncode}: "
                           + (err[-1] if err else "no output"))
    return json.loads(lines[-1])


def peak_rss_kb() -> int:
    """This process's peak resident set size in KiB: ``VmHWM`` (Linux), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    import importlib
    import time

    with np.load(spec["inputs"]) as npz:
        inputs = [npz[k] for k in sorted(npz.files, key=lambda k: int(k.split("_")[1]))]
    for module in _IMPORTS[spec["kind"]]:
        importlib.import_module(module)
    before = peak_rss_kb()
    run = open_backend(spec["kind"], spec["artifact"], spec["threads"])
    for _ in range(max(0, spec["warmup"])):
        run(inputs)
    samples = []
    for _ in range(max(1, spec["repeats"])):
        t0 = time.perf_counter()
        run(inputs)
        samples.append((time.perf_counter() - t0) * 1e3)
    peak = peak_rss_kb()
    return {"samples_ms": samples, "rss_before_load_kb": before, "rss_peak_kb": peak}


def kernel_profile(kind: str, artifact: os.PathLike | str, inputs: Sequence[np.ndarray], threads: int,
                   runs: int, workdir: os.PathLike | str) -> Dict[str, Any]:
    """Per-kernel time of ``artifact`` in the runtime's own profiler: ``{"runs", "sum_of_calls_ms",
    "kernels": [{"name", "kind", "calls", "ms"}] (ms per run, slowest first), "kinds": {kind:
    {"calls", "ms"}}}``. TVM: the VM's instrumentation (:func:`edgeconv.exporters.tvm.profile.profile_vm`);
    onnxruntime: its profiler's JSON trace (``SessionOptions.enable_profiling``), one row per node
    (``kind`` = op type; the fallback functions of ``ort-nolib`` are inlined into their nodes)."""
    if kind == "tvm":
        import tvm

        from edgeconv.exporters.tvm import set_num_threads
        from edgeconv.exporters.tvm.profile import profile_vm

        set_num_threads(threads)
        return profile_vm(tvm.runtime.load_module(str(artifact)), list(inputs), runs=runs).as_dict()
    if kind in ("ort", "ort-nolib"):
        return _ort_kernel_profile(kind, artifact, inputs, threads, runs, Path(workdir))
    raise ValueError(f"no kernel profiler for backend kind {kind!r}")


def _ort_kernel_profile(kind, artifact, inputs, threads, runs, workdir: Path) -> Dict[str, Any]:
    import statistics
    from collections import defaultdict

    from .stages import make_ort_session

    warmup = 2
    sess = make_ort_session(str(artifact), use_library=kind == "ort", threads=threads,
                            profile_prefix=str(workdir / f"{kind}_profile"))
    feeds = dict(zip([i.name for i in sess.get_inputs()], inputs))
    for _ in range(warmup + runs):
        sess.run(None, feeds)
    trace = Path(sess.end_profiling())
    try:
        events = json.loads(trace.read_text())
    finally:
        trace.unlink(missing_ok=True)
    durations: Dict[str, List[float]] = defaultdict(list)  # node -> microseconds per call
    op_type: Dict[str, str] = {}
    for ev in events:
        name = ev.get("name", "")
        if ev.get("cat") == "Node" and name.endswith("_kernel_time"):
            node = name[: -len("_kernel_time")]
            durations[node].append(float(ev.get("dur", 0)))
            op_type[node] = ev.get("args", {}).get("op_name", "?")
    kernels = []
    for node, durs in durations.items():
        calls = max(1, round(len(durs) / (warmup + runs)))
        kernels.append({"name": node, "kind": op_type[node], "calls": calls,
                        "ms": statistics.median(durs[-calls * runs:]) * calls / 1e3})
    kernels.sort(key=lambda k: -k["ms"])
    kinds: Dict[str, Dict[str, float]] = {}
    for k in kernels:
        d = kinds.setdefault(k["kind"], {"calls": 0, "ms": 0.0})
        d["calls"] += k["calls"]
        d["ms"] += k["ms"]
    kinds = dict(sorted(kinds.items(), key=lambda kv: -kv[1]["ms"]))
    return {"runs": runs, "sum_of_calls_ms": sum(k["ms"] for k in kernels), "kernels": kernels, "kinds": kinds}
