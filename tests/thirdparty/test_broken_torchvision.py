"""A user whose torchvision import is broken (as PyPI's wheel next to a CPU torch is) can still
export: edgeconv never imports torchvision or timm (tested in a fresh interpreter, where a
``torchvision`` package that raises on import shadows any real one)."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys
    try:
        import torchvision
    except RuntimeError as exc:
        assert "nms does not exist" in str(exc)
    else:
        raise AssertionError("the broken torchvision imported")
    import torch
    from torch import nn
    import edgeconv
    from edgeconv.layers import DeformConv2d, DynamicConv2d

    model = edgeconv.convert(nn.Sequential(DeformConv2d(4, 8, 3, padding=1), DynamicConv2d(8, 8, 3)).eval())
    proto = edgeconv.export_onnx(model, (torch.randn(1, 4, 8, 8),))
    print(sorted(n.op_type for n in proto.graph.node if n.domain == "edgeconv"))
""")


def test_export_works_when_torchvision_import_is_broken(tmp_path):
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n')
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "['DeformConv2d', 'DynamicConv2d']"
