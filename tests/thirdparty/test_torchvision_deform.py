"""torchvision's DeformConv2d / deform_conv2d (DCNv1, v2) -> edgeconv.DeformConv2d, on the real
torchvision package. References: the numpy loop kernel behind ``torchvision::deform_conv2d``
(conftest) and onnxruntime's own ONNX ``DeformConv`` (``deform="standard"``).

Tolerance: max|y - ref| / max|ref| <= 1e-5. The outputs are float32 sums of C/g*9 <= 288
bilinear samples; the float32 rounding of such a sum and of the bilinear weights stays near
sqrt(n)*eps*sum|terms| ~ 1e-6 of the output scale, 10x below the bound, while any wrong tap,
offset group or mask index gives errors of order 1e-1.
"""

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import edgeconv
from edgeconv.exporters.onnx import DEFORM_OP, DOMAIN

REL = 1e-5


def rel_err(y, ref):
    ref = np.asarray(ref, np.float64)
    return float(np.abs(np.asarray(y, np.float64) - ref).max() / np.abs(ref).max())


def op_types(proto):
    return {(n.domain, n.op_type) for n in proto.graph.node}


def run(proto, x, custom_ops=True):
    sess = edgeconv.ort_session(proto, custom_ops=custom_ops)
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


class FunctionalDCN(nn.Module):
    """``torchvision.ops.deform_conv2d`` called as a function (v1 without mask, v2 with)."""

    def __init__(self, tv, modulated):
        super().__init__()
        self.tv, self.modulated = tv, modulated
        self.offset = nn.Conv2d(8, 2 * 2 * 9, 3, 2, 1)
        self.mask = nn.Conv2d(8, 2 * 9, 3, 2, 1)
        self.weight = nn.Parameter(torch.randn(12, 4, 3, 3) * 0.2)
        self.bias = nn.Parameter(torch.randn(12))
        with torch.no_grad():
            self.offset.weight.mul_(3.0)

    def forward(self, x):
        mask = torch.sigmoid(self.mask(x)) if self.modulated else None
        return self.tv.ops.deform_conv2d(x, self.offset(x), self.weight, self.bias, stride=2,
                                         padding=1, mask=mask)


@pytest.mark.parametrize("modulated", [False, True], ids=["dcnv1", "dcnv2"])
def test_functional_deform_conv2d_exports_to_edgeconv_op(torchvision, modulated):
    torch.manual_seed(0)
    model = FunctionalDCN(torchvision, modulated).eval()
    x1, x3 = torch.randn(1, 8, 11, 11), torch.randn(3, 8, 11, 11)
    proto = edgeconv.export_onnx(model, (x1,))
    assert (DOMAIN, DEFORM_OP) in op_types(proto) and ("", "DeformConv") not in op_types(proto)
    node = next(n for n in proto.graph.node if n.op_type == DEFORM_OP)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["group"] == 2 and attrs["offset_group"] == 2 and list(attrs["strides"]) == [2, 2]
    assert (node.input[3] != "") == modulated  # torchvision's placeholder mask is dropped for v1
    with torch.no_grad():
        for x in (x1, x3):  # one export, batch 1 and 3
            ref = model(x).numpy()
            assert rel_err(run(proto, x), ref) <= REL  # our kernel
            assert rel_err(run(proto, x, custom_ops=False), ref) <= REL  # the fallback function


def test_dcn_model_parity_ours_and_onnxruntime_deformconv(byom_models):
    """The DCN model of `edgeconv deploy` (DCNv2: stride 2, groups 2, offset groups 2; DCNv1:
    offset groups 4, no bias): our op vs the numpy reference, and vs onnxruntime's own DeformConv."""
    model = byom_models.dcn()
    x1, x3 = torch.randn(1, 3, 48, 48), torch.randn(3, 3, 48, 48)
    ours = edgeconv.export_onnx(model, (x1,))
    standard = edgeconv.export_onnx(model, (x1,), deform="standard")
    assert sum(n.op_type == DEFORM_OP for n in ours.graph.node) == 2
    assert sum(n.op_type == "DeformConv" and n.domain == "" for n in standard.graph.node) == 2
    assert not any(n.domain == DOMAIN for n in standard.graph.node)
    with torch.no_grad():
        for x in (x1, x3):
            ref = model(x).numpy()
            y_ours, y_ort = run(ours, x), run(standard, x, custom_ops=False)
            assert rel_err(y_ours, ref) <= REL
            assert rel_err(y_ort, ref) <= REL
            assert rel_err(y_ours, y_ort) <= 2 * REL


def test_numpy_kernel_is_what_torchvision_runs(torchvision):
    """The test kernel is really in use (so the references above are the numpy loop): a
    hand-computed single tap. Offset (0.5, 0.25) samples between four pixels of a ramp image."""
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    w = torch.zeros(1, 1, 1, 1) + 2.0
    off = torch.tensor([0.5, 0.25]).reshape(1, 2, 1, 1).expand(1, 2, 4, 4).contiguous()
    y = torchvision.ops.deform_conv2d(x, off, w)
    # bilinear sample at (r + 0.5, c + 0.25) of x = 4r + c is 4(r + .5) + c + .25 inside the image
    expect = 2 * (4 * (torch.arange(4.0).view(4, 1) + 0.5) + torch.arange(4.0).view(1, 4) + 0.25)
    torch.testing.assert_close(y[0, 0, :3, :3], expect[:3, :3])
