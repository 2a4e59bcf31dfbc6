"""The installed package: mapped sub-packages, no generic top-level packages, the kernel library."""

import subprocess
import sys
from pathlib import Path


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
