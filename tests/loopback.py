"""Loopback services for the RPC tests (TVM RPC trackers and servers started as processes)."""

import socket
import time

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(proc, port: int, what: str) -> None:
    """Return once ``port`` accepts connections; skip the test if ``proc`` exits or never listens."""
    deadline = time.time() + 120
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None:
            pytest.skip(f"{what} exited: {proc.stdout.read().decode(errors='replace')[-500:]}")
        time.sleep(0.3)
    proc.kill()
    pytest.skip(f"{what} did not start")
