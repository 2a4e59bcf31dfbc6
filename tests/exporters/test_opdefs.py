"""The one definition of each edgeconv ONNX op (edgeconv/opdefs.py) against what restates it:
the registered schema, the docs tables (docs/onnx-ops.md) and the translations' attributes."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
import pytest
from onnx import helper

from edgeconv.exporters.onnx import schemas
from edgeconv.opdefs import DEFORM_CONV2D, DOMAIN, DOMAIN_VERSION, DYNAMIC_CONV2D, OPS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "onnx-ops.md"


def _section(op) -> str:
    """The docs section of ``op``: from its heading to the next heading."""
    text = DOCS.read_text()
    heading = f"### `{op.signature()}`"
    assert heading in text, f"docs/onnx-ops.md has no heading {heading}"
    return text.split(heading, 1)[1].split("\n#", 1)[0]


def _table_rows(section: str, first_header: str) -> list[list[str]]:
    """Cells of the markdown table whose first header cell is ``first_header``."""
    lines = section.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


@pytest.mark.parametrize("op", list(OPS.values()), ids=list(OPS))
def test_docs_inputs_match_the_definition(op):
    rows = _table_rows(_section(op), "input")
    want = [(f"`{i.name}`" + (" (optional)" if i.optional else ""), f"`{i.shape}`") for i in op.inputs]
    assert [(r[0], r[1]) for r in rows] == want


def test_docs_attributes_match_the_definition():
    rows = _table_rows(_section(DEFORM_CONV2D), "attribute")
    fmt = lambda d: str(list(d)) if isinstance(d, tuple) else str(d)  # noqa: E731
    assert [(r[0], r[1]) for r in rows] == [(f"`{a.name}`", f"`{fmt(a.default)}`") for a in DEFORM_CONV2D.attributes]
    # DynamicConv2d: "as for DeformConv2d (same defaults)" -- its attributes are a subset with equal defaults
    assert "as for `DeformConv2d` (same defaults)" in _section(DYNAMIC_CONV2D)
    assert DYNAMIC_CONV2D.defaults.items() <= DEFORM_CONV2D.defaults.items()


def test_schema_is_the_definition():
    by_name = {s.name: s for s in schemas()}
    assert set(by_name) == set(OPS)
    for name, op in OPS.items():
        s = by_name[name]
        assert (s.domain, s.since_version) == (DOMAIN, DOMAIN_VERSION)
        assert [(i.name, i.option == onnx.defs.OpSchema.FormalParameterOption.Optional) for i in s.inputs] == \
            [(i.name, i.optional) for i in op.inputs]
        assert s.type_constraints[0].allowed_type_strs == ["tensor(float)"]  # float32 only, like the kernels
        defaults = {k: helper.get_attribute_value(a.default_value) for k, a in s.attributes.items()}
        assert defaults == {a.name: list(a.default) if a.is_list else a.default for a in op.attributes}


def test_node_attributes_checks_names_and_types():
    assert DEFORM_CONV2D.node_attributes(group=2, strides=(2, 1)) == {"strides": [2, 1], "group": 2}
    with pytest.raises(ValueError, match="no attribute offset_group"):
        DYNAMIC_CONV2D.node_attributes(offset_group=1)
    with pytest.raises(ValueError, match="pads must be 4 ints"):
        DEFORM_CONV2D.node_attributes(pads=[1, 1])
    with pytest.raises(ValueError, match="group must be an int"):
        DEFORM_CONV2D.node_attributes(group=1.5)


def test_exported_nodes_carry_the_defined_attributes():
    """the attribute sets the exporter writes (unchanged by the refactor): every attribute of the op"""
    import torch

    from edgeconv import layers as L
    from edgeconv.exporters.onnx import export_onnx

    model = torch.nn.Sequential(L.ModulatedDeformConv2d(4, 4, 3), L.DynamicConv2d(4, 4, 3)).eval()
    proto = export_onnx(model, (torch.randn(1, 4, 8, 8),))
    nodes = {n.op_type: n for n in proto.graph.node if n.domain == DOMAIN}
    for name, op in OPS.items():
        assert {a.name for a in nodes[name].attribute} == {a.name for a in op.attributes}
    fn_defaults = {f.name: {a.name for a in f.attribute_proto} for f in proto.functions if f.domain == DOMAIN}
    assert fn_defaults == {name: {a.name for a in op.attributes} for name, op in OPS.items()}


def test_no_other_module_restates_the_domain():
    """``"edgeconv"`` as an ONNX domain appears in edgeconv/opdefs.py only"""
    root = Path(__file__).resolve().parents[2]
    pattern = re.compile(r"""domain\s*(==|=)\s*["']edgeconv["']|make_opsetid\(\s*["']edgeconv["']|DOMAIN\s*=\s*["']""")
    hits = [str(p.relative_to(root)) for d in ("edgeconv", "exporters", "models") for p in (root / d).rglob("*.py")
            if pattern.search(p.read_text())]
    assert hits == ["edgeconv/opdefs.py"]
