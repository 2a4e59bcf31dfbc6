"""The installed package: mapped sub-packages, no generic top-level packages, the kernel library."""

import subprocess
import sys
from pathlib import Path

import pytest


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    # A directory outside the repository, so only what is installed can be imported.
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)


def test_exporters_and_models_are_mapped_under_edgeconv(tmp_path):
    result = _run("import edgeconv.exporters, edgeconv.models, edgeconv.layers", tmp_path)
    assert result.returncode == 0, result.stderr


def test_no_generic_top_level_packages(tmp_path):
    for name in ("exporters", "models"):
        result = _run(f"import {name}", tmp_path)
        assert result.returncode != 0, f"'import {name}' must not work outside the repository"
        assert "part of edgeconv" in result.stderr or "No module named" in result.stderr


def test_kernel_library_ships_inside_the_package(tmp_path):
    result = _run("import edgeconv, os; p = edgeconv.get_library_path(); print(p); assert os.path.isfile(p)", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "edgeconv" in Path(result.stdout.strip()).parent.name


# ------------------------------------------------------------------------------------------
# the wheel on its own (pyproject.toml; the slow test builds and installs it)
# ------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pin(name: str) -> str:
    line = next(l for l in (ROOT / "constraints.txt").read_text().splitlines() if l.startswith(f"{name}=="))
    return line.strip()


def test_wheel_config_ships_the_arm_sources_and_fits_its_tag():
    wheel = _pyproject()["tool"]["scikit-build"]["wheel"]
    assert wheel["py-api"] == "py3"  # the kernel library links no Python
    from edgeconv.arm.toolchain import PACKAGED_SOURCE

    prefix = "edgeconv/" + PACKAGED_SOURCE.name
    for src in ("runners", "custom_ops", "cmake", "scripts"):  # what edgeconv.arm builds and runs
        assert wheel["packages"][f"{prefix}/{src}"] == src
        assert (ROOT / src).is_dir()
    for script in ("fetch_arm_runtime.sh", "fetch_ort_headers.sh"):  # run by edgeconv.arm.toolchain
        assert f"{prefix}/scripts/{script}" not in wheel["exclude"] and (ROOT / "scripts" / script).is_file()


def test_tvm_extra_carries_the_tvm_ffi_pin():
    assert _pin("apache-tvm-ffi") in _pyproject()["project"]["optional-dependencies"]["tvm"]


def _run_ok(cmd, **kw):
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert res.returncode == 0, f"{cmd}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.mark.slow
def test_wheel_installed_alone_deploys(tmp_path):
    """Build the wheel, install it into a fresh venv outside the repository (torch kept at the
    constraints' pin), run `edgeconv deploy` there: exit 0 without extras (TVM stages skipped, a
    legitimate skip) and with [tvm,plot] (arm64 cross-compile and emulated run from the wheel's
    own sources)."""
    import json

    dist = tmp_path / "dist"
    _run_ok([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
             "-C", f"build-dir={tmp_path / 'build'}", str(ROOT)], timeout=1800)
    (whl,) = dist.glob("edgeconv-*.whl")
    assert whl.name.endswith("-py3-none-linux_x86_64.whl"), whl.name
    venv = tmp_path / "venv"
    _run_ok([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt")]
    _run_ok(pip + [str(whl)], timeout=1800)
    deploy = [str(venv / "bin" / "edgeconv"), "deploy", "--repeats", "2", "-q"]
    res = _run_ok(deploy + ["-o", "bare"], cwd=tmp_path, timeout=1800)
    stages = {s["name"]: s for s in json.loads((tmp_path / "bare" / "report.json").read_text())["stages"]}
    assert stages["ort"]["status"] == "passed"  # the kernel library ships in the wheel
    assert all(stages[n]["status"] == "skipped" and stages[n]["legit"] for n in ("tvm-x86", "tvm-arm64-run"))

    _run_ok(pip + [f"edgeconv[tvm,plot] @ {whl.as_uri()}"], timeout=1800)
    res = _run_ok(deploy + ["-o", "full"], cwd=tmp_path, timeout=1800)
    stages = {s["name"]: s for s in json.loads((tmp_path / "full" / "report.json").read_text())["stages"]}
    assert stages["tvm-x86"]["status"] == "passed" and stages["tvm-arm64"]["status"] == "passed"
    arm = stages["tvm-arm64-run"]
    assert arm["status"] == "passed" or arm["legit"], arm["reason"]
    assert "exit code 0" in res.stdout
