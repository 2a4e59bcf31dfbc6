"""aarch64 parity under emulation: the aarch64 onnxruntime (with the aarch64 build of custom_ops/)
and the TVM arm64 build, run by runners/ under qemu-aarch64, must match x86 onnxruntime.

Needs: cmake g++-aarch64-linux-gnu gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu qemu-user
(skipped with the package names otherwise); the aarch64 runtimes are fetched on first use by
scripts/fetch_arm_runtime.sh. Shapes are tiny: every ort run costs ~5 s of qemu start-up
(translating libonnxruntime), the first build ~1 min.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess

import numpy as np
import pytest

from edgeconv.arm import ArmToolError, find_tools, format_table, tools_available, verify_arm
from edgeconv.arm import models as M
from edgeconv.arm import runners as R
from edgeconv.arm import toolchain as T

pytestmark = pytest.mark.arm

RTOL = 1e-4
_TOOLS_OK, _TOOLS_WHY = tools_available()
needs_tools = pytest.mark.skipif(not _TOOLS_OK, reason=f"aarch64 tools missing: {_TOOLS_WHY}")


def _x86_library_ok() -> tuple[bool, str]:
    try:
        from edgeconv._library import get_library_path

        get_library_path()
    except (ImportError, FileNotFoundError) as e:
        return False, str(e)
    return True, ""


_LIB_OK, _LIB_WHY = _x86_library_ok()
needs_x86_lib = pytest.mark.skipif(not _LIB_OK, reason=f"x86 libedgeconv_ort unavailable: {_LIB_WHY}")
needs_tvm = pytest.mark.skipif(importlib.util.find_spec("tvm") is None,
                               reason="TVM not installed (pip install 'edgeconv[tvm]' / apache-tvm)")


@pytest.fixture(scope="module")
def runners():
    """Fetch the aarch64 runtimes and cross-build the runners once per module."""
    return R.build_runners()


def _check(res, backend):
    print("\n" + format_table(res, commands=True))
    b = res.backends[backend]
    assert b.status == "ok", format_table(res) + "\n" + b.message
    assert b.max_rel_err is not None and b.max_rel_err <= RTOL
    assert b.wall_s is not None and b.wall_s > 0
    assert any("qemu-aarch64" in c for c in res.commands)


# ---- custom ops: aarch64 onnxruntime + aarch64 libedgeconv_ort vs x86 ----------------------

DCN_CASES = {
    "dcnv2_mask_bias_groups": dict(group=2, offset_group=2, mask=True, bias=True),
    "dcnv1_stride2_dilation2": dict(c=4, out_channels=4, group=1, offset_group=1, stride=2, dilation=2,
                                    mask=False, bias=False, h=9, w=7),
    "dcnv2_large_offsets_out_of_bounds": dict(offset_scale=8.0, h=6, w=6),
    "dcnv2_medium_gemm_32ch": dict(c=32, out_channels=32, h=20, w=20, group=1, offset_group=4),
}


@needs_tools
@needs_x86_lib
@pytest.mark.parametrize("case", list(DCN_CASES))
def test_deform_conv2d_ort_aarch64_matches_x86(runners, tmp_path, case):
    res = verify_arm(M.deform_conv_model(**DCN_CASES[case]), tvm=False, workdir=tmp_path)
    _check(res, "ort")
    assert "libedgeconv_ort" in res.backends["ort"].message
    assert any("--custom-op-lib" in c for c in res.commands)


@needs_tools
@needs_x86_lib
def test_dynamic_conv2d_ort_aarch64_matches_x86(runners, tmp_path):
    res = verify_arm(M.dynamic_conv_model(), tvm=False, workdir=tmp_path)
    _check(res, "ort")
    assert res.backends["ort"].output_shapes == [[2, 6, 4, 4]]


@needs_tools
@needs_x86_lib
def test_dynamic_conv2d_medium_ort_aarch64_matches_x86(runners, tmp_path):
    model = M.dynamic_conv_model(n=2, c=32, out_channels=32, h=16, w=16, experts=4, group=1, stride=1)
    res = verify_arm(model, tvm=False, workdir=tmp_path)
    _check(res, "ort")
    assert res.backends["ort"].output_shapes == [[2, 32, 16, 16]]


@needs_tools
def test_aarch64_kernel_library_uses_neon():
    """NEON is baseline on aarch64: Eigen's GEMM and the auto-vectorized loops emit vector FMAs."""
    import re

    lib = R.build_kernels()
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump is None:
        pytest.skip("aarch64-linux-gnu-objdump missing (Debian package binutils-aarch64-linux-gnu)")
    dis = subprocess.run([objdump, "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    assert len(re.findall(r"\bfmla\s+v\d+\.4s", dis)) > 20
    hdr = subprocess.run([objdump, "-f", str(lib)], capture_output=True, text=True, check=True).stdout
    assert "aarch64" in hdr


@needs_tools
def test_mixed_standard_kinds_ort_aarch64_matches_x86(runners, tmp_path):
    res = verify_arm(M.mixed_conv_model(), tvm=False, workdir=tmp_path)
    _check(res, "ort")
    assert not any("--custom-op-lib" in c for c in res.commands)  # standard ops only


@needs_tools
@needs_tvm
def test_mixed_standard_kinds_tvm_arm64_matches_x86(runners, tmp_path):
    res = verify_arm(M.mixed_conv_model(), ort=False, workdir=tmp_path)
    _check(res, "tvm")
    assert (tmp_path / "model_arm64.so").is_file()
    # the library really is aarch64 code
    with open(tmp_path / "model_arm64.so", "rb") as f:
        head = f.read(20)
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64


@pytest.mark.slow  # the torch.onnx (dynamo) export alone takes ~20-40 s here
@needs_tools
@needs_x86_lib
def test_torch_module_through_export_onnx(runners, tmp_path):
    import torch

    from edgeconv.layers import DeformConv2d
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(4, 8, 3, padding=1, groups=2), torch.nn.ReLU(),
        DeformConv2d(8, 8, 3, padding=1, groups=2, offset_groups=2)).eval()
    x = torch.randn(1, 4, 8, 8)
    res = verify_arm(model, (x,), tvm=False, workdir=tmp_path)
    _check(res, "ort")
    assert (tmp_path / "model.onnx").is_file()


@pytest.mark.slow
@needs_tools
@needs_x86_lib
@needs_tvm
def test_torch_dynamic_conv_tvm_arm64_via_standard_op_form(runners, tmp_path):
    """TVM has no edgeconv.DynamicConv2d: compile_tvm compiles its standard-operator form."""
    import torch

    from edgeconv.layers import DynamicConv2d
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(),
                                DynamicConv2d(8, 8, 3)).eval()
    res = verify_arm(model, (torch.randn(1, 4, 8, 8),), workdir=tmp_path)
    _check(res, "ort")
    _check(res, "tvm")


# ---- runners directly -----------------------------------------------------------------------


@needs_tools
def test_tvm_runner_reports_missing_module_clearly(runners, tmp_path):
    cmd = R.qemu_command(runners.tvm_runner, ["--module", str(tmp_path / "nope.so"), "--output-dir",
                                              str(tmp_path)], runners.runtime)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "cannot open module" in p.stderr


@needs_tools
def test_ort_runner_rejects_wrong_input_count(runners, tmp_path):
    import onnx

    onnx.save(M.mixed_conv_model(), str(tmp_path / "m.onnx"))
    with pytest.raises(RuntimeError, match="inputs"):
        R.run_ort(tmp_path / "m.onnx", [], tmp_path, runners=runners)


@needs_tools
def test_runner_npy_dtypes_round_trip(runners, tmp_path):
    """int64 / float64 / bool inputs and outputs pass through the .npy reader/writer unchanged."""
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["ya"]), helper.make_node("Identity", ["b"], ["yb"]),
         helper.make_node("Not", ["c"], ["yc"])], "io",
        [helper.make_tensor_value_info("a", TensorProto.INT64, [2, 3]),
         helper.make_tensor_value_info("b", TensorProto.DOUBLE, [4]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("ya", TensorProto.INT64, [2, 3]),
         helper.make_tensor_value_info("yb", TensorProto.DOUBLE, [4]),
         helper.make_tensor_value_info("yc", TensorProto.BOOL, [])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "io.onnx"))
    a = np.arange(6, dtype=np.int64).reshape(2, 3) - 3
    b = np.array([1.5, -2.25, 1e300, 0.0])
    c = np.array(True)
    run = R.run_ort(tmp_path / "io.onnx", [a, b, c], tmp_path, runners=runners)
    np.testing.assert_array_equal(run.outputs[0], a)
    np.testing.assert_array_equal(run.outputs[1], b)
    assert run.outputs[2].dtype == np.bool_ and run.outputs[2].shape == () and not run.outputs[2]
    assert run.info["ort_version"].startswith("1.")


# ---- host-only checks (no emulation) ---------------------------------------------------------


def test_missing_tools_name_debian_packages(monkeypatch):
    monkeypatch.setattr(T, "_which", lambda name: None)
    with pytest.raises(ArmToolError) as ei:
        find_tools()
    msg = str(ei.value)
    for pkg in ("g++-aarch64-linux-gnu", "qemu-user", "cmake"):
        assert pkg in msg
    ok, why = tools_available()
    assert not ok and "qemu-user" in why


def test_qemu_sysroot_has_aarch64_cpuinfo(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECONV_CACHE", str(tmp_path))
    root = T.qemu_sysroot()
    assert root == tmp_path / "aarch64-sysroot"
    text = (root / "proc" / "cpuinfo").read_text()
    assert "asimd" in text and "CPU implementer\t: 0x41" in text
    assert (root / "lib").is_symlink()
    assert T.qemu_sysroot() == root  # idempotent


def test_fetch_script_is_idempotent_when_cached(tmp_path):
    if not _TOOLS_OK:
        pytest.skip(_TOOLS_WHY)
    rt = T.runtime_dir()  # fetches once if needed
    root = T.repo_root()
    assert root is not None
    p = subprocess.run(["bash", str(root / "scripts" / "fetch_arm_runtime.sh")], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip().splitlines()[-1] == str(rt)
    assert "pip download" not in p.stderr  # no-op


def test_format_table_and_result_status():
    from edgeconv.arm.verify import ArmVerifyResult, BackendResult

    res = ArmVerifyResult(model="m", input_shapes=[[1, 2]], reference="onnxruntime x (x86_64)", rtol=1e-4,
                          backends={"ort": BackendResult("ort", "ok", 1e-7, 2e-7, 5.0, 4000.0, 10.0, 1.0),
                                    "tvm": BackendResult("tvm", "skipped", message="TVM is not installed")},
                          commands=["qemu-aarch64 ..."], workdir="/tmp/x", total_s=6.0)
    assert res.ok
    table = format_table(res)
    assert "aarch64 ort" in table and "2e-07" in table and "TVM is not installed" in table
    assert table.splitlines()[-1].startswith("OK")
    json.dumps(res.to_dict())
    res.backends["tvm"].status = "mismatch"
    assert not res.ok
    with pytest.raises(AssertionError, match="FAILED"):
        res.raise_for_status()


def test_verify_arm_rejects_bad_inputs():
    if not _TOOLS_OK:
        pytest.skip(_TOOLS_WHY)
    with pytest.raises(TypeError):
        verify_arm(12345)
    with pytest.raises(ValueError, match="inputs"):
        verify_arm(M.mixed_conv_model(), [np.zeros((1, 8, 12, 12), np.float32)] * 2)


def test_which_is_patchable():
    assert T._which("sh") == shutil.which("sh")


@needs_tools
@needs_tvm
def test_tvm_without_custom_op_support_is_reported_unsupported(runners, tmp_path):
    """TVM's ONNX importer has no edgeconv.DeformConv2d: the TVM backend says so, nothing fails."""
    res = verify_arm(M.deform_conv_model(), ort=False, workdir=tmp_path)
    b = res.backends["tvm"]
    if b.status == "ok":  # the TVM exporter learned the op: then it must match
        _check(res, "tvm")
        return
    assert b.status == "unsupported", b.message
    assert "DeformConv2d" in b.message
    assert not res.ok  # nothing ran
    assert "unsupported" in format_table(res)


@needs_tools
@needs_tvm
def test_tvm_runner_tuple_outputs(runners, tmp_path):
    """A two-output model: the VM returns an Array, the runner writes each tensor."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "W")
    g = helper.make_graph(
        [helper.make_node("Conv", ["X", "W"], ["Y"], group=4, pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["Y"], ["Z"])], "two_out",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4, 5, 5]),
         helper.make_tensor_value_info("Z", TensorProto.FLOAT, [1, 4, 5, 5])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    res = verify_arm(m, ort=False, workdir=tmp_path / "build")
    _check(res, "tvm")
    assert res.backends["tvm"].output_shapes == [[1, 4, 5, 5], [1, 4, 5, 5]]

    # verify_arm(path/to/model_arm64.so, inputs, reference=...) runs only the TVM runner
    import onnxruntime

    lib = tmp_path / "build" / "model_arm64.so"
    x = np.random.default_rng(3).standard_normal((1, 4, 5, 5)).astype(np.float32)
    ref = onnxruntime.InferenceSession(m.SerializeToString()).run(None, {"X": x})
    pre = verify_arm(str(lib), [x], reference=ref, workdir=tmp_path / "run", repeat=3)
    _check(pre, "tvm")
    assert list(pre.backends) == ["tvm"]
    np.testing.assert_allclose(pre.outputs[1], ref[1], rtol=1e-4, atol=1e-5)
    assert pre.latency["repeats"] == 3 and pre.latency["median_ms"] > 0
    assert pre.skipped is None
    plain = verify_arm(str(lib), [x], workdir=tmp_path / "run2")
    assert plain.backends["tvm"].status == "ran" and plain.ok
    bad = verify_arm(str(lib), [x[:, :3]], workdir=tmp_path / "run3")
    assert bad.backends["tvm"].status == "error" and "mismatch" in bad.backends["tvm"].message
    with pytest.raises(RuntimeError, match="no aarch64 backend"):
        bad.outputs

