"""``edgeconv deploy``: the pipeline, its report files and its exit-code rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dataclasses import replace

from edgeconv.deploy import DeployConfig, StageResult, exit_code, parity, run_deploy
from edgeconv.deploy import stages as S
from edgeconv.exporters.onnx import custom_ops_available

from loopback import free_port as _free_port
from loopback import wait_port as _wait_port
from tiny_model import make as make_tiny_model
from tiny_model import make_deform as make_tiny_deform_model


def _tvm_or_skip():
    why = S.tvm_missing()
    if why:
        pytest.skip(why)


def _replace_run(name, run, table=S.TABLE):
    """The stage table with stage ``name`` running ``run`` (an injected backend)."""
    return [replace(s, run=run) if s.name == name else s for s in table]


def _tiny_model(factory=make_tiny_model):
    import torch

    from edgeconv.models._blocks import randomize_bn

    torch.manual_seed(0)
    return randomize_bn(factory()).eval()


def _tiny_deform_model():
    """The tiny model with an edgeconv op (so that ``ort-nolib`` is not identical to ``ort``)."""
    import torch

    model = _tiny_model(make_tiny_deform_model)
    with torch.no_grad():  # non-zero offsets: the deformable sampling is exercised
        for m in model.modules():
            if hasattr(m, "conv_offset"):
                m.conv_offset.weight.normal_(0, 0.1)
    return model


def _cfg(tmp_path, **kw):
    base = dict(model=_tiny_model(), model_name="tiny", input_shape=(1, 3, 32, 32), outdir=tmp_path / "out",
                repeats=3, warmup=1, quiet=True)
    base.update(kw)
    return DeployConfig(**base)


# ------------------------------------------------------------------------------------------
# pure functions
# ------------------------------------------------------------------------------------------


def test_exit_code_rule():
    passed = StageResult("export", status="passed")
    legit = StageResult("tvm-arm64-run", status="skipped", legit=True, reason="no qemu")
    not_legit = StageResult("tvm-x86", status="skipped", legit=False, reason="upstream failed")
    failed = StageResult("ort", status="failed", reason="boom")
    assert exit_code([passed, legit]) == 0
    assert exit_code([passed, not_legit]) == 1
    assert exit_code([passed, failed, legit]) == 1
    assert exit_code([]) == 0


def test_parity_metric():
    ref = [np.array([1.0, -2.0, 4.0], np.float32)]
    assert parity(ref, [ref[0] + 1e-5])["ok"]
    p = parity(ref, [ref[0] + np.array([0, 0, 0.01], np.float32)], tol=1e-4)
    assert not p["ok"] and p["rel"] == pytest.approx(0.01 / 4, rel=1e-3)
    assert not parity(ref, [np.array([np.nan, 0, 0], np.float32)])["ok"]
    assert not parity(ref, [np.zeros(4, np.float32)])["ok"]
    assert not parity(ref, [])["ok"]


def test_arm_helper_without_tools_is_a_legit_skip(tmp_path):
    from types import SimpleNamespace

    cfg = DeployConfig(model=None, model_name="m", input_shape=(1, 3, 32, 32), outdir=tmp_path)
    x = np.zeros((1, 3, 32, 32), np.float32)
    no_tools = SimpleNamespace(tools_available=lambda: (False, "qemu-aarch64 not found (apt install qemu-user)"),
                               verify_arm=lambda *a, **k: pytest.fail("must not run"))
    assert "qemu-aarch64 not found" in S.arm_missing(no_tools)
    emulated = [s for s in S.TABLE if s.probe is S.arm_missing]
    assert {s.name for s in emulated} == {"tvm-arm64-run", "ort-arm64-run"}
    assert all(s.missing == S.SKIP for s in emulated)  # a legit skip even when named explicitly

    tool_error = SimpleNamespace(ArmToolError=OSError, verify_arm=lambda *a, **k: (_ for _ in ()).throw(OSError("no gcc")))
    assert "no gcc" in S.call_arm(tool_error, tmp_path / "m.so", "tvm", x, [x], cfg, tmp_path)["skipped"]

    ran = SimpleNamespace(
        ArmToolError=OSError,
        verify_arm=lambda *a, **k: SimpleNamespace(
            skipped=None, outputs=[x + 1], latency={"median_ms": 5.0, "p10_ms": 4.0, "p90_ms": 6.0, "repeats": 3},
            backends={"tvm": SimpleNamespace(ok=True, status="ok", message="", wall_s=1.0, max_rel_err=0.0)}),
    )
    res = S.call_arm(ran, tmp_path / "m.so", "tvm", x, [x], cfg, tmp_path)
    assert res["latency"]["median_ms"] == 5.0 and np.all(res["outputs"][0] == 1)

    broken = SimpleNamespace(
        ArmToolError=OSError,
        verify_arm=lambda *a, **k: SimpleNamespace(
            skipped=None, outputs=[], latency=None,
            backends={"tvm": SimpleNamespace(ok=False, status="error", message="qemu crashed", wall_s=None,
                                             max_rel_err=None)}),
    )
    with pytest.raises(RuntimeError, match="qemu crashed"):
        S.call_arm(broken, tmp_path / "m.so", "tvm", x, [x], cfg, tmp_path)


# ------------------------------------------------------------------------------------------
# pipeline (in-process, tiny model)
# ------------------------------------------------------------------------------------------


def test_ort_pipeline_report_files(tmp_path):
    result = run_deploy(_cfg(tmp_path, targets=["ort"], model=_tiny_deform_model()))
    out = tmp_path / "out"
    names = [s.name for s in result.stages]
    assert names == ["torch", "profile", "export", "onnx-check", "ort", "ort-nolib"]  # edgeconv ops: both rows
    by = {s.name: s for s in result.stages}
    for name in ("torch", "profile", "export", "onnx-check", "ort-nolib"):
        assert by[name].status == "passed", (name, by[name].reason)
    # ort was named explicitly: it must run (fails, not skips, if the library is missing)
    assert by["ort"].status == ("passed" if custom_ops_available() else "failed")
    for f in ("report.md", "report.json", "latency.png", "model.onnx", "input.npy", "torch_output.npy"):
        assert (out / f).stat().st_size > 0, f
    data = json.loads((out / "report.json").read_text())
    assert data["model"] == "tiny" and data["input_shape"] == [1, 3, 32, 32]
    assert data["parity"]["ort-nolib"]["rel"] <= 1e-4
    assert data["latency_ms"]["torch"]["median_ms"] > 0 and data["latency_ms"]["ort-nolib"]["median_ms"] > 0
    assert data["total_params"] > 0 and data["kinds"]["deform"]["layers"] == 1
    assert set(data["kind_latency_ms_torch"]) >= {"deform", "other"}
    md = (out / "report.md").read_text()
    assert "## Stages" in md and "## Latency per backend" in md and "## Per layer kind" in md
    assert "latency.png" in md
    assert result.exit_code == data["exit_code"] == (0 if custom_ops_available() else 1)


def test_missing_tvm_is_a_legit_skip_only_for_default_targets(tmp_path):
    table = S.with_probe(S.TABLE, S.tvm_missing, lambda: "TVM not available (test)")
    table = S.with_probe(table, S.library_missing, lambda: "library not built (test)")
    no_arm = [s for s in table if s.target != "tvm-arm64"]  # default targets: ort, tvm-x86
    res = run_deploy(_cfg(tmp_path, targets=None, model=_tiny_deform_model()), no_arm)
    assert [s.name for s in res.stages][-3:] == ["ort", "ort-nolib", "tvm-x86"]
    by = {s.name: s for s in res.stages}
    assert by["tvm-x86"].status == "skipped" and by["tvm-x86"].legit
    assert by["ort"].status == "skipped" and by["ort"].legit
    assert by["ort-nolib"].status == "passed"
    assert res.exit_code == 0
    # the same targets named explicitly must run: missing dependencies are failures
    res = run_deploy(_cfg(tmp_path, targets=["tvm-x86"]), table)
    by = {s.name: s for s in res.stages}
    assert by["tvm-x86"].status == "failed" and "TVM not available" in by["tvm-x86"].reason
    assert res.exit_code == 1


def test_without_tvm_the_default_deploy_exits_0(tmp_path):
    """A wheel installed without extras: the TVM stages skip, and so does the emulated arm64 run
    that needs the (skipped) cross-compilation; every skip is legitimate, exit code 0."""
    table = S.with_probe(S.TABLE, S.tvm_missing, lambda: "TVM not available (test)")
    res = run_deploy(_cfg(tmp_path, targets=None), table)
    by = {s.name: s for s in res.stages}
    for name in ("tvm-x86", "tvm-arm64", "tvm-arm64-run"):
        assert by[name].status == "skipped" and by[name].legit, (name, by[name].reason)
    assert "needs stage 'tvm-arm64'" in by["tvm-arm64-run"].reason
    assert res.exit_code == 0


def test_failing_stage_is_recorded_and_pipeline_continues(tmp_path):

    def broken_session(*a, **k):
        raise RuntimeError("onnxruntime exploded")

    res = run_deploy(_cfg(tmp_path, targets=["ort"], model=_tiny_deform_model()),
                     _replace_run("ort-nolib", S.ort_run(False, broken_session)))
    by = {s.name: s for s in res.stages}
    assert by["ort-nolib"].status == "failed" and "exploded" in by["ort-nolib"].reason
    assert by["export"].status == "passed"
    assert res.exit_code == 1
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["exit_code"] == 1
    assert "onnxruntime exploded" in (tmp_path / "out" / "report.md").read_text()


def test_parity_failure_fails_the_stage(tmp_path):
    real = S.make_ort_session

    class Wrong:
        def __init__(self, sess):
            self.sess = sess

        def get_inputs(self):
            return self.sess.get_inputs()

        def run(self, names, feeds):
            return [o + 1.0 for o in self.sess.run(names, feeds)]

    wrong = S.ort_run(False, lambda *a, **k: Wrong(real(*a, **k)))
    res = run_deploy(_cfg(tmp_path, targets=["ort"], model=_tiny_deform_model()), _replace_run("ort-nolib", wrong))
    st = res.stage("ort-nolib")
    assert st.status == "failed" and "parity" in st.reason
    assert res.exit_code == 1


def test_tvm_x86_stage(tmp_path):
    _tvm_or_skip()
    res = run_deploy(_cfg(tmp_path, targets=["tvm-x86"]))
    st = res.stage("tvm-x86")
    assert st.status == "passed", st.reason
    assert st.parity["rel"] <= 1e-4 and st.latency["median_ms"] > 0
    assert (tmp_path / "out" / "model_x86.so").exists()


# ------------------------------------------------------------------------------------------
# the report's decision: recommendation, rows, sizes, memory, kernels, thread sweep
# ------------------------------------------------------------------------------------------


def _timed(name, median, p10, p90, status="passed", ok=True, threads=None):
    """A synthetic stage result with latency ``median`` (p10/p90) at 1 thread or per ``threads``."""
    by = threads or {1: (median, p10, p90)}
    lat = {n: {"median_ms": m, "p10_ms": lo, "p90_ms": hi, "repeats": 20} for n, (m, lo, hi) in by.items()}
    return StageResult(name, status=status, parity={"ok": ok, "rel": 0.0 if ok else 1.0}, latency=lat[min(lat)],
                       by_threads=lat)


def test_recommendation_fastest_correct_wins_and_reports_the_margin():
    from edgeconv.deploy.report import recommend

    stages = [
        _timed("torch", 0.2, 0.19, 0.21),  # the reference: never a candidate
        _timed("ort", 2.0, 1.9, 2.2),
        _timed("tvm-x86", 1.0, 0.95, 1.05),
        _timed("ort-nolib", 0.5, 0.45, 0.55, status="failed", ok=False),  # fastest, but lost parity
        _timed("tvm-arm64-run", 0.1, 0.1, 0.1),  # emulated: never a candidate
    ]
    [rec] = recommend(stages, (1,))
    assert rec["device"] == "host" and rec["backend"] == "tvm-x86" and rec["runner_up"] == "ort"
    assert rec["margin_ms"] == pytest.approx(1.0) and rec["speedup"] == pytest.approx(2.0)
    # noise band: (p90 - median) of the winner + (median - p10) of the runner-up = 0.05 + 0.1
    assert rec["noise_ms"] == pytest.approx(0.15) and rec["inside_noise"] is False
    assert "outside the run-to-run noise" in rec["text"] and "TVM x86" in rec["text"]


def test_recommendation_margin_inside_noise_is_a_tie():
    from edgeconv.deploy.report import recommend

    # p10-p90 ranges [0.9, 1.2] and [0.95, 1.3] overlap: a 0.1 ms margin is not a decision
    [rec] = recommend([_timed("ort", 1.1, 0.95, 1.3), _timed("tvm-x86", 1.0, 0.9, 1.2)], (1,))
    assert rec["backend"] == "tvm-x86" and rec["inside_noise"] is True
    assert rec["noise_ms"] == pytest.approx(0.2 + 0.15) and "inside the run-to-run noise" in rec["text"]


def test_recommendation_per_thread_count_and_without_a_correct_backend():
    from edgeconv.deploy.report import recommend

    stages = [_timed("ort", 0, 0, 0, threads={1: (2.0, 1.9, 2.1), 2: (1.0, 0.9, 1.1)}),
              _timed("tvm-x86", 0, 0, 0, threads={1: (1.5, 1.4, 1.6), 2: (1.4, 1.3, 1.5)})]
    one, two = recommend(stages, (1, 2))
    assert (one["threads"], one["backend"]) == (1, "tvm-x86") and (two["threads"], two["backend"]) == (2, "ort")
    [none] = recommend([_timed("ort", 1.0, 1.0, 1.0, status="failed", ok=False)], (1,))
    assert none["backend"] is None and "no backend passed parity" in none["text"]
    [only] = recommend([_timed("ort", 1.0, 1.0, 1.0), _timed("tvm-x86", 0.5, 0.5, 0.5, status="failed", ok=False)], (1,))
    assert only["backend"] == "ort" and "only backend" in only["text"]


def test_nolib_row_only_for_a_model_with_edgeconv_ops(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    def context_for(domain):
        node = helper.make_node("DeformConv2d" if domain else "Relu", ["x"], ["y"], domain=domain)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        path = tmp_path / f"m{domain}.onnx"
        onnx.save(helper.make_model(graph), str(path))
        return S.Context(cfg=None, model=None, x=None, outdir=tmp_path, onnx=path)

    assert S.has_no_edgeconv_ops(context_for("edgeconv")) is None
    assert "no edgeconv ops" in S.has_no_edgeconv_ops(context_for(""))


@pytest.fixture(scope="module")
def standard_run(tmp_path_factory):
    """The tiny standard-op model on ort, tvm-x86 (and openvino when installed) at 1 and 2 threads."""
    targets = ["ort"] + ([] if S.tvm_missing() else ["tvm-x86"]) + ([] if S.openvino_missing() else ["openvino"])
    model = _tiny_model()
    res = run_deploy(_cfg(tmp_path_factory.mktemp("std"), model=model, targets=targets, threads=(1, 2)))
    return res, model


def test_standard_model_rows_sizes_and_recommendation(standard_run):
    res, model = standard_run
    out = Path(res.config.outdir)
    names = [s.name for s in res.stages]
    assert "ort-nolib" not in names and "no edgeconv ops" in res.omitted["ort-nolib"]
    data = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    assert "| ort-nolib | not run |" in md
    # sizes: what is on disk, and PyTorch's own parameter count
    files = data["sizes"]["files_bytes"]
    assert files["model.onnx"] == os.path.getsize(out / "model.onnx")
    if "tvm-x86" in names:
        assert files["model_x86.so"] == os.path.getsize(out / "model_x86.so")
    assert data["sizes"]["parameters"] == sum(p.numel() for p in model.parameters())
    for name, nbytes in files.items():
        assert f"| `{name}` | {nbytes:,} bytes" in md
    # the decision is the first thing in the report, one line per thread count
    recs = data["recommendation"]
    assert [r["threads"] for r in recs] == [1, 2] and all(r["backend"] in names for r in recs)
    head = md.split("## Stages")[0]
    assert head.count("**Recommendation** (host, ") == 2


def test_thread_sweep_memory_and_kernel_profiles(standard_run):
    res, _ = standard_run
    md = (Path(res.config.outdir) / "report.md").read_text()
    assert "| 1 thread: median (p10-p90) ms | 2 threads: median (p10-p90) ms |" in md
    for st in res.stages:
        if st.name in S.DEVICES:
            assert st.status == "passed", (st.name, st.reason)
            assert set(st.by_threads) == {1, 2} and all(L["median_ms"] > 0 for L in st.by_threads.values())
            assert st.latency == st.by_threads[1]
            for m in st.memory.values():  # a fresh process: Python + runtime take far more than 10 MiB
                assert m["peak_rss_mb"] > 10 and 0 <= m["increase_mb"] <= m["peak_rss_mb"]
    ort = res.stage("ort")
    if ort.status == "passed":
        kinds = {k["kind"] for k in ort.kernels["kernels"]}
        assert "Conv" in kinds or "FusedConv" in kinds, kinds
        assert all(k["calls"] == 1 and k["ms"] >= 0 for k in ort.kernels["kernels"])  # no loops in this graph
        assert "**onnxruntime + edgeconv kernels** (`ort`): sum of kernels" in md
    tvm = res.stage("tvm-x86")
    if tvm is not None:
        assert any(k["kind"].startswith("conv:") for k in tvm.kernels["kernels"]), tvm.kernels["kernels"][:5]
        assert "**TVM x86 (host)** (`tvm-x86`): sum of kernels" in md


def test_openvino_stage_parity_on_a_standard_op_model(standard_run):
    why = S.openvino_missing()
    if why:
        pytest.skip(why)
    res, _ = standard_run
    st = res.stage("openvino")
    assert st.status == "passed", st.reason
    # float32 runtimes against PyTorch: reassociated sums on a 32x32 input stay far below 1e-4
    assert st.parity["rel"] <= 1e-4 and set(st.by_threads) == {1, 2}


def test_openvino_runs_the_inlined_fallback_functions(tmp_path):
    """OpenVINO does not convert ``edgeconv.DeformConv2d`` (nor its local function): the stage
    gives it the file's fallback functions inlined, and parity still holds."""
    why = S.openvino_missing()
    if why:
        pytest.skip(why)
    res = run_deploy(_cfg(tmp_path, model=_tiny_deform_model(), targets=["openvino"]))
    st = res.stage("openvino")
    assert st.status == "passed", st.reason
    assert "model_openvino.onnx" in st.artifacts and st.parity["rel"] <= 1e-4


def test_cli_threads_list_is_validated(tmp_path):
    for bad in ("0", "1,1", "1,x"):
        res = subprocess.run([sys.executable, "-m", "edgeconv.cli", "deploy", "--threads", bad, "-o", str(tmp_path)],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and "thread counts" in res.stderr, (bad, res.stderr)


# ------------------------------------------------------------------------------------------
# CLI end to end (subprocess)
# ------------------------------------------------------------------------------------------


def test_cli_deploy_edgenet_ort(tmp_path):
    """`edgeconv deploy` (default model edgenet) at 32x32, onnxruntime target only."""
    out = tmp_path / "report"
    res = subprocess.run(
        [sys.executable, "-m", "edgeconv.cli", "deploy", "--input", "1,3,32,32", "--targets", "ort",
         "-o", str(out), "--repeats", "3", "-q"],
        capture_output=True, text=True, timeout=900,
    )
    assert res.returncode == (0 if custom_ops_available() else 1), res.stdout + res.stderr
    for f in ("report.md", "report.json", "latency.png"):
        assert (out / f).stat().st_size > 0
    data = json.loads((out / "report.json").read_text())
    assert data["model"] == "edgenet"
    assert {"ort-nolib", "torch"} <= set(data["latency_ms"])
    assert data["parity"]["ort-nolib"]["rel"] <= 1e-4
    kinds = set(data["kinds"])
    assert {"deform", "deform_v2", "dynamic", "gdc", "hetconv", "mixconv"} <= kinds
    assert "edgenet" in res.stdout and "exit code" in res.stdout


# ------------------------------------------------------------------------------------------
# slow: arm64 cross-compile + emulated run, RPC on loopback
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tvm_arm64_cross_compile_and_emulated_run(tmp_path):
    _tvm_or_skip()
    res = run_deploy(_cfg(tmp_path, targets=["tvm-arm64"]))
    assert res.stage("tvm-arm64").status == "passed", res.stage("tvm-arm64").reason
    run = res.stage("tvm-arm64-run")
    if run.status == "skipped" and run.legit:
        pytest.skip(run.reason)  # no qemu-user / cross toolchain here: the cross-compilation passed
    assert run.status == "passed", run.reason
    assert run.parity["rel"] <= 1e-4
    assert res.exit_code == 0


def _spawn(*args):
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _stop(*procs):
    for proc in procs:
        proc.kill()
        proc.wait(timeout=30)


@pytest.fixture
def rpc_server():
    """``HOST:PORT`` of a TVM RPC server on loopback (its own process)."""
    _tvm_or_skip()
    for mod in ("cloudpickle", "psutil"):
        pytest.importorskip(mod)
    port = _free_port()
    proc = _spawn("tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1))
    _wait_port(proc, port, "RPC server")
    yield f"127.0.0.1:{port}"
    _stop(proc)


@pytest.fixture
def rpc_tracker():
    """``HOST:PORT/KEY`` of a TVM RPC tracker on loopback with one server registered as KEY."""
    _tvm_or_skip()
    for mod in ("cloudpickle", "psutil", "tornado"):
        pytest.importorskip(mod)
    tport, sport = _free_port(), _free_port()
    tracker = _spawn("tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(tport), "--port-end", str(tport + 1))
    _wait_port(tracker, tport, "RPC tracker")
    server = _spawn("tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(sport), "--port-end", str(sport + 1),
                    "--tracker", f"127.0.0.1:{tport}", "--key", "edgeconv-test")
    _wait_port(server, sport, "RPC server")
    time.sleep(2)  # registration with the tracker
    yield f"127.0.0.1:{tport}/edgeconv-test"
    _stop(server, tracker)


@pytest.mark.slow
def test_deploy_over_rpc_loopback(tmp_path, rpc_server):
    from edgeconv.cli import parse_rpc

    res = run_deploy(_cfg(tmp_path, targets=["tvm-x86"], rpc=parse_rpc(rpc_server), rpc_target="x86"))
    st = res.stage("tvm-rpc")
    assert st.status == "passed", st.reason
    assert st.parity["rel"] <= 1e-4 and st.latency["median_ms"] > 0
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "tvm-rpc" in data["latency_ms"]


@pytest.mark.slow
def test_compile_and_bench_over_rpc_loopback(tmp_path, rpc_server, capsys):
    from edgeconv import cli

    model_file = Path(__file__).with_name("tiny_model.py")
    onnx_path = tmp_path / "tiny.onnx"
    assert cli.main(["export", f"{model_file}:make", "--input", "1,3,32,32", "-o", str(onnx_path), "-q"]) == 0
    rc = cli.main(["compile", str(onnx_path), "--target", "x86", "-o", str(tmp_path / "tiny.so"), "--rpc", rpc_server,
                   "--repeat", "3", "-q"])
    out = capsys.readouterr().out
    assert rc == 0 and f"rpc {rpc_server}" in out and "median" in out
    rc = cli.main(["bench", "model", f"{model_file}:make", "--input", "1,3,32,32", "--backends", "torch",
                   "--repeats", "3", "--rpc", rpc_server, "--rpc-target", "x86", "-q"])
    out = capsys.readouterr().out
    assert rc == 0 and "tvm-rpc(x86)" in out and "passed" in out


@pytest.mark.slow
def test_edgenet_tvm_x86_through_the_standard_operator_form(tmp_path):
    """edgenet has edgeconv custom ops; compile_tvm lowers them through their standard-operator
    form and the result must still match PyTorch."""
    _tvm_or_skip()
    import torch

    import edgeconv.models as zoo

    torch.manual_seed(0)
    cfg = _cfg(tmp_path, model=zoo.create("edgenet", input_size=32).eval(), model_name="edgenet", targets=["tvm-x86"])
    res = run_deploy(cfg)
    st = res.stage("tvm-x86")
    assert st.status == "passed", st.reason
    assert st.parity["rel"] <= 1e-4


@pytest.mark.slow
def test_cli_compile_model_with_edgeconv_ops(tmp_path, capsys):
    _tvm_or_skip()
    from edgeconv import cli

    onnx_path = tmp_path / "e.onnx"
    assert cli.main(["export", "edgenet", "--input", "1,3,32,32", "-o", str(onnx_path), "-q"]) == 0
    assert cli.main(["compile", str(onnx_path), "--target", "x86", "-o", str(tmp_path / "e.so"), "-q"]) == 0
    assert (tmp_path / "e.so").stat().st_size > 0


@pytest.mark.slow
def test_deploy_over_rpc_tracker(tmp_path, rpc_tracker):
    from edgeconv.cli import parse_rpc

    res = run_deploy(_cfg(tmp_path, targets=["tvm-x86"], rpc=parse_rpc(rpc_tracker), rpc_target="x86"))
    st = res.stage("tvm-rpc")
    assert st.status == "passed", st.reason
    assert st.info["remote"] == rpc_tracker


@pytest.mark.slow
def test_ort_arm64_emulated_run(tmp_path):
    """opt-in target: aarch64 onnxruntime + the aarch64 kernel build under qemu (edgeconv.arm)."""
    res = run_deploy(_cfg(tmp_path, targets=["ort-arm64"]))
    st = res.stage("ort-arm64-run")
    if st.status == "skipped" and st.legit:
        pytest.skip(st.reason)  # no qemu-user / cross toolchain / aarch64 runtime here
    assert st.status == "passed", st.reason
    assert st.parity["rel"] <= 1e-4
