"""Per-kernel profile of a compiled model from the VM's own instrumentation.

    from edgeconv.exporters.tvm import compile_tvm
    from edgeconv.exporters.tvm.profile import profile_vm
    prof = profile_vm(compile_tvm(model, "x86", input_shapes=...), [x])
    print(format_profile(prof))

``relax.VirtualMachine.set_instrument(f)`` calls ``f(func, symbol, before_run, ret, *args)``
before and after every call the VM makes (kernels and VM builtins such as ``alloc_storage``);
we time each pair. Instrumentation adds a Python call per VM instruction, so the profile also
reports the un-instrumented run time of the same executable: the difference is the overhead.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
import time
from collections import defaultdict

__all__ = ["KernelTime", "VMProfile", "op_kind", "profile_vm", "profile_model", "format_profile"]

# ec_<kind>_... names of our kernels whose second token is not the op kind
_EC_KIND = {"to": "layout", "from": "layout", "deform": "conv:deformable"}


def op_kind(symbol: str) -> str:
    """The op kind a VM call belongs to, from its symbol.

    Our kernels: ``ec_<kind>_...`` (``ec_depthwise_3x3_...`` -> ``conv:depthwise``); TVM's
    fused kernels ``fused_<op>_<op>..`` keep their op list; VM builtins are ``alloc`` (storage
    and tensor allocation) or ``vm:<name>``; legalized single ops lose their numeric suffix.
    """
    if symbol.startswith("vm.builtin."):
        name = symbol[len("vm.builtin."):]
        return "alloc" if name.startswith("alloc") else f"vm:{name}"
    if symbol.startswith("ec_"):
        token = symbol.split("_")[1]
        token = _EC_KIND.get(re.sub(r"nchw\d+c$", "", token) or token, token)
        if token in ("dense", "depthwise", "group", "pointwise", "separable"):
            return f"conv:{token}"
        return token
    # fused_reshape13_reshape13_multiply5 -> fused_reshape_multiply
    tokens = [re.sub(r"\d+$", "", t) for t in symbol.split("_")]
    tokens = [t for i, t in enumerate(tokens) if t and (i == 0 or t != tokens[i - 1])]
    return "_".join(tokens)


@dataclasses.dataclass
class KernelTime:
    """One VM call target: calls per run and median time per run (ms)."""

    name: str
    kind: str
    calls: int
    ms: float


@dataclasses.dataclass
class VMProfile:
    kernels: list  # [KernelTime], slowest first
    kinds: dict  # kind -> (calls per run, ms per run), slowest first
    instrumented_ms: float  # median wall time of an instrumented run
    plain_ms: float  # median wall time of an un-instrumented run (same executable)
    runs: int

    @property
    def kernel_ms(self) -> float:
        return sum(k.ms for k in self.kernels)

    def as_dict(self) -> dict:
        return {
            "runs": self.runs,
            "plain_ms": self.plain_ms,
            "instrumented_ms": self.instrumented_ms,
            "sum_of_calls_ms": self.kernel_ms,
            "kinds": {k: {"calls": c, "ms": ms} for k, (c, ms) in self.kinds.items()},
            "kernels": [dataclasses.asdict(k) for k in self.kernels],
        }


def _vm_and_args(compiled, inputs):
    import numpy as np
    import tvm
    from tvm import relax

    executable = getattr(compiled, "executable", compiled)
    dev = tvm.cpu()
    args = [a if isinstance(a, tvm.runtime.Tensor) else tvm.runtime.tensor(np.ascontiguousarray(a), dev)
            for a in inputs]
    return relax.VirtualMachine(executable, dev), relax.VirtualMachine(executable, dev), args


def profile_vm(compiled, inputs, runs: int = 20, warmup: int = 3, func: str = "main") -> VMProfile:
    """Profile ``compiled`` (a :class:`CompiledModel` or a relax Executable) on ``inputs``.

    Per call target: median over ``runs`` of its time per run (all its calls of one run summed).
    """
    plain_vm, vm, args = _vm_and_args(compiled, inputs)
    for _ in range(warmup):
        plain_vm[func](*args)
    plain = []
    for _ in range(runs):
        t = time.perf_counter()
        plain_vm[func](*args)
        plain.append(time.perf_counter() - t)

    per_run: list[dict] = []  # per run: symbol -> [calls, seconds]
    started: list = []  # a stack, in case a call target calls back into the VM

    def _instrument(_func, symbol, before_run, _ret, *_args):
        now = time.perf_counter()
        if before_run:
            started.append(now)
        else:
            entry = per_run[-1].setdefault(str(symbol), [0, 0.0])
            entry[0] += 1
            entry[1] += now - started.pop()
        return 0

    vm.set_instrument(_instrument)
    walls = []
    for _ in range(warmup + runs):
        per_run.append({})
        t = time.perf_counter()
        vm[func](*args)
        walls.append(time.perf_counter() - t)
    per_run, walls = per_run[warmup:], walls[warmup:]
    counts = {name: calls for name, (calls, _) in per_run[-1].items()}

    kernels = [KernelTime(name, op_kind(name), counts.get(name, 0),
                          statistics.median(run.get(name, (0, 0.0))[1] for run in per_run) * 1e3)
               for name in counts]
    kernels.sort(key=lambda k: -k.ms)
    kinds: dict = defaultdict(lambda: [0, 0.0])
    for k in kernels:
        kinds[k.kind][0] += k.calls
        kinds[k.kind][1] += k.ms
    kinds = dict(sorted(((k, tuple(v)) for k, v in kinds.items()), key=lambda kv: -kv[1][1]))
    return VMProfile(kernels, kinds, statistics.median(walls) * 1e3, statistics.median(plain) * 1e3, runs)


def profile_model(model, input_shape, threads: int = 1, runs: int = 20, target: str = "x86") -> VMProfile:
    """Export the torch ``model`` to ONNX (``edgeconv.export_onnx``), compile it for the host with
    the input shape fixed, and profile it on a seeded random input at ``threads`` threads."""
    import tempfile

    import numpy as np
    import onnx

    from ..onnx import export_onnx
    from .compile import compile_tvm, set_num_threads

    set_num_threads(threads)
    x = np.random.default_rng(0).standard_normal(tuple(input_shape)).astype("float32")
    with tempfile.TemporaryDirectory(prefix="edgeconv-profile-") as tmp:
        path = f"{tmp}/model.onnx"
        import torch

        export_onnx(model, (torch.from_numpy(x),), path)
        proto = onnx.load(path)
    name = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}][0]
    compiled = compile_tvm(proto, target, input_shapes={name: list(input_shape)})
    return profile_vm(compiled, [x], runs=runs)


def format_profile(prof: VMProfile, top: int = 25) -> str:
    """Plain-text tables: top kernels, then per kind, then the totals."""
    total = max(prof.kernel_ms, 1e-12)
    lines = [f"{'kernel':70s} {'kind':24s} {'calls':>5s} {'ms':>8s} {'share':>6s}"]
    for k in prof.kernels[:top]:
        lines.append(f"{k.name[:70]:70s} {k.kind[:24]:24s} {k.calls:5d} {k.ms:8.3f} {100 * k.ms / total:5.1f}%")
    if len(prof.kernels) > top:
        rest = prof.kernels[top:]
        lines.append(f"{f'... {len(rest)} more':70s} {'':24s} {sum(k.calls for k in rest):5d} "
                     f"{sum(k.ms for k in rest):8.3f} {100 * sum(k.ms for k in rest) / total:5.1f}%")
    lines += ["", f"{'kind':40s} {'calls':>5s} {'ms':>8s} {'share':>6s}"]
    for kind, (calls, ms) in prof.kinds.items():
        lines.append(f"{kind[:40]:40s} {calls:5d} {ms:8.3f} {100 * ms / total:5.1f}%")
    lines += ["", f"sum of calls {prof.kernel_ms:.3f} ms; instrumented run {prof.instrumented_ms:.3f} ms; "
                  f"un-instrumented run {prof.plain_ms:.3f} ms (medians of {prof.runs} runs)"]
    return "\n".join(lines)
