"""Run a compiled library on a TVM RPC device (a server, or a device key behind a tracker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence

import numpy as np

__all__ = ["rpc_connect", "run_rpc"]


def rpc_connect(rpc: Dict[str, Any], timeout: int = 60):
    """``tvm.rpc`` session for ``{"host", "port", "key"}`` (key -> via a tracker)."""
    from tvm import rpc as tvm_rpc

    if rpc.get("key"):
        tracker = tvm_rpc.connect_tracker(rpc["host"], int(rpc["port"]))
        return tracker.request(rpc["key"], priority=1, session_timeout=timeout)
    return tvm_rpc.connect(rpc["host"], int(rpc["port"]), session_timeout=timeout)


def run_rpc(lib_path, rpc: Dict[str, Any], inputs: Sequence[np.ndarray], repeats: int = 10,
            number: int = 1) -> Dict[str, Any]:
    """Upload ``lib_path`` to the RPC device, load it in a Relax VM, run and time ``main``.

    Returns ``{"outputs": [np.ndarray], "latency": summarize_ms(...)}``; the latency comes from
    the remote ``time_evaluator`` (device-side timing, no network in the measurement).
    """
    import tvm
    from tvm import relax

    from edgeconv.deploy.measure import summarize_ms, to_numpy_list

    remote = rpc_connect(rpc)
    remote.upload(str(lib_path))
    rlib = remote.load_module(Path(lib_path).name)
    dev = remote.cpu()
    vm = relax.VirtualMachine(rlib, dev)
    args = [tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in inputs]
    outputs = to_numpy_list(vm["main"](*args))
    vm.set_input("main", *args)
    timer = vm.time_evaluator("invoke_stateful", dev, number=number, repeat=max(1, repeats))
    res = timer("main")
    return {"outputs": outputs, "latency": summarize_ms([t * 1e3 for t in res.results])}
