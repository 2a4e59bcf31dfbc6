"""aarch64 builds and emulated verification (qemu-user) of edgeconv models.

    from edgeconv.arm import verify_arm, format_table
    res = verify_arm("model.onnx")            # aarch64 onnxruntime + TVM arm64 vs x86 onnxruntime
    print(format_table(res))

Host needs (Debian): cmake g++-aarch64-linux-gnu gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu
qemu-user, plus ``bash scripts/fetch_arm_runtime.sh`` (aarch64 onnxruntime/TVM runtimes from PyPI,
fetched on first use if missing) and ``scripts/fetch_ort_headers.sh``.
"""

from .runners import RunResult, build_kernels, build_runners, run_ort, run_tvm
from .toolchain import ArmToolError, find_tools, qemu_sysroot, runtime_dir, tools_available
from .verify import ArmVerifyResult, BackendResult, format_table, verify_arm

__all__ = [
    "verify_arm",
    "format_table",
    "ArmVerifyResult",
    "BackendResult",
    "ArmToolError",
    "find_tools",
    "tools_available",
    "runtime_dir",
    "qemu_sysroot",
    "build_runners",
    "build_kernels",
    "run_ort",
    "run_tvm",
    "RunResult",
]
