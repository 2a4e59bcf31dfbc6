"""ONNX export of every edgeconv layer: node types, checker, shape inference, onnxruntime parity
(with the standard-operator fallbacks, and with the kernel library when it is built)."""

from __future__ import annotations

import collections
import functools

import numpy as np
import onnx
import onnxscript
import pytest
import torch
from onnxscript import FLOAT, opset18
from torch import nn

import edgeconv.layers as L
from edgeconv.exporters.onnx import (
    ExportError,
    check_parity,
    custom_ops_available,
    export_onnx,
    ort_session,
)

RTOL = 1e-4
BANNED = {"Loop", "Scan", "If"}


def _randomize_deform(model: nn.Module, std: float = 0.3) -> nn.Module:
    """Deformable layers start with zero offsets (= plain conv): make the offsets non-zero."""
    g = torch.Generator().manual_seed(1234)
    for mod in model.modules():
        for name in ("conv_offset", "conv_mask"):
            conv = getattr(mod, name, None)
            if isinstance(conv, nn.Conv2d):
                with torch.no_grad():
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * std)
                    conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * std)
    return model


def _op_counts(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(
        (f"{n.domain}." if n.domain else "") + n.op_type for n in model.graph.node
    )


def _conv_attrs(model: onnx.ModelProto) -> list[dict]:
    return [
        {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        for n in model.graph.node
        if n.op_type == "Conv"
    ]


# layer name -> (factory, input shape (C, H, W), expected node counts (subset), edgeconv ops)
LAYERS = {
    "TrueConv2d": (lambda: L.TrueConv2d(4, 6, 3, padding=1), (4, 9, 9), {"Conv": 1}),
    "GroupConv2d": (lambda: L.GroupConv2d(8, 12, 3, groups=4), (8, 9, 9), {"Conv": 1}),
    "DepthwiseConv2d": (lambda: L.DepthwiseConv2d(6, 3, multiplier=2), (6, 9, 9), {"Conv": 1}),
    "GlobalDepthwiseConv2d": (lambda: L.GlobalDepthwiseConv2d(6, 7), (6, 7, 7), {"Conv": 1}),
    "ChannelShuffle": (lambda: L.ChannelShuffle(3), (6, 5, 5), {"Conv": 0, "Reshape": 2, "Transpose": 1}),
    "ShuffledGroupConv2d": (lambda: L.ShuffledGroupConv2d(8, 8, 1, groups=4), (8, 6, 6),
                            {"Conv": 1, "Transpose": 1}),
    "DepthwiseSeparableConv2d": (lambda: L.DepthwiseSeparableConv2d(6, 8), (6, 9, 9), {"Conv": 2}),
    "MixConv2d": (lambda: L.MixConv2d(9, (3, 5, 7)), (9, 10, 10), {"Conv": 3}),
    "DilatedConv2d": (lambda: L.DilatedConv2d(4, 6, 3, dilation=2), (4, 11, 11), {"Conv": 1}),
    "DeformConv2d": (lambda: L.DeformConv2d(4, 6, 3, stride=2, groups=2, offset_groups=2), (4, 9, 10),
                     {"Conv": 1, "edgeconv.DeformConv2d": 1}),
    "ModulatedDeformConv2d": (lambda: L.ModulatedDeformConv2d(4, 6, 3, dilation=2, padding=2), (4, 9, 9),
                              {"Conv": 2, "Sigmoid": 1, "edgeconv.DeformConv2d": 1}),
    "SpatiallySeparableConv2d": (lambda: L.SpatiallySeparableConv2d(4, 6, 3), (4, 9, 9), {"Conv": 2}),
    "FlattenedConv2d": (lambda: L.FlattenedConv2d(4, 6, 3), (4, 9, 9), {"Conv": 3}),
    "HetConv2d": (lambda: L.HetConv2d(8, 8, 3, p=4), (8, 9, 9), {"Conv": 2}),
    "HetConv2d-paper": (lambda: L.HetConv2d(8, 8, 3, p=2, layout="paper"), (8, 9, 9), {"Conv": 2}),
    "DynamicConv2d": (lambda: L.DynamicConv2d(4, 6, 3, groups=2), (4, 9, 9),
                      {"Conv": 0, "edgeconv.DynamicConv2d": 1}),
}


@functools.lru_cache(maxsize=None)
def _layer_case(name: str):
    torch.manual_seed(0)
    factory, shape, _ = LAYERS[name]
    model = _randomize_deform(factory()).eval()
    x = torch.randn(1, *shape)
    return model, shape, export_onnx(model, (x,))


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_exports_standard_ops_and_matches(name):
    model, shape, onnx_model = _layer_case(name)
    counts = _op_counts(onnx_model)
    for op, n in LAYERS[name][2].items():
        assert counts.get(op, 0) == n, (op, counts)
    assert not BANNED & set(counts), counts
    assert "Flip" not in counts
    custom = {k for k in counts if k.startswith("edgeconv.")}
    if not custom:  # standard kinds: default domain only, no functions
        assert all(n.domain == "" for n in onnx_model.graph.node)
        assert not onnx_model.functions
        assert {o.domain for o in onnx_model.opset_import} == {""}
    else:  # one fallback function per custom op
        assert {f.name for f in onnx_model.functions} == {k.split(".")[1] for k in custom}
    onnx.checker.check_model(onnx_model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(onnx_model, strict_mode=True)
    out_dims = inferred.graph.output[0].type.tensor_type.shape.dim
    assert out_dims[0].dim_param, "batch must stay symbolic"
    sess = ort_session(onnx_model, custom_ops=False)
    for batch in (1, 5):
        x = torch.randn(batch, *shape)
        (res,) = check_parity(model, (x,), onnx_model, custom_ops=False, session=sess)
        assert res.max_rel < RTOL, (name, batch, res)
        assert not res.custom_ops
    with torch.no_grad():
        ref = model(x)
    assert tuple(d.dim_value for d in out_dims[1:]) == tuple(ref.shape[1:])


def test_conv_attributes_group_dilation():
    _, _, group = _layer_case("GroupConv2d")
    assert _conv_attrs(group)[0]["group"] == 4
    _, _, dw = _layer_case("DepthwiseConv2d")
    assert _conv_attrs(dw)[0]["group"] == 6
    _, _, dil = _layer_case("DilatedConv2d")
    assert _conv_attrs(dil)[0]["dilations"] == [2, 2]
    _, _, shuffle = _layer_case("ChannelShuffle")
    assert [n.op_type for n in shuffle.graph.node] == ["Reshape", "Transpose", "Reshape"]


def test_true_conv_exports_one_conv_with_flipped_constant_weight():
    torch.manual_seed(0)
    model = L.TrueConv2d(64, 32, 3, padding=1).eval()  # > 8192 weights: beyond torch's own folding
    onnx_model = export_onnx(model, (torch.randn(1, 64, 6, 6),))
    assert [n.op_type for n in onnx_model.graph.node] == ["Conv"]
    weight = onnx.numpy_helper.to_array(
        next(i for i in onnx_model.graph.initializer if i.name == onnx_model.graph.node[0].input[1])
    )
    np.testing.assert_array_equal(weight, model.weight.detach().flip(-1, -2).numpy())


# Kinds whose class is already exported above run in the slow suite only (runtime budget).
_FACTORY_DEFAULT = {"conv", "deform_v2", "dynamic"}


@pytest.mark.parametrize("kind", [k if k in _FACTORY_DEFAULT else pytest.param(k, marks=pytest.mark.slow)
                                  for k in L.CONV_KINDS])
def test_create_conv2d_every_kind_exports(kind):
    extra = {"group": dict(groups=2), "gdc": dict(spatial_size=6), "shuffle": dict(groups=2),
             "shuffled_group": dict(groups=2)}.get(kind, {})
    torch.manual_seed(0)
    model = _randomize_deform(L.create_conv2d(kind, 4, 4, **extra)).eval()
    onnx_model = export_onnx(model, (torch.randn(1, 4, 6, 6),))
    counts = _op_counts(onnx_model)
    assert not BANNED & set(counts)
    if kind in ("deform", "deform_v2"):
        assert counts["edgeconv.DeformConv2d"] == 1
    elif kind == "dynamic":
        assert counts["edgeconv.DynamicConv2d"] == 1
    else:
        assert all(n.domain == "" for n in onnx_model.graph.node)
    (res,) = check_parity(model, (torch.randn(3, 4, 6, 6),), onnx_model, custom_ops=False)
    assert res.max_rel < RTOL, (kind, res)


# --------------------------------------------------------------------------- mixed model
class Mixed(nn.Module):
    """Every kind in one small network: input [N, 3, 12, 12] -> (embedding [N, 8], the deformable
    block's output, the dynamic block's output); parity is checked on each output."""

    def __init__(self):
        super().__init__()
        self.stem = L.TrueConv2d(3, 8, 3, padding=1)
        self.group = L.GroupConv2d(8, 8, 3, groups=2)
        self.dw = L.DepthwiseConv2d(8, 3)
        self.shuffle = L.ChannelShuffle(2)
        self.sgc = L.ShuffledGroupConv2d(8, 8, 1, groups=4)
        self.sep = L.DepthwiseSeparableConv2d(8, 8)
        self.mix = L.MixConv2d(8, (3, 5))
        self.dil = L.DilatedConv2d(8, 8, 3, dilation=2)
        self.deform = L.DeformConv2d(8, 8, 3)
        self.mdeform = L.ModulatedDeformConv2d(8, 8, 3, offset_groups=2, bias=False)
        self.ss = L.SpatiallySeparableConv2d(8, 8, 3)
        self.flat = L.FlattenedConv2d(8, 8, 3)
        self.het = L.HetConv2d(8, 8, 3, p=4)
        self.dyn = L.DynamicConv2d(8, 8, 3)
        self.dyn_nb = L.DynamicConv2d(8, 8, 1, groups=2, bias=False)
        self.gdc = L.GlobalDepthwiseConv2d(8, 12)

    @staticmethod
    def _norm(x):  # per-sample RMS normalisation: keeps the signal alive through 16 random layers
        return x / (x.pow(2).mean((1, 2, 3), keepdim=True).sqrt() + 1e-6)

    def forward(self, x):
        x = self._norm(torch.relu(self.stem(x)))
        x = self._norm(self.shuffle(self.dw(self.group(x))))
        x = self._norm(torch.relu(self.sep(self.sgc(x))))
        x = self._norm(self.dil(self.mix(x)))
        deformed = self.mdeform(self.deform(x))
        x = self._norm(torch.relu(deformed))
        x = self._norm(self.het(self.flat(self.ss(x))))
        dynamic = self.dyn_nb(torch.relu(self.dyn(x)))
        return self.gdc(self._norm(dynamic)).flatten(1), deformed, dynamic


MIXED_COUNTS = {
    "Conv": 20,  # 1+1+1+1+2+2+1 + deform offset 1 + mdeform offset/mask 2 + 2+3+2 + gdc 1 (+0 dyn)
    "edgeconv.DeformConv2d": 2,
    "edgeconv.DynamicConv2d": 2,
    "Transpose": 2,  # two channel shuffles
}


@functools.lru_cache(maxsize=None)
def _mixed(**options):
    torch.manual_seed(0)
    model = _randomize_deform(Mixed()).eval()
    return model, export_onnx(model, (torch.randn(1, 3, 12, 12),), **options)


def _mixed_options(items=()):
    return _mixed(**dict(sorted(items)))  # sorted: one cache entry per option set


def test_mixed_model_nodes_checker_shapes_and_parity():
    model, onnx_model = _mixed_options()
    counts = _op_counts(onnx_model)
    for op, n in MIXED_COUNTS.items():
        assert counts[op] == n, (op, counts)
    assert not BANNED & set(counts)
    assert {(f.domain, f.name) for f in onnx_model.functions} == {
        ("edgeconv", "DeformConv2d"), ("edgeconv", "DynamicConv2d")}
    assert {(o.domain, o.version) for o in onnx_model.opset_import} == {("", 20), ("edgeconv", 1)}
    onnx.checker.check_model(onnx_model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(onnx_model, strict_mode=True)
    dims = inferred.graph.output[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 8
    sess = ort_session(onnx_model, custom_ops=False)
    for batch in (1, 5):
        results = check_parity(model, (torch.randn(batch, 3, 12, 12),), onnx_model,
                               custom_ops=False, session=sess)
        assert len(results) == 3
        for res in results:
            assert res.max_rel < RTOL, (batch, res)


def test_mixed_model_reference_evaluator_matches():
    """onnx.reference runs the whole model through the fallback functions (its DeformConv is a
    per-pixel Python loop, so the gather-based body is used here; test_onnx_fallbacks.py checks
    the DeformConv body against onnx.reference on small inputs)."""
    from onnx.reference import ReferenceEvaluator

    model, onnx_model = _mixed_options((("opset", 13), ("deform_fallback", "decomposed")))
    x = torch.randn(2, 3, 12, 12)
    got = ReferenceEvaluator(onnx_model).run(None, {onnx_model.graph.input[0].name: x.numpy()})
    with torch.no_grad():
        refs = [t.numpy() for t in model(x)]
    for g, ref in zip(got, refs, strict=True):
        assert np.abs(g - ref).max() / np.abs(ref).max() < RTOL


@pytest.mark.parametrize(
    "options, absent, present",
    [
        ((("deform", "standard"),), {"edgeconv.DeformConv2d"}, {"DeformConv", "edgeconv.DynamicConv2d"}),
        ((("dynamic", "decomposed"),), {"edgeconv.DynamicConv2d"}, {"edgeconv.DeformConv2d", "ReduceSum"}),
        pytest.param((("deform", "standard"), ("dynamic", "decomposed")),
                     {"edgeconv.DeformConv2d", "edgeconv.DynamicConv2d"}, {"DeformConv"}, marks=pytest.mark.slow),
        pytest.param((("deform_fallback", "decomposed"),), set(), {"edgeconv.DeformConv2d"},
                     marks=pytest.mark.slow),
        ((("opset", 13), ("deform_fallback", "decomposed")), {"DeformConv"}, {"edgeconv.DeformConv2d"}),
        pytest.param((("opset", 17), ("deform_fallback", "decomposed"), ("dynamic", "decomposed")), {"DeformConv"},
                     {"edgeconv.DeformConv2d"}, marks=pytest.mark.slow),
    ],
    ids=["deform-standard", "dynamic-decomposed", "all-standard", "deform-decomposed", "opset13", "opset17"],
)
def test_mixed_model_options(options, absent, present):
    model, onnx_model = _mixed_options(options)
    counts = _op_counts(onnx_model)
    assert not absent & set(counts), counts
    assert present <= set(counts), counts
    assert not BANNED & set(counts)
    opset = dict(options).get("opset", 20)
    assert next(o.version for o in onnx_model.opset_import if o.domain == "") == opset
    if not any(n.domain == "edgeconv" for n in onnx_model.graph.node):
        assert not onnx_model.functions
        assert "edgeconv" not in {o.domain for o in onnx_model.opset_import}
    onnx.checker.check_model(onnx_model, full_check=True)
    onnx.shape_inference.infer_shapes(onnx_model, strict_mode=True)
    sess = ort_session(onnx_model, custom_ops=False)
    for batch in (1, 5):
        for res in check_parity(model, (torch.randn(batch, 3, 12, 12),), onnx_model,
                                custom_ops=False, session=sess):
            assert res.max_rel < RTOL, (options, batch, res)


def test_export_saves_file(tmp_path):
    model = L.DepthwiseSeparableConv2d(4, 4).eval()
    path = tmp_path / "m.onnx"
    proto = export_onnx(model, (torch.randn(1, 4, 5, 5),), path)
    assert onnx.load(str(path)).SerializeToString() == proto.SerializeToString()
    sess = ort_session(path, threads=1)
    assert sess.get_inputs()[0].shape[0] == "batch"


def test_static_batch():
    model = L.GroupConv2d(4, 4, 3, groups=2).eval()
    proto = export_onnx(model, (torch.randn(2, 4, 5, 5),), dynamic_batch=False)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


# --------------------------------------------------------------------------- bad input
@torch.library.custom_op("edgeconv_test::mystery", mutates_args=())
def _mystery(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_mystery.register_fake
def _(x):
    return torch.empty_like(x)


class _Mystery(nn.Module):
    def forward(self, x):
        return torch.ops.edgeconv_test.mystery(x)


@onnxscript.script()
def _twice(x: FLOAT) -> FLOAT:
    return opset18.Add(x, x)


def test_error_names_op_and_module():
    model = nn.Sequential(L.GroupConv2d(4, 4, 3, groups=2), nn.Sequential(nn.ReLU(), _Mystery())).eval()
    with pytest.raises(ExportError, match=r"edgeconv_test::mystery.*'1\.1' \(_Mystery\)") as info:
        export_onnx(model, (torch.randn(1, 4, 6, 6),))
    assert info.value.op == "edgeconv_test::mystery"
    assert info.value.module == "1.1"
    assert info.value.module_type == "_Mystery"


def test_error_suggests_a_real_option_that_exports_the_op():
    """The no-export-rule message names export_onnx's custom_translation_table; passing an
    onnxscript translation there exports the op (x * 2 as Add(x, x): onnxruntime vs torch)."""
    import inspect

    with pytest.raises(ExportError) as info:
        export_onnx(_Mystery().eval(), (torch.randn(1, 4, 6, 6),))
    assert "export_onnx(..., custom_translation_table={torch.ops.edgeconv_test.mystery.default:" in str(info.value)
    assert "custom_translation_table" in inspect.signature(export_onnx).parameters
    x = torch.randn(2, 4, 6, 6)
    proto = export_onnx(_Mystery().eval(), (x,),
                        custom_translation_table={torch.ops.edgeconv_test.mystery.default: _twice})
    (got,) = ort_session(proto, threads=1).run(None, {proto.graph.input[0].name: x.numpy()})
    np.testing.assert_array_equal(got, (x * 2).numpy())  # x + x == 2 * x exactly in float


def test_input_and_output_names():
    class TwoOut(nn.Module):
        def forward(self, image, scale):
            return image * scale, image.sum()

    args = (torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4))
    proto = export_onnx(TwoOut().eval(), args, input_names=["img", "s"], output_names=["scaled", "total"])
    assert [i.name for i in proto.graph.input] == ["img", "s"]
    assert [o.name for o in proto.graph.output] == ["scaled", "total"]
    scaled, total = ort_session(proto, threads=1).run(None, {"img": args[0].numpy(), "s": args[1].numpy()})
    np.testing.assert_allclose(scaled, (args[0] * args[1]).numpy(), rtol=1e-6)
    for bad, match in ((dict(input_names=["a", "a"]), "unique"), (dict(input_names=["a", "b", "c"]), "has 3 names"),
                       (dict(output_names=["y", "z", "w"]), "has 3 names"), (dict(input_names="img"), "sequence")):
        with pytest.raises(ExportError, match=match) as info:
            export_onnx(TwoOut().eval(), args, **bad)
        assert info.value.option == next(iter(bad))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_unsupported_dtype_refused_at_export(dtype):
    model = L.DepthwiseConv2d(4).to(dtype).eval()
    with pytest.raises(ExportError, match="unsupported dtype"):
        export_onnx(model, (torch.randn(1, 4, 6, 6, dtype=dtype),))
    with pytest.raises(ExportError, match="unsupported dtype .* parameter"):
        export_onnx(model, (torch.randn(1, 4, 6, 6),))


def test_deform_standard_below_opset_19_refused():
    model = L.DeformConv2d(4, 4, 3).eval()
    with pytest.raises(ExportError, match="DeformConv.*opset 19"):
        export_onnx(model, (torch.randn(1, 4, 6, 6),), opset=18, deform="standard")
    with pytest.raises(ExportError, match="deform_fallback='decomposed'"):
        export_onnx(model, (torch.randn(1, 4, 6, 6),), opset=17)


def test_model_without_deform_exports_at_opset_13():
    model = nn.Sequential(L.MixConv2d(6, (3, 5)), L.ChannelShuffle(2)).eval()
    proto = export_onnx(model, (torch.randn(1, 6, 7, 7),), opset=13)
    assert next(o.version for o in proto.opset_import if o.domain == "") == 13
    onnx.checker.check_model(proto, full_check=True)
    (res,) = check_parity(model, (torch.randn(4, 6, 7, 7),), proto, custom_ops=False)
    assert res.max_rel < RTOL


@pytest.mark.parametrize("kwargs", [dict(deform="fast"), dict(dynamic="x"), dict(deform_fallback="y"),
                                    dict(opset=12), dict(opset=99)])
def test_invalid_options(kwargs):
    with pytest.raises(ExportError):
        export_onnx(L.DepthwiseConv2d(4).eval(), (torch.randn(1, 4, 6, 6),), **kwargs)


# --------------------------------------------------------------------------- kernel library
needs_library = pytest.mark.skipif(not custom_ops_available(), reason="edgeconv kernel library not built")


@needs_library
@pytest.mark.parametrize("options", [(), (("deform_fallback", "decomposed"), ("opset", 13))],
                         ids=["default", "decomposed-opset13"])
def test_mixed_model_with_kernel_library(options):
    model, onnx_model = _mixed_options(options)
    sess = ort_session(onnx_model, custom_ops=True)
    for batch in (1, 5):
        for res in check_parity(model, (torch.randn(batch, 3, 12, 12),), onnx_model, session=sess):
            assert res.custom_ops and res.max_rel < RTOL, (batch, res)


@needs_library
def test_library_kernels_take_precedence_over_fallbacks():
    """With the library registered onnxruntime runs the kernels: a broken fallback body is unused."""
    model, onnx_model = _mixed_options()
    broken = onnx.ModelProto()
    broken.CopyFrom(onnx_model)
    for f in broken.functions:
        del f.node[:]
        f.node.append(onnx.helper.make_node("Constant", [], ["Y"], value_float=123.0))
    for res in check_parity(model, (torch.randn(2, 3, 12, 12),), broken, custom_ops=True):
        assert res.max_rel < RTOL
