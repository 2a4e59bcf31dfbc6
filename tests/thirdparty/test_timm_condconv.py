"""timm's CondConv2d -> edgeconv.convert -> edgeconv.DynamicConv2d with a dynamic batch, on the
real timm package. Reference: timm's own forward (batch folded into groups, F.conv2d), which
shares no code with edgeconv::dynamic_conv2d or its C++ kernel.

Tolerance: the converted module mixes the same experts with the same matmul, so in eager mode it
matches timm to float32 rounding of a K=4 term sum (<= 1e-6 relative). In onnxruntime our kernel
sums the convolution in another order: float32 sums of up to C/g*kh*kw = 1152 terms round to
about sqrt(n)*eps ~ 2e-6 of the output scale; 1e-5 bounds that, and a wrong expert, bias or
per-sample kernel changes outputs by order 1e-1.
"""

import re

import numpy as np
import pytest
import torch
from torch import nn

import edgeconv
from edgeconv.exporters.onnx import DOMAIN, DYNAMIC_OP, ExportError
from edgeconv.thirdparty import RoutedDynamicConv2d

REL = 1e-5


def rel_err(y, ref):
    ref = np.asarray(ref, np.float64)
    return float(np.abs(np.asarray(y, np.float64) - ref).max() / np.abs(ref).max())


def run(proto, x, custom_ops=True):
    sess = edgeconv.ort_session(proto, custom_ops=custom_ops)
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


class Routed(nn.Module):
    """A bare timm CondConv2d with CondConv routing (sigmoid of a linear of the pooled input)."""

    def __init__(self, timm, **kw):
        super().__init__()
        self.route = nn.Linear(8, 3)
        self.conv = timm.layers.CondConv2d(8, 12, 3, num_experts=3, **kw)

    def forward(self, x):
        return self.conv(x, torch.sigmoid(self.route(x.mean((2, 3)))))


CASES = {
    "bias-groups2": dict(padding="", bias=True, groups=2),
    "stride2-dilation2": dict(stride=2, dilation=2, padding=2, bias=True),
    "same-stride2": dict(stride=2, padding="same", bias=True),  # timm's dynamic "same" padding
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bare_condconv_exports_as_dynamic_conv2d(timm, case):
    torch.manual_seed(0)
    model = Routed(timm, **CASES[case]).eval()
    converted = edgeconv.convert(model)
    assert isinstance(converted.conv, RoutedDynamicConv2d)
    assert isinstance(model.conv, timm.layers.CondConv2d)  # the original is left alone
    x1, x3 = torch.randn(1, 8, 13, 13), torch.randn(3, 8, 13, 13)
    proto = edgeconv.export_onnx(converted, (x1,))
    assert [n.op_type for n in proto.graph.node if n.domain == DOMAIN] == [DYNAMIC_OP]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    with torch.no_grad():
        for x in (x1, x3):
            ref = model(x).numpy()  # timm's own forward
            assert rel_err(converted(x).numpy(), ref) <= 1e-6
            assert rel_err(run(proto, x), ref) <= REL
            assert rel_err(run(proto, x, custom_ops=False), ref) <= REL


def test_bare_condconv_with_routing_input(timm):
    """A CondConv2d on its own: two graph inputs (x, routing weights), both with a dynamic batch."""
    torch.manual_seed(0)
    module = timm.layers.CondConv2d(6, 10, 3, padding="", bias=True, num_experts=4).eval()
    converted = edgeconv.convert(module)
    x, r = torch.randn(1, 6, 7, 7), torch.rand(1, 4)
    proto = edgeconv.export_onnx(converted, (x, r))
    assert all(i.type.tensor_type.shape.dim[0].dim_param == "batch" for i in proto.graph.input)
    sess = edgeconv.ort_session(proto)
    x3, r3 = torch.randn(3, 6, 7, 7), torch.rand(3, 4)
    y = sess.run(None, dict(zip([i.name for i in sess.get_inputs()], (x3.numpy(), r3.numpy()))))[0]
    with torch.no_grad():
        assert rel_err(y, module(x3, r3).numpy()) <= REL


def test_unconverted_condconv_fails_in_one_clean_line(timm):
    model = Routed(timm, bias=True).eval()
    with pytest.raises(ExportError) as info:
        edgeconv.export_onnx(model, (torch.randn(2, 8, 9, 9),))
    msg = str(info.value)
    assert "\n" not in msg and "\x1b" not in msg
    assert "module 'conv' (CondConv2d)" in msg and "groups from the batch size" in msg
    assert "edgeconv.convert(model)" in msg and "dynamic_batch=False" in msg
    assert info.value.module == "conv" and info.value.module_type == "CondConv2d"
    # the remedy it names works: a static batch exports (as plain Conv, the batch baked in)
    proto = edgeconv.export_onnx(model, (torch.randn(2, 8, 9, 9),), dynamic_batch=False)
    assert not any(n.domain == DOMAIN for n in proto.graph.node)


def test_convert_keeps_weights_training_state_and_other_modules(timm):
    model = nn.Sequential(Routed(timm, bias=True), nn.ReLU()).train()
    converted = edgeconv.convert(model)
    new, old = converted[0].conv, model[0].conv
    assert converted[0].route is not model[0].route  # a deep copy by default
    torch.testing.assert_close(new.weight.reshape(old.weight.shape), old.weight, rtol=0, atol=0)
    torch.testing.assert_close(new.bias, old.bias, rtol=0, atol=0)
    assert new.training and isinstance(converted[1], nn.ReLU)
    same = edgeconv.convert(model, inplace=True)
    assert same is model and isinstance(model[0].conv, RoutedDynamicConv2d)
    assert isinstance(edgeconv.convert(timm.layers.CondConv2d(4, 4, 1)), RoutedDynamicConv2d)
    with pytest.raises(TypeError, match="nn.Module"):
        edgeconv.convert("model")


# Whole network: float32 rounding differences compound through its ~80 convolutions (amplified
# by calibrated BatchNorm). onnxruntime's own plain-Conv export of this model (dynamic_batch=False)
# differs from PyTorch by 2.0e-5 (measured), ours by 1.7e-5; 1e-4 is deploy's default tolerance.
REL_MODEL = 1e-4


def test_efficientnet_cc_b0_4e_batch_1_and_3_from_one_export(timm, byom_models, tmp_path):
    model = byom_models.efficientnet_cc(convert=False)
    converted = edgeconv.convert(model)
    x1, x3 = torch.randn(1, 3, 96, 96), torch.randn(3, 3, 96, 96)
    proto = edgeconv.export_onnx(converted, (x1,), tmp_path / "cc.onnx")
    n_cond = sum(isinstance(m, timm.layers.CondConv2d) for m in model.modules())
    assert sum(n.op_type == DYNAMIC_OP for n in proto.graph.node) == n_cond == 24
    sess = edgeconv.ort_session(str(tmp_path / "cc.onnx"))
    with torch.no_grad():
        for x in (x1, x3):
            y = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
            ref = model(x).numpy()
            assert y.shape == (x.shape[0], 1000)
            assert rel_err(converted(x).numpy(), ref) <= 1e-6
            assert rel_err(y, ref) <= REL_MODEL


def test_other_export_failures_are_one_clean_line(monkeypatch):
    """A failure inside torch.onnx (here: its translation of aten.conv2d raises) reaches the user
    as one line without ANSI codes, naming the op, the module, the root cause and the remedy."""
    from torch.onnx._internal.exporter import _core

    def broken(*args, **kwargs):
        raise TypeError("\x1b[96mUnsupported\x1b[0m attribute type\nsecond line")

    real = _core._handle_call_function_node_with_lowering
    def fail_on_conv(model, node, *args, **kwargs):
        if "conv2d" in str(node.target):
            broken()
        return real(model, node, *args, **kwargs)

    monkeypatch.setattr(_core, "_handle_call_function_node_with_lowering", fail_on_conv)
    model = nn.Sequential(nn.Conv2d(3, 4, 3)).eval()
    with pytest.raises(ExportError) as info:
        edgeconv.export_onnx(model, (torch.randn(1, 3, 8, 8),))
    msg = str(info.value)
    assert "\n" not in msg and "\x1b" not in msg, msg
    assert re.search(r"translating aten\.conv2d\.default in module '0' \(Conv2d\): TypeError: "
                     r"Unsupported attribute type second line", msg), msg
    assert msg.endswith("export with dynamic_batch=False."), msg
