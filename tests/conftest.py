"""Fixtures shared by the CLI and deploy tests."""

from pathlib import Path

import pytest

from loopback import free_port as _free_port
from loopback import wait_port as _wait_port


@pytest.fixture
def tiny_model_file():
    """Path of a user's own model file (factories ``make`` and ``broken``)."""
    return Path(__file__).with_name("tiny_model.py")


@pytest.fixture
def rpc_tracker_two_servers():
    """``{"host", "port", "key"}`` of a TVM RPC tracker on loopback with two servers under the key
    (each its own process; stopped after the test)."""
    import subprocess
    import sys
    import time

    pytest.importorskip("tvm")
    for mod in ("cloudpickle", "psutil", "tornado"):
        pytest.importorskip(mod)

    def spawn(*args):
        return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    key = "edgeconv-tune-test"
    tport = _free_port()
    procs = [spawn("tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(tport), "--port-end", str(tport + 1))]
    try:
        _wait_port(procs[0], tport, "RPC tracker")
        for _ in range(2):
            sport = _free_port()
            procs.append(spawn("tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(sport),
                               "--port-end", str(sport + 1), "--tracker", f"127.0.0.1:{tport}", "--key", key))
            _wait_port(procs[-1], sport, "RPC server")
        from tvm import rpc

        deadline = time.time() + 60  # both servers registered with the tracker
        while (rpc.connect_tracker("127.0.0.1", tport).summary()["queue_info"].get(key) or {}).get("free", 0) < 2:
            if time.time() > deadline:
                pytest.skip("the RPC servers did not register with the tracker")
            time.sleep(0.5)
        yield {"host": "127.0.0.1", "port": tport, "key": key}
    finally:
        for proc in reversed(procs):
            proc.kill()
            proc.wait(timeout=30)
