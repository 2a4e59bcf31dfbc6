"""ONNX operator schemas of the custom domain ``edgeconv`` (version 1), built from the op
definitions of :mod:`edgeconv.opdefs` (inputs, attributes with defaults, element types).

Both schemas carry a Python type-and-shape inference function, so
``onnx.shape_inference.infer_shapes(model, strict_mode=True)`` and
``onnx.checker.check_model(model, full_check=True)`` understand the custom nodes.
Registration is idempotent (:func:`register_schemas` may be called any number of times).
"""

from __future__ import annotations

import threading

import onnx
from onnx import AttributeProto, TypeProto, helper
from onnx.defs import OpSchema

from edgeconv.opdefs import DEFORM_CONV2D, DOMAIN, DOMAIN_VERSION, DYNAMIC_CONV2D, OPS, OpDef

DEFORM_OP = DEFORM_CONV2D.name
DYNAMIC_OP = DYNAMIC_CONV2D.name

_lock = threading.Lock()


# --------------------------------------------------------------------------- helpers
def _ints_attr(ctx, op: OpDef, name: str) -> list[int]:
    attr = ctx.get_attribute(name)
    default = list(op.defaults[name])
    if attr is None or attr.type != AttributeProto.INTS:
        return default
    vals = list(attr.ints)
    return vals if vals else default


def _int_attr(ctx, op: OpDef, name: str) -> int:
    attr = ctx.get_attribute(name)
    if attr is None or attr.type != AttributeProto.INT:
        return op.defaults[name]
    return int(attr.i)


def _dims(tp: TypeProto | None):
    """List of dims (int value, str param or None) or None when rank unknown."""
    if tp is None or not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
        return None
    out = []
    for d in tp.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _input_type(ctx, idx: int) -> TypeProto | None:
    if idx >= ctx.get_num_inputs() or not ctx.has_input(idx):
        return None
    return ctx.get_input_type(idx)


def _conv_out(size, k, s, pb, pe, d):
    if not isinstance(size, int) or not isinstance(k, int):
        return None
    return (size + pb + pe - d * (k - 1) - 1) // s + 1


def _set_output(ctx, elem_type: int, dims) -> None:
    tp = TypeProto()
    tp.tensor_type.elem_type = elem_type
    if dims is not None:
        shape = tp.tensor_type.shape
        for d in dims:
            dim = shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            elif isinstance(d, str):
                dim.dim_param = d
    ctx.set_output_type(0, tp)


def _fail(op: str, msg: str):
    raise onnx.shape_inference.InferenceError(f"[edgeconv.{op}] {msg}")


# --------------------------------------------------------------------------- inference
def _conv_attrs(ctx, op: OpDef):
    """(strides, pads, dilations, group) of a node, their lengths checked."""
    strides, pads, dil = (_ints_attr(ctx, op, n) for n in ("strides", "pads", "dilations"))
    group = _int_attr(ctx, op, "group")
    if len(strides) != 2 or len(pads) != 4 or len(dil) != 2:
        _fail(op.name, "strides/dilations need 2 values and pads 4")
    return strides, pads, dil, group


def _infer_deform(ctx) -> None:
    x_t = _input_type(ctx, 0)
    if x_t is None:
        return
    elem = x_t.tensor_type.elem_type
    x, w, off = _dims(x_t), _dims(_input_type(ctx, 1)), _dims(_input_type(ctx, 2))
    strides, pads, dil, group = _conv_attrs(ctx, DEFORM_CONV2D)
    ogroup = _int_attr(ctx, DEFORM_CONV2D, "offset_group")
    if x is None:
        _set_output(ctx, elem, None)
        return
    if len(x) != 4:
        _fail(DEFORM_OP, f"X must be 4-D (N, C, H, W), got rank {len(x)}")
    out = [x[0], None, None, None]
    if w is not None:
        if len(w) != 4:
            _fail(DEFORM_OP, f"W must be 4-D (O, C/group, kh, kw), got rank {len(w)}")
        out[1] = w[0]
        if all(isinstance(v, int) for v in (x[1], w[1])) and x[1] != w[1] * group:
            _fail(DEFORM_OP, f"X has {x[1]} channels but W expects {w[1]} x group {group}")
        if isinstance(w[0], int) and w[0] % group:
            _fail(DEFORM_OP, f"output channels {w[0]} not divisible by group {group}")
        if off is not None and len(off) == 4 and all(isinstance(v, int) for v in (off[1], w[2], w[3])):
            if off[1] != 2 * ogroup * w[2] * w[3]:
                _fail(DEFORM_OP, f"offset has {off[1]} channels, expected 2*offset_group*kh*kw = {2 * ogroup * w[2] * w[3]}")
        out[2] = _conv_out(x[2], w[2], strides[0], pads[0], pads[2], dil[0])
        out[3] = _conv_out(x[3], w[3], strides[1], pads[1], pads[3], dil[1])
    if off is not None and len(off) == 4:
        for i in (2, 3):
            if out[i] is None and off[i] is not None:
                out[i] = off[i]
            elif isinstance(out[i], int) and isinstance(off[i], int) and out[i] != off[i]:
                _fail(DEFORM_OP, f"offset spatial size {off[2:]} does not match the output size {out[2:]}")
    _set_output(ctx, elem, out)


def _infer_dynamic(ctx) -> None:
    x_t = _input_type(ctx, 0)
    if x_t is None:
        return
    elem = x_t.tensor_type.elem_type
    x, w, a = _dims(x_t), _dims(_input_type(ctx, 1)), _dims(_input_type(ctx, 2))
    b = _dims(_input_type(ctx, 3))
    strides, pads, dil, group = _conv_attrs(ctx, DYNAMIC_CONV2D)
    if x is None:
        _set_output(ctx, elem, None)
        return
    if len(x) != 4:
        _fail(DYNAMIC_OP, f"X must be 4-D (N, C, H, W), got rank {len(x)}")
    out = [x[0], None, None, None]
    if w is not None:
        if len(w) != 5:
            _fail(DYNAMIC_OP, f"W must be 5-D (K, O, C/group, kh, kw), got rank {len(w)}")
        out[1] = w[1]
        if all(isinstance(v, int) for v in (x[1], w[2])) and x[1] != w[2] * group:
            _fail(DYNAMIC_OP, f"X has {x[1]} channels but W expects {w[2]} x group {group}")
        if a is not None and len(a) == 2 and isinstance(a[1], int) and isinstance(w[0], int) and a[1] != w[0]:
            _fail(DYNAMIC_OP, f"attention has {a[1]} kernels, W has {w[0]}")
        if b is not None and len(b) == 2 and all(isinstance(v, int) for v in (b[0], b[1], w[0], w[1])) and (b[0], b[1]) != (w[0], w[1]):
            _fail(DYNAMIC_OP, f"B must be (K, O) = ({w[0]}, {w[1]}), got ({b[0]}, {b[1]})")
        out[2] = _conv_out(x[2], w[3], strides[0], pads[0], pads[2], dil[0])
        out[3] = _conv_out(x[3], w[4], strides[1], pads[1], pads[3], dil[1])
    if a is not None and len(a) != 2:
        _fail(DYNAMIC_OP, f"attention must be 2-D (N, K), got rank {len(a)}")
    _set_output(ctx, elem, out)


# --------------------------------------------------------------------------- schemas
_ONNX_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "float64": "tensor(double)"}


def _schema(op: OpDef, infer) -> OpSchema:
    """The schema of ``op``: its inputs, output Y (N, O, oh, ow), attributes with their defaults,
    element types, and Python shape inference ``infer``."""
    P, Opt = OpSchema.FormalParameter, OpSchema.FormalParameterOption.Optional
    s = OpSchema(
        op.name, DOMAIN, DOMAIN_VERSION,
        doc=op.doc,
        inputs=[P(i.name, "T", i.doc, param_option=Opt) if i.optional else P(i.name, "T", i.doc) for i in op.inputs],
        outputs=[P("Y", "T", "Output (N, O, oh, ow).")],
        type_constraints=[("T", [_ONNX_TYPES[t] for t in op.dtypes], "Element type of the kernels.")],
        attributes=[OpSchema.Attribute(a.name, helper.make_attribute(a.name, list(a.default) if a.is_list else a.default),
                                       a.doc) for a in op.attributes],
    )
    s.set_type_and_shape_inference_function(infer)
    return s


_INFER = {DEFORM_OP: _infer_deform, DYNAMIC_OP: _infer_dynamic}


def _is_registered(name: str) -> bool:
    try:
        return onnx.defs.has(name, DOMAIN_VERSION, DOMAIN)
    except TypeError:  # older onnx signature
        return onnx.defs.has(name, DOMAIN)


def register_schemas() -> None:
    """Register the ``edgeconv`` domain schemas with onnx (idempotent, thread-safe)."""
    with _lock:
        for name, op in OPS.items():
            if not _is_registered(name):
                onnx.defs.register_schema(_schema(op, _INFER[name]))


def schemas() -> list[OpSchema]:
    register_schemas()
    return [onnx.defs.get_schema(n, DOMAIN_VERSION, DOMAIN) for n in OPS]
