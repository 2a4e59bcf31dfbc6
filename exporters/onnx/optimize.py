"""``optimize_onnx``: rewrite deformable convolutions of an existing ONNX file to ``edgeconv.DeformConv2d``.

Recognised nodes (each becomes one ``edgeconv.DeformConv2d`` with the exporter's fallback function,
so the result still runs on a runtime without the edgeconv kernels):

* ONNX ``DeformConv`` (default domain, opset >= 19): inputs ``X, W, offset, B?, mask?``; attributes
  ``dilations, group, kernel_shape, offset_group, pads, strides``;
* mmcv / mmdeploy ``MMCVModulatedDeformConv2d`` (domains ``mmdeploy`` and ``mmcv``): inputs
  ``X, offset, mask, W, B?``; attributes ``stride, padding, dilation, groups, deform_groups``
  (mmdeploy's kernel reads ``deform_groups``, its documentation says ``deformable_groups``: both
  are accepted);
* ``MMCVDeformConv2d`` (same domains): inputs ``X, offset, W``; the same attributes, plus mmcv's
  ``bias`` (must be 0) and ``im2col_step`` (a CUDA batching knob, no effect on the result).

mmcv's offsets use the same layout as ONNX ``DeformConv`` and ours: per offset group, per kernel
tap ``(dy, dx)`` interleaved (``[y0, x0, y1, x1, ...]``, mmcv's ``deform_conv.py``), and the mask
is ``(offset_group, kh*kw)``. mmcv pads symmetrically (``padding = (ph, pw)``).

A node that cannot be mapped exactly is refused with :class:`OptimizeError` naming the node and the
reason; nothing is rewritten partially.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import onnx
from onnx import AttributeProto, ModelProto, TensorProto, helper

from . import fallbacks
from ._schemas import DEFORM_OP, DOMAIN, DOMAIN_VERSION, register_schemas
from .export import _EXTERNAL_DATA_THRESHOLD, _attach_fallbacks, _default_opset, _set_opset

__all__ = ["optimize_onnx", "rewritable_nodes", "OptimizeError", "Rewrite", "FALLBACKS"]

FALLBACKS = ("auto", "standard", "decomposed")
MMCV_DOMAINS = ("mmdeploy", "mmcv")
MMCV_MODULATED = "MMCVModulatedDeformConv2d"
MMCV_DEFORM = "MMCVDeformConv2d"
_DEFAULT_DOMAINS = ("", "ai.onnx")


class OptimizeError(ValueError):
    """``optimize_onnx`` cannot rewrite a node (or the model): the message names it and why."""


@dataclass
class Rewrite:
    """One rewritten node: ``name`` (node name or ``#index``), ``source`` (``domain::op``),
    the ``edgeconv.DeformConv2d`` attributes it got and whether it has a mask / bias."""

    name: str
    source: str
    attrs: dict = field(default_factory=dict)
    mask: bool = False
    bias: bool = False

    def __str__(self) -> str:
        a = self.attrs
        parts = [f"strides={a['strides']}", f"pads={a['pads']}", f"dilations={a['dilations']}",
                 f"group={a['group']}", f"offset_group={a['offset_group']}",
                 f"mask={'yes' if self.mask else 'no'}", f"bias={'yes' if self.bias else 'no'}"]
        return f"{self.name}: {self.source} -> {DOMAIN}.{DEFORM_OP} ({', '.join(parts)})"


# --------------------------------------------------------------------------- node recognition
def _kind(node) -> str | None:
    if node.op_type == "DeformConv" and node.domain in _DEFAULT_DOMAINS:
        return "onnx"
    if node.domain in MMCV_DOMAINS and node.op_type in (MMCV_MODULATED, MMCV_DEFORM):
        return "mmcv"
    return None


def _label(node, index: int) -> str:
    return repr(node.name) if node.name else f"#{index}"


def _source(node) -> str:
    return f"{node.domain or 'ai.onnx'}::{node.op_type}"


def rewritable_nodes(model: ModelProto) -> list[str]:
    """``domain::op`` of the top-level nodes :func:`optimize_onnx` rewrites (empty: nothing to do)."""
    return [_source(n) for n in model.graph.node if _kind(n)]


def _subgraph_nodes(graph, owner: str = ""):
    """(owner label, node) for every node inside a subgraph (If/Loop/Scan bodies)."""
    for i, n in enumerate(graph.node):
        for a in n.attribute:
            subs = [a.g] if a.type == AttributeProto.GRAPH else list(a.graphs)
            for g in subs:
                label = owner + f"{n.op_type} {_label(n, i)}/"
                for inner in g.node:
                    yield label, inner
                yield from _subgraph_nodes(g, label)


# --------------------------------------------------------------------------- attributes
class _Attrs:
    """A node's attributes with typed access; anything left unread at the end is refused."""

    def __init__(self, node, where: str):
        self.where = where
        self.attrs = {a.name: a for a in node.attribute}
        self.read: set[str] = set()

    def fail(self, why: str):
        raise OptimizeError(f"{self.where}: {why}")

    def ints(self, name: str, default, lengths: tuple[int, ...]) -> list[int] | None:
        self.read.add(name)
        a = self.attrs.get(name)
        if a is None:
            return None if default is None else list(default)
        if a.type != AttributeProto.INTS:
            self.fail(f"attribute {name!r} must be a list of ints")
        vals = [int(v) for v in a.ints]
        if len(vals) not in lengths:
            self.fail(f"attribute {name}={vals} has {len(vals)} values, expected "
                      f"{' or '.join(map(str, lengths))} (edgeconv.{DEFORM_OP} is 2-D)")
        return vals

    def int(self, name: str, default: int | None) -> int | None:
        self.read.add(name)
        a = self.attrs.get(name)
        if a is None:
            return default
        if a.type != AttributeProto.INT:
            self.fail(f"attribute {name!r} must be an int")
        return int(a.i)

    def finish(self) -> None:
        unknown = sorted(set(self.attrs) - self.read)
        if unknown:
            self.fail(f"unknown attribute{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}")


def _check_values(where: str, strides, pads, dilations, group, offset_group) -> None:
    if min(strides) < 1 or min(dilations) < 1:
        raise OptimizeError(f"{where}: strides {strides} and dilations {dilations} must be >= 1")
    if min(pads) < 0:
        raise OptimizeError(f"{where}: pads {pads} must be >= 0")
    if group < 1 or offset_group < 1:
        raise OptimizeError(f"{where}: group={group} and offset_group={offset_group} must be >= 1")


def _onnx_attrs(node, where: str) -> dict:
    """ONNX DeformConv-19 attributes -> edgeconv attributes (kernel_shape checked later)."""
    a = _Attrs(node, where)
    dil = a.ints("dilations", [1, 1], (2,))
    strides = a.ints("strides", [1, 1], (2,))
    pads = a.ints("pads", [0, 0, 0, 0], (4,))
    kernel = a.ints("kernel_shape", None, (2,))
    out = dict(strides=strides, pads=pads, dilations=dil, group=a.int("group", 1),
               offset_group=a.int("offset_group", 1))
    a.finish()
    return out | {"kernel_shape": kernel}


def _mmcv_pads(a: _Attrs) -> list[int]:
    pad = a.ints("padding", [0, 0], (1, 2, 4))
    if len(pad) == 1:
        pad = pad * 2
    elif len(pad) == 4:
        # mmdeploy's MMCVDeformConv2d symbolic writes (ph, ph, pw, pw) while its kernel reads
        # padding[0:2] as (ph, pw): only an all-equal list means the same to both.
        if len(set(pad)) != 1:
            a.fail(f"attribute padding={pad} is ambiguous (mmdeploy writes (ph, ph, pw, pw), its "
                   "kernel reads (ph, pw) from the first two); only equal values can be mapped")
        pad = pad[:2]
    return [pad[0], pad[1], pad[0], pad[1]]


def _mmcv_pair(a: _Attrs, name: str) -> list[int]:
    v = a.ints(name, [1, 1], (1, 2))
    return v * 2 if len(v) == 1 else v


def _mmcv_attrs(node, where: str) -> dict:
    a = _Attrs(node, where)
    strides, pads, dil = _mmcv_pair(a, "stride"), _mmcv_pads(a), _mmcv_pair(a, "dilation")
    groups = a.int("groups", 1)
    dg, dg_doc = a.int("deform_groups", None), a.int("deformable_groups", None)
    if dg is not None and dg_doc is not None and dg != dg_doc:
        a.fail(f"deform_groups={dg} and deformable_groups={dg_doc} disagree")
    offset_group = dg if dg is not None else (dg_doc if dg_doc is not None else 1)
    if node.op_type == MMCV_DEFORM:
        if a.int("bias", 0) != 0:
            a.fail("attribute bias=1: mmcv's DeformConv2d has no bias (the attribute must be 0)")
        a.int("im2col_step", None)  # CUDA batching granularity: does not change the result
    a.finish()
    return dict(strides=strides, pads=pads, dilations=dil, group=groups, offset_group=offset_group,
                kernel_shape=None)


# --------------------------------------------------------------------------- shapes
def _shapes(model: ModelProto) -> dict:
    """value name -> (elem_type, dims or None) from initializers, inputs and inferred value_info."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # an unknown custom op in a strange state: fall back to what the file says
        inferred = model
    out = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        dims = None
        if tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        out[vi.name] = (tt.elem_type, dims)
    for t in g.initializer:
        out[t.name] = (t.data_type, list(t.dims))
    return out


def _check_tensors(where: str, ins: dict, attrs: dict, shapes: dict) -> None:
    """Dtype (our kernel is float32), ranks, kernel_shape and channel counts where known."""
    for role, name in ins.items():
        if not name:
            continue
        elem, dims = shapes.get(name, (0, None))
        if elem and elem != TensorProto.FLOAT:
            raise OptimizeError(f"{where}: input {role} ({name!r}) is {TensorProto.DataType.Name(elem).lower()}; "
                                f"edgeconv.{DEFORM_OP} runs float32 only")
        want = 1 if role == "B" else 4
        if dims is not None and len(dims) != want:
            raise OptimizeError(f"{where}: input {role} ({name!r}) has rank {len(dims)}, expected {want} "
                                f"(edgeconv.{DEFORM_OP} is 2-D)")
    w = shapes.get(ins["W"], (0, None))[1]
    kernel = attrs["kernel_shape"]
    if kernel is not None:
        if w is None or w[2] is None or w[3] is None:
            raise OptimizeError(f"{where}: kernel_shape={kernel} cannot be checked against W ({ins['W']!r}), "
                                "whose kernel dims are not static")
        if [w[2], w[3]] != kernel:
            raise OptimizeError(f"{where}: kernel_shape={kernel} differs from W's kernel dims {w[2:]}")
    x = shapes.get(ins["X"], (0, None))[1]
    g, og = attrs["group"], attrs["offset_group"]
    if x is not None and x[1] is not None:
        if x[1] % g or x[1] % og:
            raise OptimizeError(f"{where}: X has {x[1]} channels, not divisible by group={g} and offset_group={og}")
        if w is not None and w[1] is not None and w[1] * g != x[1]:
            raise OptimizeError(f"{where}: X has {x[1]} channels but W ({ins['W']!r}) expects {w[1]} x group {g}")
    off = shapes.get(ins["offset"], (0, None))[1]
    if w is not None and off is not None and None not in (w[2], w[3], off[1]) and off[1] != 2 * og * w[2] * w[3]:
        raise OptimizeError(f"{where}: offset has {off[1]} channels, expected 2*offset_group*kh*kw = "
                            f"{2 * og * w[2] * w[3]}")


# --------------------------------------------------------------------------- rewrite
def _inputs(node, kind: str, where: str) -> dict:
    ins = list(node.input)
    if kind == "onnx":
        names, required = ("X", "W", "offset", "B", "mask"), 3
    elif node.op_type == MMCV_MODULATED:
        names, required = ("X", "offset", "mask", "W", "B"), 4
    else:
        names, required = ("X", "offset", "W"), 3
    if not required <= len(ins) <= len(names) or any(not n for n in ins[:required]):
        raise OptimizeError(f"{where}: expected inputs ({', '.join(names)}) with the first {required} present, "
                            f"got {len(ins)}: {ins}")
    got = dict(zip(names, ins))
    return {k: got.get(k, "") for k in ("X", "W", "offset", "mask", "B")}


def _plan(model: ModelProto, opset: int) -> list[tuple[int, dict, dict]]:
    """(node index, edgeconv inputs, edgeconv attrs) for every rewritable node; raises on the first
    node that cannot be mapped, before anything is changed."""
    for owner, inner in _subgraph_nodes(model.graph):
        if _kind(inner):
            raise OptimizeError(f"node {inner.name or inner.op_type!r} ({_source(inner)}) is inside the "
                                f"subgraph of {owner.rstrip('/')}; only top-level nodes can be rewritten")
    shapes = _shapes(model)
    plan = []
    for i, node in enumerate(model.graph.node):
        kind = _kind(node)
        if kind is None:
            continue
        where = f"node {_label(node, i)} ({_source(node)})"
        if kind == "onnx" and opset < fallbacks.MIN_OPSET_STANDARD_DEFORM:
            raise OptimizeError(f"{where}: the model imports opset {opset}, but DeformConv exists from opset "
                                f"{fallbacks.MIN_OPSET_STANDARD_DEFORM} (unsupported opset)")
        if len(node.output) != 1:
            raise OptimizeError(f"{where}: expected 1 output, got {len(node.output)}")
        attrs = _onnx_attrs(node, where) if kind == "onnx" else _mmcv_attrs(node, where)
        _check_values(where, attrs["strides"], attrs["pads"], attrs["dilations"], attrs["group"],
                      attrs["offset_group"])
        ins = _inputs(node, kind, where)
        _check_tensors(where, ins, attrs, shapes)
        del attrs["kernel_shape"]
        plan.append((i, ins, attrs))
    return plan


def _rewrite(node, ins: dict, attrs: dict) -> None:
    node.domain, node.op_type = DOMAIN, DEFORM_OP
    del node.input[:]
    node.input.extend([ins["X"], ins["W"], ins["offset"], ins["mask"], ins["B"]])
    del node.attribute[:]
    node.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())


def _fallback_mode(fallback: str, opset: int) -> str:
    if fallback == "auto":
        return "standard" if opset >= fallbacks.MIN_OPSET_STANDARD_DEFORM else "decomposed"
    if fallback == "standard" and opset < fallbacks.MIN_OPSET_STANDARD_DEFORM:
        raise OptimizeError(f"fallback='standard' is one ONNX DeformConv, which needs opset >= "
                            f"{fallbacks.MIN_OPSET_STANDARD_DEFORM}; the model imports opset {opset} "
                            "(use fallback='decomposed' or 'auto')")
    return fallback


def _load(model_or_path) -> ModelProto:
    if isinstance(model_or_path, ModelProto):
        work = ModelProto()
        work.CopyFrom(model_or_path)
        return work
    if isinstance(model_or_path, (str, os.PathLike)):
        try:
            return onnx.load(os.fspath(model_or_path))
        except Exception as exc:
            raise OptimizeError(f"cannot read ONNX model {os.fspath(model_or_path)!r}: {exc}") from exc
    raise OptimizeError(f"expected an onnx.ModelProto or a path, got {type(model_or_path).__name__}")


def _raise_opset(model: ModelProto, opset: int) -> ModelProto:
    """The decomposed fallback needs opset 13: up-convert the default domain (custom nodes untouched)."""
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, fallbacks.MIN_OPSET_DECOMPOSED)
    except Exception as exc:
        raise OptimizeError(f"the model imports opset {opset}; the fallback function needs opset >= "
                            f"{fallbacks.MIN_OPSET_DECOMPOSED} and onnx's version converter failed: "
                            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from exc


def _prune_unused_domains(model: ModelProto) -> None:
    used = {n.domain for n in model.graph.node} | {f.domain for f in model.functions}
    for f in model.functions:
        used |= {n.domain for n in f.node}
    keep = [o for o in model.opset_import if o.domain in _DEFAULT_DOMAINS or o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def optimize_onnx(model_or_path, path: str | os.PathLike | None = None, *, fallback: str = "auto",
                  report: list | None = None) -> ModelProto:
    """Rewrite the deformable convolutions of an ONNX model to ``edgeconv.DeformConv2d``.

    Args:
        model_or_path: an ``onnx.ModelProto`` (not modified) or a path to an ``.onnx`` file.
        path: optional file to save the result to.
        fallback: body of the model-local fallback function: ``"standard"`` (one ONNX
            ``DeformConv``, opset >= 19), ``"decomposed"`` (opset-13 operators; an older model is
            up-converted to opset 13) or ``"auto"`` (standard from opset 19, else decomposed).
        report: a list that receives one :class:`Rewrite` per rewritten node.

    Returns the rewritten model (a copy, equal to the input when there is nothing to rewrite). Raises :class:`OptimizeError` naming the first node that cannot be
    mapped (unknown attribute, non-static kernel shape, unsupported opset, non-float32, ...).
    """
    model = _load(model_or_path)
    register_schemas()
    opset = _default_opset(model)
    if opset is None:
        raise OptimizeError("the model imports no default-domain (ai.onnx) opset")
    if fallback not in FALLBACKS:
        raise OptimizeError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    plan = _plan(model, opset)
    rewrites = []
    if plan:
        mode = _fallback_mode(fallback, opset)
        if mode == "decomposed" and opset < fallbacks.MIN_OPSET_DECOMPOSED:
            model = _raise_opset(model, opset)  # adds nodes: plan again on the converted graph
            opset = fallbacks.MIN_OPSET_DECOMPOSED
            plan = _plan(model, opset)
        for i, ins, attrs in plan:
            node = model.graph.node[i]
            rewrites.append(Rewrite(_label(node, i), _source(node), dict(attrs), bool(ins["mask"]), bool(ins["B"])))
            _rewrite(node, ins, attrs)
        # One fallback function serves every DeformConv2d node of the model: rebuild it.
        kept = [f for f in model.functions if (f.domain, f.name) != (DOMAIN, DEFORM_OP)]
        del model.functions[:]
        model.functions.extend(kept)
        _set_opset(model, DOMAIN, DOMAIN_VERSION)
        _attach_fallbacks(model, opset, "auto", "custom", mode)
        _prune_unused_domains(model)
        try:
            onnx.checker.check_model(model)
        except Exception as exc:  # pragma: no cover - a bug of ours, reported, never silently wrong
            raise OptimizeError(f"the rewritten model does not pass onnx.checker: {exc}") from exc
    if report is not None:
        report.extend(rewrites)
    if path is not None:
        path = os.fspath(path)
        if model.ByteSize() > _EXTERNAL_DATA_THRESHOLD:  # protobuf cannot serialize >= 2 GiB
            onnx.save_model(model, path, save_as_external_data=True, location=os.path.basename(path) + ".data")
        else:
            onnx.save_model(model, path)
    return model
