"""Model-local ONNX functions (``FunctionProto``) that implement the ``edgeconv`` ops with
standard ONNX operators only.

A runtime without the edgeconv kernel library (plain onnxruntime, ``onnx.reference``) inlines
these functions; onnxruntime with the library registered runs the kernels instead.

* ``deform_standard_function``: one ``DeformConv`` node (ONNX opset >= 19).
* ``deform_decomposed_function``: gather-based bilinear sampling + MatMul (ONNX opset >= 13).
* ``dynamic_decomposed_function``: one ``Conv`` with the K*O stacked kernels, weighted by the
  attention (Mul + ReduceSum), plus ``attention @ B`` (ONNX opset >= 13, dynamic batch).

ONNX functions cannot branch on the presence of an optional input without ``If``; the decomposed
bodies are therefore specialised on which optional inputs (mask / B) are present. The exporter
materialises the defaults (mask of ones, zero bias) for nodes that lack an input some other
node of the same op provides, so one function serves every node of a model.
"""

from __future__ import annotations

from onnx import AttributeProto, FunctionProto, TensorProto, helper

from edgeconv.opdefs import DEFORM_CONV2D, DOMAIN, DYNAMIC_CONV2D, OpDef

MIN_OPSET_STANDARD_DEFORM = 19
MIN_OPSET_DECOMPOSED = 13


def _attr_defaults(op: OpDef) -> list[AttributeProto]:
    """The function's attributes with the op's defaults (``attribute_proto``)."""
    return [helper.make_attribute(a.name, list(a.default) if a.is_list else a.default) for a in op.attributes]


def _forward_attributes(node, op: OpDef) -> None:
    """Forward every attribute of ``op`` to ``node`` inside the function body (``ref_attr_name``)."""
    for a in op.attributes:
        node.attribute.append(_ref(a.name, a.name, AttributeProto.INTS if a.is_list else AttributeProto.INT))


def _ref(name: str, attr_name: str, typ: int) -> AttributeProto:
    a = AttributeProto()
    a.name = name
    a.ref_attr_name = attr_name
    a.type = typ
    return a


class _Body:
    """Tiny builder for function bodies (unique value names, constants)."""

    def __init__(self, prefix: str):
        self.nodes = []
        self.prefix = prefix
        self.n = 0

    def _name(self, hint: str) -> str:
        self.n += 1
        return f"{self.prefix}_{hint}_{self.n}"

    def op(self, op_type: str, *inputs: str, out: str | None = None, hint: str | None = None, **attrs) -> str:
        out = out or self._name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def node(self, node) -> str:
        self.nodes.append(node)
        return node.output[0]

    def ints(self, values, hint="c") -> str:
        return self.op("Constant", hint=hint,
                       value=helper.make_tensor("v", TensorProto.INT64, [len(values)], list(values)))

    def scalar_i(self, v: int, hint="c") -> str:
        return self.op("Constant", hint=hint, value=helper.make_tensor("v", TensorProto.INT64, [], [v]))

    def from_attr_ints(self, attr: str) -> str:
        out = self._name(attr)
        n = helper.make_node("Constant", [], [out])
        n.attribute.append(_ref("value_ints", attr, AttributeProto.INTS))
        return self.node(n)

    def from_attr_int(self, attr: str) -> str:  # -> int64 tensor of shape [1]
        out = self._name(attr)
        n = helper.make_node("Constant", [], [out])
        n.attribute.append(_ref("value_int", attr, AttributeProto.INT))
        s = self.node(n)
        return self.op("Reshape", s, self.ints([1]), hint=attr + "_1d")

    def sl(self, x: str, start: int, end: int, hint="s") -> str:
        return self.op("Slice", x, self.ints([start]), self.ints([end]), self.ints([0]), hint=hint)


def deform_standard_function(opset: int) -> FunctionProto:
    """``edgeconv.DeformConv2d`` as a single ONNX ``DeformConv`` (opset >= 19)."""
    if opset < MIN_OPSET_STANDARD_DEFORM:
        raise ValueError(f"DeformConv needs ONNX opset >= {MIN_OPSET_STANDARD_DEFORM}, got {opset}")
    node = helper.make_node("DeformConv", ["X", "W", "offset", "B", "mask"], ["Y"])
    _forward_attributes(node, DEFORM_CONV2D)
    return helper.make_function(
        DOMAIN, DEFORM_CONV2D.name, list(DEFORM_CONV2D.input_names), ["Y"], [node],
        [helper.make_opsetid("", opset)], attributes=[], attribute_protos=_attr_defaults(DEFORM_CONV2D),
        doc_string="Fallback: ONNX DeformConv (inputs reordered to X, W, offset, B, mask).",
    )


def deform_decomposed_function(opset: int, has_mask: bool, has_bias: bool) -> FunctionProto:
    """``edgeconv.DeformConv2d`` with opset-13 ops: bilinear sampling by GatherElements
    (zeros outside the image; NaN/Inf positions contribute zero), then a grouped MatMul."""
    if opset < MIN_OPSET_DECOMPOSED:
        raise ValueError(f"the decomposed fallback needs ONNX opset >= {MIN_OPSET_DECOMPOSED}, got {opset}")
    b = _Body("dc")
    b.nodes.append(helper.make_node("Constant", [], ["dc_one_f32"], value=helper.make_tensor("v", TensorProto.FLOAT, [], [1.0])))
    cast_like = opset >= 15

    def fconst(name):  # float32 constant cast to X's type
        return b.op("CastLike", name, "X", hint="cl") if cast_like else name

    def tofloat(x):  # int64 -> X's float type
        if cast_like:
            return b.op("CastLike", x, "X", hint="cf")
        return b.op("Cast", x, to=TensorProto.FLOAT, hint="cf")

    one = fconst("dc_one_f32")
    zero_f = b.op("Sub", one, one, hint="zero")
    sX, sW, sO = b.op("Shape", "X"), b.op("Shape", "W"), b.op("Shape", "offset")
    H, Wd = b.sl(sX, 2, 3, "H"), b.sl(sX, 3, 4, "Wd")
    C = b.sl(sX, 1, 2, "C")
    O = b.sl(sW, 0, 1, "O")
    Cg, kh, kw = b.sl(sW, 1, 2, "Cg"), b.sl(sW, 2, 3, "kh"), b.sl(sW, 3, 4, "kw")
    oh, ow = b.sl(sO, 2, 3, "oh"), b.sl(sO, 3, 4, "ow")
    K = b.op("Mul", kh, kw, hint="K")
    L = b.op("Mul", oh, ow, hint="L")
    HW = b.op("Mul", H, Wd, hint="HW")
    strides, pads, dil = b.from_attr_ints("strides"), b.from_attr_ints("pads"), b.from_attr_ints("dilations")
    g, og = b.from_attr_int("group"), b.from_attr_int("offset_group")
    sh, sw = b.sl(strides, 0, 1), b.sl(strides, 1, 2)
    pt, pl = b.sl(pads, 0, 1), b.sl(pads, 1, 2)
    dh, dw = b.sl(dil, 0, 1), b.sl(dil, 1, 2)
    sq0 = b.ints([0])
    zero_i, one_i = b.scalar_i(0), b.scalar_i(1)

    def rng(n):
        return b.op("Range", zero_i, b.op("Squeeze", n, sq0), one_i, hint="rng")

    # base sampling positions (int64), broadcast as (kh, kw, oh, ow)
    ky = b.op("Mul", rng(kh), dh, hint="ky")
    kx = b.op("Mul", rng(kw), dw, hint="kx")
    iy = b.op("Sub", b.op("Mul", rng(oh), sh), pt, hint="iy")
    ix = b.op("Sub", b.op("Mul", rng(ow), sw), pl, hint="ix")
    by = b.op("Add", b.op("Unsqueeze", ky, b.ints([1, 2, 3])), b.op("Unsqueeze", iy, b.ints([0, 1, 3])), hint="by")
    bx = b.op("Add", b.op("Unsqueeze", kx, b.ints([0, 2, 3])), b.op("Unsqueeze", ix, b.ints([0, 1, 2])), hint="bx")
    full = b.op("Concat", kh, kw, oh, ow, axis=0, hint="full")
    kshape = b.op("Concat", b.ints([-1]), oh, ow, axis=0, hint="kshape")
    by = tofloat(b.op("Reshape", b.op("Expand", by, full), kshape, hint="by_k"))  # (K, oh, ow)
    bx = tofloat(b.op("Reshape", b.op("Expand", bx, full), kshape, hint="bx_k"))
    # offsets (N, og, K, 2, oh, ow)
    off = b.op("Reshape", "offset", b.op("Concat", sq0, og, b.ints([-1, 2]), oh, ow, axis=0), hint="off6")
    dy = b.op("Gather", off, zero_i, axis=3, hint="dy")
    dx = b.op("Gather", off, one_i, axis=3, hint="dx")
    py = b.op("Add", dy, by, hint="py")  # (N, og, K, oh, ow)
    px = b.op("Add", dx, bx, hint="px")
    y0, x0 = b.op("Floor", py, hint="y0"), b.op("Floor", px, hint="x0")
    ly, lx = b.op("Sub", py, y0, hint="ly"), b.op("Sub", px, x0, hint="lx")
    hy, hx = b.op("Sub", one, ly, hint="hy"), b.op("Sub", one, lx, hint="hx")
    y1, x1 = b.op("Add", y0, one, hint="y1"), b.op("Add", x0, one, hint="x1")
    Hm1 = b.op("Sub", tofloat(H), one, hint="Hm1")
    Wm1 = b.op("Sub", tofloat(Wd), one, hint="Wm1")
    Wf = tofloat(Wd)

    def inside(v, hi):
        return b.op("And", b.op("GreaterOrEqual", v, zero_f), b.op("LessOrEqual", v, hi), hint="in")

    vy0, vy1, vx0, vx1 = inside(y0, Hm1), inside(y1, Hm1), inside(x0, Wm1), inside(x1, Wm1)
    # The tap samples only for -1 < py < H and -1 < px < W (False for NaN): not at exactly -1,
    # where corner y0+1 would otherwise be multiplied by a zero weight.
    minus_one = b.op("Neg", one, hint="m1")
    samples = b.op("And", b.op("And", b.op("Greater", py, minus_one), b.op("Less", py, tofloat(H))),
                   b.op("And", b.op("Greater", px, minus_one), b.op("Less", px, Wf)), hint="samples")
    flat = b.op("Concat", sq0, og, b.ints([-1, 1]), axis=0, hint="flat")  # (N, og, K*L, 1)
    m = None
    if has_mask:
        m = b.op("Reshape", "mask", flat, hint="m")
    Cog = b.op("Div", C, og, hint="Cog")
    # X -> (N, og, H*W, C/og): GatherND with batch_dims=2 picks whole channel vectors
    xg = b.op("Reshape", "X", b.op("Concat", sq0, og, Cog, HW, axis=0), hint="xg")
    xg = b.op("Transpose", xg, perm=[0, 1, 3, 2], hint="xgt")
    acc = None
    for (yy, vy, wy) in ((y0, vy0, hy), (y1, vy1, ly)):
        for (xx, vx, wx) in ((x0, vx0, hx), (x1, vx1, lx)):
            valid = b.op("And", samples, b.op("And", vy, vx), hint="valid")
            lin = b.op("Add", b.op("Mul", yy, Wf), xx, hint="lin")
            idx = b.op("Cast", b.op("Where", valid, lin, zero_f), to=TensorProto.INT64, hint="idx")
            idx = b.op("Reshape", idx, flat, hint="idxf")  # (N, og, K*L, 1)
            wgt = b.op("Reshape", b.op("Mul", wy, wx), flat, hint="wgtf")
            # Invalid corners are skipped (Where), not multiplied by 0: the gathered pixel (index 0)
            # may be Inf/NaN, and NaN weights of a NaN position must not leak either.
            term = b.op("Mul", b.op("GatherND", xg, idx, batch_dims=2), wgt, hint="term")  # (N, og, K*L, C/og)
            term = b.op("Where", b.op("Reshape", valid, flat, hint="validf"), term, zero_f, hint="termv")
            acc = term if acc is None else b.op("Add", acc, term, hint="acc")
    if m is not None:  # the mask multiplies the interpolated sample (NaN/Inf masks propagate)
        acc = b.op("Mul", acc, m, hint="accm")
    # acc (N, og, K, L, C/og) -> (N, og, C/og, K, L) == (N, C, K, L) -> (N, g, Cg*K, L)
    acc = b.op("Reshape", acc, b.op("Concat", sq0, og, K, L, Cog, axis=0), hint="acc5")
    acc = b.op("Transpose", acc, perm=[0, 1, 4, 2, 3], hint="acct")
    CgK = b.op("Mul", Cg, K, hint="CgK")
    cols = b.op("Reshape", acc, b.op("Concat", sq0, g, CgK, L, axis=0), hint="cols")
    wm = b.op("Reshape", "W", b.op("Concat", g, b.ints([-1]), CgK, axis=0), hint="wm")  # (g, O/g, Cg*K)
    y = b.op("MatMul", wm, cols, hint="mm")  # (N, g, O/g, L)
    yshape = b.op("Concat", sq0, O, oh, ow, axis=0, hint="yshape")
    if has_bias:
        y = b.op("Reshape", y, yshape, hint="y4")
        b.op("Add", y, b.op("Unsqueeze", "B", b.ints([0, 2, 3])), out="Y")
    else:
        b.op("Reshape", y, yshape, out="Y")
    return helper.make_function(
        DOMAIN, DEFORM_CONV2D.name, list(DEFORM_CONV2D.input_names), ["Y"], b.nodes,
        [helper.make_opsetid("", opset)], attributes=[], attribute_protos=_attr_defaults(DEFORM_CONV2D),
        doc_string=f"Fallback: decomposed deformable convolution (mask={'yes' if has_mask else 'no'}, "
                   f"B={'yes' if has_bias else 'no'}).",
    )


def dynamic_decomposed_function(opset: int, has_bias: bool) -> FunctionProto:
    """``edgeconv.DynamicConv2d`` = Conv with the K*O stacked kernels, then the attention-weighted
    sum over K (exact: convolution is linear in the weight), plus ``attention @ B``."""
    if opset < MIN_OPSET_DECOMPOSED:
        raise ValueError(f"the decomposed fallback needs ONNX opset >= {MIN_OPSET_DECOMPOSED}, got {opset}")
    b = _Body("dy")
    sW = b.op("Shape", "W")
    K, tail = b.sl(sW, 0, 1, "K"), b.sl(sW, 2, 5, "tail")  # tail = (C/g, kh, kw)
    g = b.from_attr_int("group")
    m1 = b.ints([-1])
    # (K, O, C/g, kh, kw) -> (K, g, O/g, C/g, kh, kw) -> (g, K, O/g, ...) -> (g*K*O/g, C/g, kh, kw)
    w6 = b.op("Reshape", "W", b.op("Concat", K, g, m1, tail, axis=0), hint="w6")
    wt = b.op("Transpose", w6, perm=[1, 0, 2, 3, 4, 5], hint="wt")
    wc = b.op("Reshape", wt, b.op("Concat", m1, tail, axis=0), hint="wc")
    conv = helper.make_node("Conv", ["X", wc], ["dy_conv"])
    _forward_attributes(conv, DYNAMIC_CONV2D)  # Conv has the same four attributes
    yc = b.node(conv)  # (N, g*K*O/g, oh, ow)
    sp = b.sl(b.op("Shape", yc), 2, 4, "sp")
    y6 = b.op("Reshape", yc, b.op("Concat", b.ints([0]), g, K, m1, sp, axis=0), hint="y6")  # (N, g, K, O/g, oh, ow)
    a6 = b.op("Unsqueeze", "attention", b.ints([1, 3, 4, 5]), hint="a6")  # (N, 1, K, 1, 1, 1)
    ys = b.op("ReduceSum", b.op("Mul", y6, a6), b.ints([2]), keepdims=0, hint="ys")  # (N, g, O/g, oh, ow)
    ysh = b.op("Concat", b.ints([0]), m1, sp, axis=0, hint="ysh")
    if has_bias:
        y = b.op("Reshape", ys, ysh, hint="y4")
        bb = b.op("Unsqueeze", b.op("MatMul", "attention", "B"), b.ints([2, 3]), hint="bb")  # (N, O, 1, 1)
        b.op("Add", y, bb, out="Y")
    else:
        b.op("Reshape", ys, ysh, out="Y")
    return helper.make_function(
        DOMAIN, DYNAMIC_CONV2D.name, list(DYNAMIC_CONV2D.input_names), ["Y"], b.nodes,
        [helper.make_opsetid("", opset)], attributes=[], attribute_protos=_attr_defaults(DYNAMIC_CONV2D),
        doc_string=f"Fallback: stacked-kernel Conv + attention-weighted ReduceSum (B={'yes' if has_bias else 'no'}).",
    )
