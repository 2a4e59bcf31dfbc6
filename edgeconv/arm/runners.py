"""Cross builds (aarch64) of the runners and of the custom-op library, and emulated runs.

* :func:`build_runners` builds ``runners/`` (``ort_runner``, ``tvm_runner``) with
  ``cmake/aarch64-linux-gnu.cmake``.
* :func:`build_kernels` builds ``custom_ops/`` (``libedgeconv_ort.so``) for aarch64 with the same
  toolchain file (``EDGECONV_ARM_KERNEL_LIBRARY`` names a prebuilt one instead).
* :func:`run_ort` / :func:`run_tvm` run them under ``qemu-aarch64`` on numpy inputs (exchanged
  as ``.npy`` files) and return the outputs, wall time and the runner's own timings.

Builds go to ``EDGECONV_ARM_BUILD_DIR``, else ``<repo>/build/arm`` (source checkout), else
``<cache>/aarch64/build/<hash of the source path>`` (an installed wheel's sources); they are
incremental and guarded by a file lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .toolchain import (
    PACKAGED_SOURCE,
    ArmToolError,
    cache_dir,
    file_lock,
    find_tools,
    ort_include_dir,
    qemu_sysroot,
    repo_root,
    runtime_dir,
)

__all__ = [
    "RunnerPaths",
    "RunResult",
    "build_dir",
    "build_runners",
    "build_kernels",
    "run_ort",
    "run_tvm",
    "qemu_command",
]

KERNEL_LIBRARY_ENV = "EDGECONV_ARM_KERNEL_LIBRARY"
DEFAULT_TIMEOUT = 900.0


@dataclass(frozen=True)
class RunnerPaths:
    ort_runner: Path
    tvm_runner: Path
    runtime: Path  # fetched aarch64 runtime dir (lib/, include/)

    @property
    def ort_library(self) -> Path:
        return self.runtime / "lib" / "libonnxruntime.so"


@dataclass
class RunResult:
    """One emulated run."""

    backend: str                       # "ort" or "tvm"
    outputs: list[np.ndarray]
    wall_s: float                      # wall time of the whole qemu process
    load_ms: float                     # runner-reported: library/session/module load
    run_ms: list[float]                # runner-reported: each inference
    command: str                       # the shell-quoted command line
    info: dict = field(default_factory=dict)  # the runner's JSON summary


def build_dir() -> Path:
    env = os.environ.get("EDGECONV_ARM_BUILD_DIR")
    if env:
        return Path(env)
    root = repo_root()
    if root is not None and root != PACKAGED_SOURCE and os.access(root, os.W_OK):
        return root / "build" / "arm"
    # one build tree per source tree: a CMake build directory is bound to its source directory,
    # and every installed wheel (each venv) has its own copy of the sources
    key = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return cache_dir() / "aarch64" / "build" / key


def _newest_mtime(paths) -> float:
    newest = 0.0
    for p in paths:
        p = Path(p)
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
        for f in files:
            newest = max(newest, f.stat().st_mtime)
    return newest


def _up_to_date(outputs: list[Path], sources: list[Path]) -> bool:
    if not all(o.is_file() for o in outputs):
        return False
    return min(o.stat().st_mtime for o in outputs) >= _newest_mtime(sources)


def _run_logged(cmd: list[str], commands: list[str] | None, what: str, cwd=None, timeout=None) -> str:
    if commands is not None:
        commands.append(shlex.join(cmd))
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout)
    if p.returncode != 0:
        tail = (p.stdout[-3000:] + "\n" + p.stderr[-5000:]).strip()
        raise RuntimeError(f"{what} failed (exit {p.returncode}): {shlex.join(cmd)}\n{tail}")
    return p.stdout


def _cmake_build(src: Path, bdir: Path, defines: dict[str, str], commands, what: str) -> None:
    tools = find_tools(need_qemu=False)
    root = repo_root()
    toolchain = root / "cmake" / "aarch64-linux-gnu.cmake"
    jobs = os.environ.get("EDGECONV_BUILD_JOBS", "2")
    if not (bdir / "CMakeCache.txt").is_file():
        cmd = [tools.cmake, "-S", str(src), "-B", str(bdir), f"-DCMAKE_TOOLCHAIN_FILE={toolchain}",
               "-DCMAKE_BUILD_TYPE=Release"] + [f"-D{k}={v}" for k, v in defines.items()]
        _run_logged(cmd, commands, f"configuring {what}")
    _run_logged([tools.cmake, "--build", str(bdir), "-j", jobs], commands, f"building {what}")


def _require_source() -> Path:
    root = repo_root()
    if root is None:
        raise ArmToolError("the edgeconv source tree (runners/, custom_ops/, cmake/) was not found; "
                           "set EDGECONV_SOURCE_DIR to a checkout")
    return root


def build_runners(*, commands: list[str] | None = None, force: bool = False) -> RunnerPaths:
    """Cross-build ``ort_runner`` and ``tvm_runner`` for aarch64 (incremental)."""
    root = _require_source()
    rt = runtime_dir(commands=commands)
    inc = ort_include_dir(commands=commands)
    bdir = build_dir() / "runners"
    paths = RunnerPaths(bdir / "ort_runner", bdir / "tvm_runner", rt)
    sources = [root / "runners", root / "cmake"]
    with file_lock(build_dir() / ".runners.lock"):
        if force or not _up_to_date([paths.ort_runner, paths.tvm_runner], sources):
            _cmake_build(root / "runners", bdir,
                         {"EDGECONV_ORT_INCLUDE_DIR": str(inc), "EDGECONV_ARM_RUNTIME_DIR": str(rt)},
                         commands, "the aarch64 runners")
    return paths


def build_kernels(*, commands: list[str] | None = None, force: bool = False) -> Path:
    """The aarch64 ``libedgeconv_ort.so``: ``EDGECONV_ARM_KERNEL_LIBRARY`` if set, else a cross
    build of ``custom_ops/`` (incremental)."""
    env = os.environ.get(KERNEL_LIBRARY_ENV)
    if env:
        p = Path(env)
        if not p.is_file():
            raise FileNotFoundError(f"{KERNEL_LIBRARY_ENV}={env!r} does not name an existing file")
        return p.resolve()
    root = _require_source()
    inc = ort_include_dir(commands=commands)
    bdir = build_dir() / "custom_ops"
    lib = bdir / "libedgeconv_ort.so"
    with file_lock(build_dir() / ".custom_ops.lock"):
        if force or not _up_to_date([lib], [root / "custom_ops", root / "cmake"]):
            _cmake_build(root / "custom_ops", bdir, {"ONNXRUNTIME_INCLUDE_DIR": str(inc)},
                         commands, "custom_ops/ for aarch64")
    if not lib.is_file():
        raise RuntimeError(f"the aarch64 build of custom_ops/ produced no {lib}")
    return lib


def qemu_command(binary: Path, args: list[str], runtime: Path, threads: int = 1) -> list[str]:
    tools = find_tools()
    return [tools.qemu, "-L", str(qemu_sysroot()),
            "-E", f"LD_LIBRARY_PATH={runtime / 'lib'}",
            "-E", f"TVM_NUM_THREADS={threads}", "-E", f"OMP_NUM_THREADS={threads}",
            str(binary), *args]


def _save_inputs(inputs: list[np.ndarray], workdir: Path) -> list[str]:
    files = []
    for i, a in enumerate(inputs):
        f = workdir / f"input_{i}.npy"
        np.save(f, np.asarray(a, order="C"))
        files.append(str(f))
    return files


def _execute(backend: str, cmd: list[str], out_dir: Path, commands, timeout) -> RunResult:
    if commands is not None:
        commands.append(shlex.join(cmd))
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{backend}_runner under qemu failed (exit {p.returncode}): "
                           f"{shlex.join(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}".rstrip())
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{backend}_runner printed no summary:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    info = json.loads(lines[-1])
    outputs = [np.load(o["file"]) for o in info["outputs"]]
    return RunResult(backend, outputs, wall, float(info["load_ms"]), [float(x) for x in info["run_ms"]],
                     shlex.join(cmd), info)


def run_ort(model_path, inputs: list[np.ndarray], workdir, *, custom_op_libs=(), threads: int = 1,
            repeat: int = 1, runners: RunnerPaths | None = None, commands: list[str] | None = None,
            timeout: float = DEFAULT_TIMEOUT) -> RunResult:
    """Run an ONNX model with the aarch64 onnxruntime under qemu. ``inputs`` in graph-input order."""
    runners = runners or build_runners(commands=commands)
    workdir = Path(workdir)
    out_dir = workdir / "ort_out"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = ["--ort-lib", str(runners.ort_library), "--model", str(Path(model_path).resolve()),
            "--output-dir", str(out_dir), "--threads", str(threads), "--repeat", str(repeat)]
    for lib in custom_op_libs:
        args += ["--custom-op-lib", str(lib)]
    for f in _save_inputs(inputs, workdir):
        args += ["--input", f]
    cmd = qemu_command(runners.ort_runner, args, runners.runtime, threads)
    return _execute("ort", cmd, out_dir, commands, timeout)


def run_tvm(library_path, inputs: list[np.ndarray], workdir, *, func: str = "main", threads: int = 1,
            repeat: int = 1, runners: RunnerPaths | None = None, commands: list[str] | None = None,
            timeout: float = DEFAULT_TIMEOUT) -> RunResult:
    """Run a TVM Relax library compiled for aarch64 under qemu. ``inputs`` in ``main``'s order."""
    runners = runners or build_runners(commands=commands)
    workdir = Path(workdir)
    out_dir = workdir / "tvm_out"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = ["--module", str(Path(library_path).resolve()), "--output-dir", str(out_dir),
            "--func", func, "--repeat", str(repeat)]
    for f in _save_inputs(inputs, workdir):
        args += ["--input", f]
    cmd = qemu_command(runners.tvm_runner, args, runners.runtime, threads)
    return _execute("tvm", cmd, out_dir, commands, timeout)
