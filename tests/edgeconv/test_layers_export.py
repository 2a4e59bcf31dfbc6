"""Every layer: gradients flow, and ``torch.export`` works with a dynamic batch dimension.

Deformable and dynamic convolution must stay one ``edgeconv::*`` custom-op node in the exported
graph; the exported program must reproduce eager results at a batch size other than the traced one
(same float32 ops, so the tolerance is tight: rtol 1e-5 of the output scale).
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import pytest
import torch

from edgeconv import layers as L

# name -> (constructor, input shape)
CASES: Dict[str, Tuple[Callable[[], torch.nn.Module], Tuple[int, ...]]] = {
    "true": (lambda: L.TrueConv2d(4, 6, 3, padding=1), (2, 4, 8, 8)),
    "group": (lambda: L.GroupConv2d(4, 6, 3, groups=2), (2, 4, 8, 8)),
    "depthwise": (lambda: L.DepthwiseConv2d(4, 3, multiplier=2), (2, 4, 8, 8)),
    "gdc": (lambda: L.GlobalDepthwiseConv2d(4, 8, bias=True), (2, 4, 8, 8)),
    "shuffle": (lambda: L.ChannelShuffle(2), (2, 4, 8, 8)),
    "shuffled_group": (lambda: L.ShuffledGroupConv2d(4, 6, 1, groups=2), (2, 4, 8, 8)),
    "separable": (lambda: L.DepthwiseSeparableConv2d(4, 6, 3, stride=2), (2, 4, 8, 8)),
    "mixconv": (lambda: L.MixConv2d(6, (3, 5), split="exponential"), (2, 6, 8, 8)),
    "dilated": (lambda: L.DilatedConv2d(4, 6, 3, dilation=2), (2, 4, 8, 8)),
    "deform": (lambda: L.DeformConv2d(4, 6, 3, offset_groups=2), (2, 4, 8, 8)),
    "deform_v2": (lambda: L.ModulatedDeformConv2d(4, 6, 3, groups=2), (2, 4, 8, 8)),
    "spatially_separable": (lambda: L.SpatiallySeparableConv2d(4, 6, 3), (2, 4, 8, 8)),
    "flattened": (lambda: L.FlattenedConv2d(4, 6, 3), (2, 4, 8, 8)),
    "hetconv": (lambda: L.HetConv2d(4, 8, 3, p=2, bias=True), (2, 4, 8, 8)),
    "hetconv_paper": (lambda: L.HetConv2d(4, 8, 3, p=2, layout="paper"), (2, 4, 8, 8)),
    "dynamic": (lambda: L.DynamicConv2d(4, 6, 3, num_kernels=3), (2, 4, 8, 8)),
}

CUSTOM_OPS = {"deform": "deform_conv2d", "deform_v2": "deform_conv2d", "dynamic": "dynamic_conv2d"}


def _perturb(m: torch.nn.Module) -> None:
    """Make offsets/masks non-trivial so gradients and export cover the deformable path."""
    for sub in m.modules():
        if isinstance(sub, (L.DeformConv2d, L.ModulatedDeformConv2d)):
            with torch.no_grad():
                for conv in (sub.conv_offset, sub.conv_mask):
                    if conv is not None:
                        conv.weight.normal_(0, 0.1)
                        conv.bias.normal_(0, 0.5)


@pytest.mark.parametrize("name", list(CASES))
def test_gradients_flow(name):
    torch.manual_seed(0)
    make, shape = CASES[name]
    m = make()
    _perturb(m)
    x = torch.randn(shape, requires_grad=True)
    m(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in m.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"


@pytest.mark.parametrize("name", list(CASES))
def test_export_dynamic_batch(name):
    torch.manual_seed(0)
    make, shape = CASES[name]
    m = make().eval()
    _perturb(m)
    x = torch.randn(shape)
    batch = torch.export.Dim("batch", min=1)
    ep = torch.export.export(m, (x,), dynamic_shapes=({0: batch},))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    if name in CUSTOM_OPS:
        op = CUSTOM_OPS[name]
        assert sum(t.startswith(f"edgeconv.{op}") for t in targets) == 1, targets
    assert not any("flip" in t for t in targets) or name == "true"
    for b in (1, 3):
        xb = torch.randn(b, *shape[1:])
        with torch.no_grad():
            expected = m(xb)
            got = ep.module()(xb)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


ONNX_CASES = {
    # TrueConv2d's flip acts on a parameter only: constant-folded into one Conv
    "true": (lambda: L.TrueConv2d(4, 6, 3, padding=1), (2, 4, 8, 8), ["Conv"]),
    "group": (lambda: L.GroupConv2d(4, 6, 3, groups=2), (2, 4, 8, 8), ["Conv"]),
    # HetConv: group conv + dense 1x1 (weight * mask folded), no dense masked K x K conv
    "hetconv": (lambda: L.HetConv2d(4, 8, 3, p=2), (2, 4, 8, 8), ["Conv", "Conv", "Add"]),
}


@pytest.mark.parametrize("name", list(ONNX_CASES))
def test_onnx_export_is_standard_conv_nodes(name):
    import onnxruntime as ort
    make, shape, expected_ops = ONNX_CASES[name]
    torch.manual_seed(0)
    m = make().eval()
    x = torch.randn(shape)
    prog = torch.onnx.export(
        m, (x,), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), optimize=True
    )
    graph = prog.model_proto.graph
    assert [n.op_type for n in graph.node] == expected_ops
    conv = graph.node[0]
    attrs = {a.name: a for a in conv.attribute}
    if name == "group":
        assert attrs["group"].i == 2
    sess = ort.InferenceSession(prog.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    xb = torch.randn(3, *shape[1:])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: xb.numpy()})
    with torch.no_grad():
        expected = m(xb)
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
