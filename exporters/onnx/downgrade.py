"""Down-convert an exported (optimized) opset-18 ONNX model to opset 13..17.

``torch.onnx.export`` translates at opset 18 and cannot go lower (neither onnxscript's nor the
onnx C++ version converter has the down adapters, e.g. ``Reshape`` 14 -> 13). The graphs edgeconv
produces use few operators, so this pass rewrites exactly the operators whose schema changed
between the target and 18 and refuses anything else with a clear error.
"""

from __future__ import annotations

import onnx
from onnx import ModelProto, helper, numpy_helper

# Operators whose newer versions only widened the type constraints (float32 graphs unaffected).
_TYPE_ONLY = {
    "Relu", "Add", "Sub", "Mul", "Div", "Pow", "Where", "LessOrEqual", "GreaterOrEqual", "PRelu",
    "LeakyRelu", "Identity", "CumSum", "Less", "Greater", "Equal", "Constant", "ConstantOfShape",
    "Cast", "Sign", "Neg", "Abs", "Max", "Min", "Mod", "Sqrt", "Exp", "Log", "Tanh", "Sigmoid",
}
_REDUCE_18 = {
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceSumSquare",
}


class DowngradeError(ValueError):
    pass


def _attr(node, name):
    for a in node.attribute:
        if a.name == name:
            return a
    return None


def _drop_attr(node, name, allowed_values=None):
    a = _attr(node, name)
    if a is None:
        return
    if allowed_values is not None and helper.get_attribute_value(a) not in allowed_values:
        raise DowngradeError(
            f"{node.op_type} node {node.name!r} uses {name}={helper.get_attribute_value(a)!r}, "
            "which does not exist before opset 18")
    node.attribute.remove(a)


class _Consts:
    def __init__(self, graph):
        self.init = {i.name: i for i in graph.initializer}
        self.const_nodes = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and n.output}

    def get(self, name):
        if name in self.init:
            return numpy_helper.to_array(self.init[name])
        n = self.const_nodes.get(name)
        if n is not None:
            a = n.attribute[0]
            if a.name == "value":
                return numpy_helper.to_array(a.t)
            if a.name == "value_ints":
                return list(a.ints)
            if a.name == "value_int":
                return [a.i]
        return None


def downgrade(model: ModelProto, target: int) -> ModelProto:
    """Rewrite ``model`` (opset 18) in place for ``target`` (13..17) and return it."""
    src = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if src is None or target >= src:
        return model
    if target < 13:
        raise DowngradeError(f"opset {target} is not supported (minimum 13)")
    graph = model.graph
    consts = _Consts(graph)
    shapes = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            if vi.type.tensor_type.HasField("shape"):
                shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None
                                   for d in vi.type.tensor_type.shape.dim]
    except Exception:  # pragma: no cover - shapes are only needed for Split
        pass
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            since_src = onnx.defs.get_schema(node.op_type, src).since_version
            since_tgt = onnx.defs.get_schema(node.op_type, target).since_version
        except onnx.defs.SchemaError:
            raise DowngradeError(f"operator {node.op_type} does not exist at opset {target}") from None
        if since_src == since_tgt or node.op_type in _TYPE_ONLY:
            continue
        op = node.op_type
        if op in _REDUCE_18:
            axes = None
            if len(node.input) > 1 and node.input[1]:
                axes = consts.get(node.input[1])
                if axes is None:
                    raise DowngradeError(f"{op} node {node.name!r} has non-constant axes")
                del node.input[1:]
            noop = _attr(node, "noop_with_empty_axes")
            if noop is not None:
                if noop.i and not axes:
                    raise DowngradeError(f"{op} node {node.name!r}: noop_with_empty_axes=1 needs opset 18")
                node.attribute.remove(noop)
            if axes is not None and len(axes):
                node.attribute.append(helper.make_attribute("axes", [int(a) for a in axes]))
        elif op == "Reshape":
            # allowzero=1 differs from 0 only for a literal 0 in the target shape: refuse a
            # constant shape holding 0, accept computed shapes (0 only for an empty batch).
            a = _attr(node, "allowzero")
            if a is not None:
                shape = consts.get(node.input[1])
                if a.i and shape is not None and 0 in [int(v) for v in shape]:
                    raise DowngradeError(f"Reshape node {node.name!r} needs allowzero=1 (opset 14)")
                node.attribute.remove(a)
        elif op == "BatchNormalization":
            _drop_attr(node, "training_mode", (0,))
        elif op == "Shape":
            if _attr(node, "start") is not None or _attr(node, "end") is not None:
                raise DowngradeError(f"Shape node {node.name!r} uses start/end (opset 15)")
        elif op == "Pad":
            if len(node.input) > 3 and node.input[3]:
                raise DowngradeError(f"Pad node {node.name!r} uses axes (opset 18)")
            del node.input[3:]
        elif op == "Split":
            num = _attr(node, "num_outputs")
            if num is not None:
                axis_a = _attr(node, "axis")
                axis = axis_a.i if axis_a is not None else 0
                shp = shapes.get(node.input[0])
                size = shp[axis] if shp is not None and len(shp) > abs(axis) else None
                if size is None or size % num.i:
                    raise DowngradeError(f"Split node {node.name!r}: uneven num_outputs split needs opset 18")
                node.attribute.remove(num)
        elif op == "Resize":
            _drop_attr(node, "antialias", (0,))
            _drop_attr(node, "keep_aspect_ratio_policy", ("stretch", b"stretch"))
            if _attr(node, "axes") is not None:
                raise DowngradeError(f"Resize node {node.name!r} uses axes (opset 18)")
        else:
            raise DowngradeError(
                f"operator {op} (version {since_src} at opset {src}) has no opset-{target} form "
                "in edgeconv's down-converter; export with opset >= 18")
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = target
    return model


__all__ = ["DowngradeError", "downgrade"]
