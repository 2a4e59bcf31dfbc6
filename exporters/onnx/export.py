"""``export_onnx``: PyTorch model -> ONNX with the ``edgeconv`` custom domain and fallbacks."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import re
import warnings
from typing import Any

import numpy as np
import onnx
import onnx.inliner
import torch
from onnx import ModelProto, TensorProto, helper, numpy_helper

from . import fallbacks
from ._schemas import DEFORM_OP, DOMAIN, DOMAIN_VERSION, DYNAMIC_OP, register_schemas
from .downgrade import DowngradeError, downgrade
from .errors import ExportError
from .translations import TRANSLATIONS, translation_table

__all__ = ["export_onnx", "standard_op_model", "SUPPORTED_DTYPES", "MIN_OPSET", "MAX_OPSET"]

MIN_OPSET = 13
MAX_OPSET = onnx.defs.onnx_opset_version()
TRANSLATION_OPSET = 18  # torch.onnx translates at 18; higher is up-converted, lower down-converted
SUPPORTED_DTYPES = (torch.float32,)
_DEFORM_MODES = ("auto", "custom", "standard")
_DYNAMIC_MODES = ("custom", "decomposed")
_FALLBACK_MODES = ("standard", "decomposed")
_ARITY = {DEFORM_OP: 5, DYNAMIC_OP: 4}
_EXTERNAL_DATA_THRESHOLD = 1_800_000_000  # bytes


# --------------------------------------------------------------------------- checks
def _ensure_torch_ops() -> None:
    """Make sure the ``edgeconv::`` custom ops are defined (they live in edgeconv.functional)."""
    if not hasattr(torch.ops.edgeconv, "deform_conv2d"):
        with contextlib.suppress(ImportError):
            importlib.import_module("edgeconv.functional")


def _check_options(opset, deform, dynamic, deform_fallback) -> None:
    if deform not in _DEFORM_MODES:
        raise ExportError(f"deform must be one of {_DEFORM_MODES}, got {deform!r}", option="deform")
    if dynamic not in _DYNAMIC_MODES:
        raise ExportError(f"dynamic must be one of {_DYNAMIC_MODES}, got {dynamic!r}", option="dynamic")
    if deform_fallback not in _FALLBACK_MODES:
        raise ExportError(f"deform_fallback must be one of {_FALLBACK_MODES}, got {deform_fallback!r}",
                          option="deform_fallback")
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset must be an int in [{MIN_OPSET}, {MAX_OPSET}], got {opset!r}", option="opset")
    if deform == "standard" and opset < fallbacks.MIN_OPSET_STANDARD_DEFORM:
        raise ExportError(
            f"deform='standard' emits ONNX DeformConv, which exists from opset "
            f"{fallbacks.MIN_OPSET_STANDARD_DEFORM}; got opset={opset}. Use opset>=19, or "
            "deform='auto' with deform_fallback='decomposed' for opset 13..18.", option="opset")


def _iter_tensors(obj, path="args"):
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _iter_tensors(v, f"{path}[{i}]")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _iter_tensors(v, f"{path}[{k!r}]")


def _check_names(what: str, names, available: int | None) -> list[str] | None:
    """``input_names`` / ``output_names``: unique non-empty strings, at most ``available``."""
    if names is None:
        return None
    if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise ExportError(f"{what} must be a sequence of non-empty strings, got {names!r}", option=what)
    names = list(names)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ExportError(f"{what} must be unique, got {dup} more than once", option=what)
    if available is not None and len(names) > available:
        raise ExportError(f"{what} has {len(names)} names, the model has {available}", option=what)
    return names


def _check_dtypes(model: torch.nn.Module, args: tuple) -> None:
    allowed = ", ".join(str(d).replace("torch.", "") for d in SUPPORTED_DTYPES)
    for path, t in _iter_tensors(args):
        if t.dtype not in SUPPORTED_DTYPES:
            raise ExportError(
                f"unsupported dtype {str(t.dtype).replace('torch.', '')} for input {path} "
                f"(shape {tuple(t.shape)}); edgeconv exports {allowed} models only: convert with "
                "model.float() and float inputs")
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in named:
            if (t.is_floating_point() or t.is_complex()) and t.dtype not in SUPPORTED_DTYPES:
                raise ExportError(
                    f"unsupported dtype {str(t.dtype).replace('torch.', '')} for {kind} {name!r}; "
                    f"edgeconv exports {allowed} models only (use model.float())")


def _dynamic_shapes(args: tuple, dynamic_batch: bool):
    if not dynamic_batch:
        return None
    batch = torch.export.Dim("batch")

    def spec(a):
        if isinstance(a, torch.Tensor):
            return {0: batch} if a.dim() >= 1 else None
        if isinstance(a, (list, tuple)):
            return type(a)(spec(v) for v in a)
        if isinstance(a, dict):
            return {k: spec(v) for k, v in a.items()}
        return None

    return tuple(spec(a) for a in args)


# --------------------------------------------------------------------------- errors
def _op_from_exception(exc: BaseException) -> str | None:
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        m = re.search(r"No ONNX function found for <OpOverload\(op='([\w.]+)', overload='(\w+)'\)>", str(e))
        if m is None:
            m = re.search(r"No ONNX function found for ([\w.:]+)", str(e))
        if m is not None:
            return m.group(1)
        e = e.__cause__ or e.__context__
    return None


def _node_target_name(node) -> str:
    t = node.target
    if isinstance(t, torch._ops.OpOverload):
        return f"{t.namespace}.{t._opname}"
    return str(getattr(t, "__name__", t))


def _find_module(program, op: str | None):
    """(module path, module class name) of the first graph node running ``op``."""
    if program is None or op is None:
        return None, None
    short = op.split(".default")[0]
    base = short.split(".")[-1].strip("_")

    def exact(name, node):
        return name == short or str(node.target) == op

    def fuzzy(name, node):  # the op may come from a decomposition (aten.linalg_svd -> _linalg_svd)
        b = name.split(".")[-1].strip("_")
        return bool(b) and (b == base or b in base or base in b)

    calls = [n for n in program.graph.nodes if n.op == "call_function"]
    match = next((n for n in calls if exact(_node_target_name(n), n)), None)
    if match is None:
        match = next((n for n in calls if fuzzy(_node_target_name(n), n)), None)
    return _node_module(match) if match is not None else (None, None)


def _node_module(node):
    """(module path, module class name) of the innermost module that ran graph ``node``."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "<root>", None
    path, cls = list(stack.values())[-1]
    cls_name = getattr(cls, "__name__", None) or str(cls).rsplit(".", 1)[-1].strip("'>")
    return re.sub(r"L\['self'\]\.?", "", path) or "<root>", cls_name


def _qualname(op: str) -> str:
    parts = op.split(".")
    return f"{parts[0]}::{parts[1]}" if len(parts) >= 2 else op


def _raise_translation_error(exc: BaseException, program) -> None:
    op = _op_from_exception(exc)
    if op is None:
        # A translation function of ours refused the call (static shape etc.)
        e: BaseException | None = exc
        while e is not None:
            if type(e).__name__ == "TranslationError":
                raise ExportError(f"edgeconv ONNX export failed: {e}") from exc
            e = e.__cause__ or e.__context__
        root = _root_cause(exc)
        node = _failing_node(exc)
        where = ""
        if node is not None:
            module, cls = _find_module(program, node)
            where = f" translating {node}" + (f" in module '{module}'" + (f" ({cls})" if cls else "")
                                               if module else "")
        hint = f" {_STATIC_BATCH_HINT}" if _has_symbolic_batch(program) else ""
        raise ExportError(f"edgeconv ONNX export failed{where}: "
                          f"{_clean(f'{type(root).__name__}: {root}')}.{hint}") from exc
    module, cls = _find_module(program, op)
    where = f" used by module '{module}'" + (f" ({cls})" if cls else "") if module else ""
    raise ExportError(
        f"no ONNX export rule for operator '{_qualname(op)}'{where}: torch.onnx has no translation "
        f"for it and edgeconv only adds {sorted(TRANSLATIONS)}. Replace the op, or pass a translation: "
        f"export_onnx(..., custom_translation_table={{torch.ops.{op.split('.default')[0]}.default: "
        "onnxscript_function}).",
        op=_qualname(op), module=module, module_type=cls) from exc


def _short(exc: BaseException, limit: int = 2000) -> str:
    s = f"{type(exc).__name__}: {exc}"
    return s if len(s) <= limit else s[:limit] + " ..."


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_STATIC_BATCH_HINT = "If the model computes shapes from the batch size, export with dynamic_batch=False."


def _clean(text: str, limit: int = 300) -> str:
    """``text`` as one line: no ANSI colour codes, whitespace runs collapsed, at most ``limit``."""
    text = " ".join(_ANSI.sub("", text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of the ``__cause__``/``__context__`` chain (the real error:
    torch.onnx wraps it in several ConversionErrors whose text is generic advice)."""
    seen, e = {id(exc)}, exc
    while (nxt := e.__cause__ or e.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        e = nxt
    return e


def _failing_node(exc: BaseException) -> str | None:
    """The aten op torch.onnx was translating when it failed (``aten.conv2d.default``), if named."""
    e: BaseException | None = exc
    while e is not None:
        m = re.search(r"Error when translating node .*?target=torch\.ops\.([\w.]+)\]", str(e))
        if m is not None:
            return m.group(1)
        e = e.__cause__ or e.__context__
    return None


_CONV_GROUPS_ARG = {"aten.conv2d.default": 6, "aten.convolution.default": 8, "aten.conv1d.default": 6,
                    "aten.conv3d.default": 6}


def _has_symbolic_batch(program) -> bool:
    return program is not None and any(
        isinstance(d, torch.SymInt) for n in program.graph.nodes if n.op == "placeholder"
        for d in getattr(n.meta.get("val"), "shape", ()))


def _check_constant_groups(program) -> None:
    """ONNX ``Conv`` needs a constant ``group``. A convolution whose groups come from a tensor
    size (the batch folded into groups, as timm's ``CondConv2d`` does) cannot be exported with a
    dynamic batch: say so in one line, naming the module, instead of torch.onnx's traceback."""
    for node in program.graph.nodes:
        index = _CONV_GROUPS_ARG.get(str(node.target)) if node.op == "call_function" else None
        if index is None:
            continue
        groups = node.kwargs.get("groups", node.args[index] if len(node.args) > index else 1)
        if not isinstance(groups, torch.fx.Node):
            continue
        module, cls = _node_module(node)
        where = f" in module '{module}'" + (f" ({cls})" if cls else "") if module else ""
        raise ExportError(
            f"cannot export with a dynamic batch: the convolution{where} takes its groups from the "
            "batch size (the batch is folded into the channels, as timm's CondConv2d does), and "
            "ONNX Conv needs a constant group. Remedy: model = edgeconv.convert(model) (swaps "
            "known third-party modules for edgeconv layers with the same weights), or export "
            "with dynamic_batch=False.", op=_qualname(str(node.target)), module=module, module_type=cls)


# --------------------------------------------------------------------------- torch side
@contextlib.contextmanager
def _quiet():
    """Silence torch.onnx's progress prints and warnings (deprecations, "Obtain model graph"
    info lines); ``EDGECONV_VERBOSE=1`` (the CLI's ``--verbose``) shows them."""
    from edgeconv._quiet import verbose

    if verbose():
        yield
        return
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "torch._export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _torch_export(model, args, dynamic_shapes):
    try:
        # backed_size_oblivious: an example batch of 1 stays symbolic (as in torch.onnx.export)
        with _quiet(), torch.fx.experimental._config.patch(backed_size_oblivious=True):
            return torch.export.export(model, args, dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as exc:
        cause = _clean(f"{type(exc).__name__}: {exc}")
        if dynamic_shapes is None:
            raise ExportError(f"torch.export failed: {cause}") from exc
        if re.search(r"[Cc]onstraint|specializ|guard", str(exc)):
            raise ExportError("torch.export failed (the model specializes the batch dimension; try "
                              f"dynamic_batch=False): {cause}") from exc
        raise ExportError(f"torch.export failed: {cause}. {_STATIC_BATCH_HINT}") from exc


_REGISTRY_CACHE: dict = {}


@contextlib.contextmanager
def _cached_torchlib_registry():
    """Build torch.onnx's torchlib registry once per opset instead of on every export (it costs
    ~3 s: onnxscript re-parses ~500 functions). Each export gets a fresh registry object sharing
    the cached decomposition lists. Falls back to the stock behaviour if the private API moved."""
    try:
        from torch.onnx._internal.exporter import _registration

        cls = _registration.ONNXRegistry
        original = cls.__dict__["from_torchlib"]
    except (ImportError, AttributeError, KeyError):
        yield
        return

    def from_torchlib(klass, opset_version=TRANSLATION_OPSET):
        cached = _REGISTRY_CACHE.get(opset_version)
        if cached is None:
            cached = _REGISTRY_CACHE[opset_version] = original.__func__(klass, opset_version=opset_version)
        fresh = klass()
        fresh.__dict__.update({k: v for k, v in cached.__dict__.items() if k != "functions"})
        fresh.functions = {k: list(v) for k, v in cached.functions.items()}
        return fresh

    cls.from_torchlib = classmethod(from_torchlib)
    try:
        yield
    finally:
        cls.from_torchlib = original


def _onnx_translate(program, opset: int, custom_translation_table: dict | None = None,
                    input_names=None, output_names=None) -> ModelProto:
    table = {**translation_table(), **(custom_translation_table or {})}
    try:
        with _quiet(), _cached_torchlib_registry():
            onnx_program = torch.onnx.export(
                program, (), dynamo=True, custom_translation_table=table,
                opset_version=max(opset, TRANSLATION_OPSET), optimize=True, verbose=False, report=False,
                input_names=input_names, output_names=output_names)
    except Exception as exc:
        _raise_translation_error(exc, program)
    return onnx_program.model_proto


# --------------------------------------------------------------------------- ONNX post passes
FOLD_SIZE_LIMIT = 1 << 27  # elements; weights are folded whatever their size (e.g. a flipped kernel)


def _fold_constants(proto: ModelProto) -> ModelProto:
    """Constant-fold weight preprocessing (Flip/Slice, Transpose, Reshape, ... of initializers)
    into initializers. torch.onnx's own pass only folds inputs up to 8192 elements."""
    import onnxscript.optimizer

    with _quiet():
        return onnxscript.optimizer.optimize(
            proto, input_size_limit=FOLD_SIZE_LIMIT, output_size_limit=FOLD_SIZE_LIMIT, inline=False)


def _prune_initializers(model: ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input}
    used |= {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    if len(keep) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)


def _edgeconv_nodes(graph, op_type=None):
    return [n for n in graph.node if n.domain == DOMAIN and (op_type is None or n.op_type == op_type)]


def _pad_inputs(graph) -> None:
    """Give every edgeconv node its full input arity ('' for absent optional inputs): an ONNX
    function call needs one actual per formal for onnx.reference."""
    for n in _edgeconv_nodes(graph):
        while len(n.input) < _ARITY.get(n.op_type, len(n.input)):
            n.input.append("")


def _present(n, i) -> bool:
    return len(n.input) > i and n.input[i] != ""


class _Namer:
    def __init__(self, graph):
        self.used = {v for n in graph.node for v in list(n.input) + list(n.output)}
        self.used |= {i.name for i in graph.initializer} | {i.name for i in graph.input}

    def __call__(self, base):
        i, name = 0, base
        while name in self.used:
            i += 1
            name = f"{base}_{i}"
        self.used.add(name)
        return name


def _elem_type(model, name) -> int:
    for coll in (model.graph.input, model.graph.value_info, model.graph.output):
        for vi in coll:
            if vi.name == name and vi.type.tensor_type.elem_type:
                return vi.type.tensor_type.elem_type
    for i in model.graph.initializer:
        if i.name == name:
            return i.data_type
    return TensorProto.FLOAT


def _materialize(model, op_type, index, kind) -> None:
    """Give the nodes of ``op_type`` that lack input ``index`` its default (ones mask / zero bias)."""
    graph = model.graph
    name = _Namer(graph)
    inits = {i.name: i for i in graph.initializer}
    new_nodes = []
    for n in graph.node:
        if n.domain == DOMAIN and n.op_type == op_type and not _present(n, index):
            elem = _elem_type(model, n.input[0])
            np_dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
            w = inits.get(n.input[1])
            if kind == "bias" and w is not None:
                dims = list(w.dims[:1]) if op_type == DEFORM_OP else list(w.dims[:2])
                t = numpy_helper.from_array(np.zeros(dims, np_dtype), name(f"{n.name or op_type}_zero_bias"))
                graph.initializer.append(t)
                n.input[index] = t.name
            elif kind == "bias":
                shp = name("w_shape")
                end = 1 if op_type == DEFORM_OP else 2
                new_nodes.append(helper.make_node("Shape", [n.input[1]], [shp]))
                sl = name("bias_shape")
                starts, ends, axes = name("c0"), name("c_end"), name("c_ax")
                graph.initializer.extend([
                    numpy_helper.from_array(np.array([0], np.int64), starts),
                    numpy_helper.from_array(np.array([end], np.int64), ends),
                    numpy_helper.from_array(np.array([0], np.int64), axes)])
                out = name("zero_bias")
                new_nodes += [
                    helper.make_node("Slice", [shp, starts, ends, axes], [sl]),
                    helper.make_node("ConstantOfShape", [sl], [out],
                                     value=helper.make_tensor("v", elem, [1], [0])),
                ]
                n.input[index] = out
            else:  # mask of ones, shape = offset shape with half the channels
                shp, half, out = name("offset_shape"), name("mask_shape"), name("ones_mask")
                div = name("c_halve")
                graph.initializer.append(numpy_helper.from_array(np.array([1, 2, 1, 1], np.int64), div))
                new_nodes += [
                    helper.make_node("Shape", [n.input[2]], [shp]),
                    helper.make_node("Div", [shp, div], [half]),
                    helper.make_node("ConstantOfShape", [half], [out],
                                     value=helper.make_tensor("v", elem, [1], [1])),
                ]
                n.input[index] = out
        new_nodes.append(n)
    del graph.node[:]
    graph.node.extend(new_nodes)


def _replace_deform_with_standard(graph) -> None:
    for n in _edgeconv_nodes(graph, DEFORM_OP):
        x, w, off, mask, b = (list(n.input) + [""] * 5)[:5]
        ins = [x, w, off, b, mask]
        while ins and ins[-1] == "":
            ins.pop()
        n.domain = ""
        n.op_type = "DeformConv"
        del n.input[:]
        n.input.extend(ins)


def _set_opset(model, domain, version) -> None:
    for o in model.opset_import:
        if o.domain == domain:
            o.version = version
            return
    model.opset_import.append(helper.make_opsetid(domain, version))


def _drop_unused_domain(model) -> None:
    if not any(n.domain == DOMAIN for n in model.graph.node):
        keep = [o for o in model.opset_import if o.domain != DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(keep)


def _inline_dynamic(model, opset, nodes) -> None:
    """dynamic="decomposed": inline the decomposition into the graph, each node with the variant
    matching its inputs (no zero bias needed), then fold the weight re-layout into initializers."""
    variants = {}
    for n in nodes:
        has_bias = _present(n, 3)
        name = DYNAMIC_OP + ("" if has_bias else "__nobias")
        if name not in variants:
            f = fallbacks.dynamic_decomposed_function(opset, has_bias)
            f.name = name
            variants[name] = f
        n.op_type = name
    work = onnx.ModelProto()
    work.CopyFrom(model)
    del work.functions[:]
    work.functions.extend(variants.values())
    inlined = onnx.inliner.inline_selected_functions(work, [(DOMAIN, v) for v in variants], exclude=False)
    del inlined.functions[:]
    inlined = _fold_constants(inlined)
    model.CopyFrom(inlined)


def _attach_fallbacks(model, opset, deform, dynamic, deform_fallback) -> None:
    graph = model.graph
    funcs = []
    dyn_nodes = _edgeconv_nodes(graph, DYNAMIC_OP)
    if dyn_nodes and dynamic == "decomposed":
        _inline_dynamic(model, opset, dyn_nodes)  # re-folds the graph: pad inputs afterwards
        graph = model.graph
        dyn_nodes = []
    _pad_inputs(graph)
    if dyn_nodes:
        has_bias = any(_present(n, 3) for n in dyn_nodes)
        if has_bias:
            _materialize(model, DYNAMIC_OP, 3, "bias")
        funcs.append(fallbacks.dynamic_decomposed_function(opset, has_bias))
    deform_nodes = _edgeconv_nodes(graph, DEFORM_OP)
    if deform == "standard":
        _replace_deform_with_standard(graph)
    elif deform_nodes:
        if deform_fallback == "standard":
            funcs.append(fallbacks.deform_standard_function(opset))
        else:
            has_mask = any(_present(n, 3) for n in deform_nodes)
            has_bias = any(_present(n, 4) for n in deform_nodes)
            if has_mask:
                _materialize(model, DEFORM_OP, 3, "mask")
            if has_bias:
                _materialize(model, DEFORM_OP, 4, "bias")
            funcs.append(fallbacks.deform_decomposed_function(opset, has_mask, has_bias))
    existing = {(f.domain, f.name) for f in model.functions}
    for f in funcs:
        if (f.domain, f.name) not in existing:
            model.functions.append(f)
    _drop_unused_domain(model)


def standard_op_model(model: ModelProto, input_shapes: dict | None = None, keep: tuple[str, ...] = ()) -> ModelProto:
    """A copy of an exported model with standard operators only, for compilers that know neither
    the ``edgeconv`` domain nor model-local functions nor ``DeformConv`` (TVM's ONNX frontend).

    The ``edgeconv`` nodes get their *decomposed* fallback bodies (opset-13 operators, whatever
    fallback the model was exported with), which are inlined; symbolic input dims are fixed
    (``input_shapes``: name -> shape, else 1) and the shape computations constant-folded.
    ``keep``: edgeconv op types left as nodes (for a compiler with its own kernel for them),
    every attribute written out with its default and every optional input slot present.
    """
    work = ModelProto()
    work.CopyFrom(model)
    if _edgeconv_nodes(work.graph):
        kept = [f for f in work.functions if f.domain != DOMAIN]
        del work.functions[:]
        work.functions.extend(kept)
        opset = next(o.version for o in work.opset_import if o.domain in ("", "ai.onnx"))
        _attach_fallbacks(work, opset, "auto", "custom", "decomposed")
    shapes = input_shapes or {}
    for vi in work.graph.input:
        fixed = shapes.get(vi.name)
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            if not d.HasField("dim_value"):
                d.dim_value = int(fixed[i]) if fixed is not None else 1
    for vi in work.graph.output:  # re-inferred from the fixed inputs
        vi.type.tensor_type.ClearField("shape")
    _fill_attribute_defaults(work)
    if keep:
        work = onnx.inliner.inline_selected_functions(work, [(DOMAIN, op) for op in keep], exclude=True)
        kept = [f for f in work.functions if not (f.domain == DOMAIN and f.name in keep)]
        del work.functions[:]
        work.functions.extend(kept)
    else:
        work = onnx.inliner.inline_local_functions(work)
    work = _fold_constants(onnx.shape_inference.infer_shapes(work, data_prop=True))
    _drop_unused_domain(work)
    return work


def _fill_attribute_defaults(model: ModelProto) -> None:
    """Give every call of a model-local function the function's default for each attribute it
    leaves out: onnx's inliner substitutes only attributes the call carries and would leave an
    empty ``Constant`` (``value_ints`` referencing a missing attribute) in the body."""
    defaults = {(f.domain, f.name): f.attribute_proto for f in model.functions}
    for node in model.graph.node:
        have = {a.name for a in node.attribute}
        for default in defaults.get((node.domain, node.op_type), ()):
            if default.name not in have:
                node.attribute.append(default)


def _rename_batch_dim(model: ModelProto, name: str = "batch") -> None:
    """torch.export names the shared batch symbol ``s<N>``: call it ``batch`` everywhere."""
    symbols = set()
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) and dims[0].dim_param:
            symbols.add(dims[0].dim_param)
    if len(symbols) != 1:
        return
    (old,) = symbols
    for coll in (model.graph.input, model.graph.output, model.graph.value_info):
        for vi in coll:
            for d in vi.type.tensor_type.shape.dim:
                if d.dim_param == old:
                    d.dim_param = name


def _finalize(model: ModelProto, opset: int) -> ModelProto:
    if any(n.domain == DOMAIN for n in model.graph.node):
        _set_opset(model, DOMAIN, DOMAIN_VERSION)
    model.producer_name = "edgeconv"
    # Refresh value_info with our schemas' shape inference (custom nodes included).
    del model.graph.value_info[:]
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:  # pragma: no cover - reported, never silently wrong
        raise ExportError(f"shape inference of the exported model failed: {_short(exc)}") from exc
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # pragma: no cover
        raise ExportError(f"the exported model does not pass onnx.checker: {_short(exc)}") from exc
    return model


def _default_opset(model: ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _check_ops(model: ModelProto, deform_fallback: str, opset: int) -> None:
    if deform_fallback == "standard" and opset < fallbacks.MIN_OPSET_STANDARD_DEFORM and \
            _edgeconv_nodes(model.graph, DEFORM_OP):
        raise ExportError(
            f"the model has deformable convolutions, whose standard fallback (ONNX DeformConv) "
            f"needs opset >= {fallbacks.MIN_OPSET_STANDARD_DEFORM}; got opset={opset}. Use "
            "deform_fallback='decomposed' (gather-based, opset >= 13) or opset >= 19.")


# --------------------------------------------------------------------------- public API
def export_onnx(
    model: torch.nn.Module,
    args: Any,
    path: str | os.PathLike | None = None,
    *,
    opset: int = 20,
    dynamic_batch: bool = True,
    deform: str = "auto",
    dynamic: str = "custom",
    deform_fallback: str = "standard",
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    custom_translation_table: dict | None = None,
) -> ModelProto:
    """Export ``model(*args)`` to ONNX and return the ``onnx.ModelProto`` (also saved to ``path``).

    Standard convolution kinds become standard ONNX operators (one ``Conv`` per convolution,
    weights as initializers). ``edgeconv::deform_conv2d`` / ``edgeconv::dynamic_conv2d`` become
    nodes of the custom domain ``edgeconv`` (``DeformConv2d`` / ``DynamicConv2d``, version 1)
    that carry a model-local fallback function made of standard operators, so the model runs on
    any ONNX runtime; onnxruntime with the edgeconv kernel library runs the fast kernels instead.

    Args:
        model: a float32 ``nn.Module`` (put it in ``eval()`` mode first).
        args: example inputs (a tensor or a tuple of positional inputs).
        path: optional file to save the model to.
        opset: ONNX opset of the default domain, 13..``onnx.defs.onnx_opset_version()``.
        dynamic_batch: make dim 0 of every input (and output) symbolic (``"batch"``).
        deform: ``"auto"``/``"custom"``: ``edgeconv.DeformConv2d`` + fallback function;
            ``"standard"``: plain ONNX ``DeformConv`` nodes (opset >= 19).
        dynamic: ``"custom"``: ``edgeconv.DynamicConv2d`` + fallback function; ``"decomposed"``:
            the standard-operator decomposition inlined into the graph.
        deform_fallback: body of the deformable fallback function: ``"standard"`` (one
            ``DeformConv``, opset >= 19) or ``"decomposed"`` (gather-based bilinear sampling +
            MatMul, opset >= 13).
        input_names: names of the graph inputs, in ``args`` order (default: torch's, from the
            ``forward`` parameters); may name the first few only.
        output_names: names of the graph outputs, in output order (default: torch's node names).
        custom_translation_table: ``{torch.ops.ns.op.default: onnxscript function}`` for ops
            torch.onnx cannot export (as in ``torch.onnx.export``), added to edgeconv's own.

    Raises:
        ExportError: invalid options, unsupported dtype (only float32), an operator without an
            ONNX export rule (the message names the op and the module calling it), or an opset
            that cannot express the model.
    """
    _check_options(opset, deform, dynamic, deform_fallback)
    if not isinstance(model, torch.nn.Module):
        raise ExportError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(args, tuple):
        args = (args,)
    _check_dtypes(model, args)
    input_names = _check_names("input_names", input_names, len(list(_iter_tensors(args))))
    output_names = _check_names("output_names", output_names, None)
    if model.training:
        warnings.warn("export_onnx: the model is in training mode (dropout, batch statistics); "
                      "call model.eval() first to export inference behaviour", stacklevel=2)
    _ensure_torch_ops()
    register_schemas()
    program = _torch_export(model, args, _dynamic_shapes(args, dynamic_batch))
    _check_constant_groups(program)
    proto = _onnx_translate(program, opset, custom_translation_table, input_names, output_names)
    if output_names is not None and len(output_names) > len(proto.graph.output):
        raise ExportError(f"output_names has {len(output_names)} names, the model has "
                          f"{len(proto.graph.output)} outputs", option="output_names")
    got = _default_opset(proto)
    if got != max(opset, TRANSLATION_OPSET):
        raise ExportError(f"torch.onnx could not convert the model to opset {opset} (it stayed at {got}); "
                          f"use an opset between {MIN_OPSET} and the newest one onnxscript converts to")
    _check_ops(proto, deform_fallback, opset)
    proto = _fold_constants(proto)
    if opset < TRANSLATION_OPSET:
        try:
            downgrade(proto, opset)
        except DowngradeError as exc:
            raise ExportError(f"cannot export at opset {opset}: {exc}") from exc
    _attach_fallbacks(proto, opset, deform, dynamic, deform_fallback)
    _prune_initializers(proto)
    if dynamic_batch:
        _rename_batch_dim(proto)
    proto = _finalize(proto, opset)
    if path is not None:
        path = os.fspath(path)
        if proto.ByteSize() > _EXTERNAL_DATA_THRESHOLD:  # protobuf cannot serialize >= 2 GiB
            onnx.save_model(proto, path, save_as_external_data=True,
                            location=os.path.basename(path) + ".data")
        else:
            onnx.save_model(proto, path)
    return proto
