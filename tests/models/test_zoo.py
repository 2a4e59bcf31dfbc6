"""Model zoo: registry, construction at small sizes, shapes, conv kinds, GDC input sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgeconv.models as zoo

EXPECTED = {
    "mobilenetv2_dynamic", "shufflenet_g3", "mixnet_s", "dcn_resnet18", "hetconv_vgg16",
    "mobilefacenet", "flattened_net", "edgenet",
}
ALL_KINDS = {
    "true", "group", "depthwise", "gdc", "shuffled_group", "separable", "mixconv", "dilated",
    "deform", "deform_v2", "spatially_separable", "flattened", "hetconv", "dynamic",
}
# conv kinds each architecture must contain (as reported by edgeconv.analysis.profile)
MODEL_KINDS = {
    "mobilenetv2_dynamic": {"dynamic", "depthwise"},
    "shufflenet_g3": {"shuffled_group", "group", "depthwise"},
    "mixnet_s": {"mixconv", "group"},
    "dcn_resnet18": {"deform_v2"},
    "hetconv_vgg16": {"hetconv"},
    "mobilefacenet": {"gdc", "depthwise"},
    "flattened_net": {"flattened", "spatially_separable"},
    "edgenet": ALL_KINDS,
}


def small(name: str, size: int = 32, **kw):
    """A small instance of ``name`` (width 0.25, 10 classes, ``size`` x ``size`` input)."""
    entry = zoo.get_entry(name)
    if entry.accepts("input_size"):
        kw.setdefault("input_size", size)
    kw.setdefault("width_mult", 0.25)
    if name != "mobilefacenet":
        kw.setdefault("num_classes", 10)
    return zoo.create(name, **kw).eval()


def test_registry_lists_every_architecture():
    assert set(zoo.list()) == EXPECTED
    assert zoo.list() == zoo.list_models() == sorted(EXPECTED)
    for name in EXPECTED:
        entry = zoo.get_entry(name)
        assert len(entry.default_input) == 4 and entry.description


def test_unknown_model_names_the_known_ones():
    with pytest.raises(KeyError, match="known models: .*edgenet"):
        zoo.create("resnet9000")


def test_duplicate_registration_is_rejected():
    with pytest.raises(ValueError, match="already registered"):
        zoo.register_model("edgenet")(lambda: None)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_forward_small_and_kinds(name):
    from edgeconv.analysis import profile

    torch.manual_seed(0)
    model = small(name)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = model(x)
    assert y.shape == ((2, 128) if name == "mobilefacenet" else (2, 10))
    assert torch.isfinite(y).all()
    kinds = {r.kind for r in profile(model, (1, 3, 32, 32)).rows}
    assert MODEL_KINDS[name] <= kinds, f"{name} misses kinds {MODEL_KINDS[name] - kinds}"


@pytest.mark.parametrize("name", ["shufflenet_g3", "hetconv_vgg16", "dcn_resnet18"])
def test_any_input_size(name):
    model = small(name)
    with torch.no_grad():
        for hw in [(32, 32), (48, 40), (64, 64)]:
            assert model(torch.randn(1, 3, *hw)).shape == (1, 10)


def test_edgenet_is_small_fast_and_uses_every_kind():
    from edgeconv.analysis import count_parameters, profile
    from edgeconv.models.edgenet import EDGENET_KINDS

    model = zoo.create("edgenet").eval()
    assert count_parameters(model) < 1_000_000
    prof = profile(model, (1, 3, 64, 64))
    assert {r.kind for r in prof.rows} >= ALL_KINDS == set(EDGENET_KINDS)
    assert prof.total_macs < 50e6
    # the shuffle inside ShuffledGroupConv2d is the ChannelShuffle kind
    from edgeconv.layers import ChannelShuffle

    assert any(isinstance(m, ChannelShuffle) for m in model.modules())


@pytest.mark.parametrize("size,gdc", [(112, (7, 7)), (32, (2, 2)), (64, (4, 4)), ((96, 128), (6, 8)), (33, (3, 3))])
def test_gdc_spatial_size(size, gdc):
    from edgeconv.models.mobilefacenet import gdc_spatial_size

    assert gdc_spatial_size(size) == gdc


@pytest.mark.parametrize("size", [32, (48, 64)])
def test_mobilefacenet_gdc_follows_input_size(size):
    from edgeconv.models.mobilefacenet import gdc_spatial_size

    model = zoo.create("mobilefacenet", input_size=size, width_mult=0.25).eval()
    assert model.gdc[0].kernel_size == gdc_spatial_size(size)
    h, w = (size, size) if isinstance(size, int) else size
    with torch.no_grad():
        assert model(torch.randn(1, 3, h, w)).shape == (1, 128)


def test_gdc_models_reject_a_different_input_size():
    model = zoo.create("edgenet", input_size=64).eval()
    with pytest.raises(Exception):
        with torch.no_grad():
            model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="at least 32x32"):
        zoo.create("edgenet", input_size=16)


def test_width_mult_scales_parameters():
    from edgeconv.analysis import count_parameters

    a = count_parameters(zoo.create("shufflenet_g3", width_mult=0.5, num_classes=10))
    b = count_parameters(zoo.create("shufflenet_g3", width_mult=1.0, num_classes=10))
    assert a < b / 2


# ------------------------------------------------------------------------------------------
# export: every registered model exports with edgeconv.export_onnx and matches PyTorch in
# onnxruntime (rel 1e-4), all in the default suite (10-40 s each on 2 cores).
# ------------------------------------------------------------------------------------------


def _exporter():
    from edgeconv.exporters.onnx import check_parity, custom_ops_available, export_onnx

    return export_onnx, check_parity, custom_ops_available


TOL = 1e-4


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_export_matches_pytorch(name, tmp_path):
    from edgeconv.models._blocks import randomize_bn

    export_onnx, check_parity, custom_ops_available = _exporter()
    torch.manual_seed(0)
    model = randomize_bn(small(name)).eval()  # non-trivial BN statistics make parity meaningful
    x = torch.randn(1, 3, 32, 32)
    proto = export_onnx(model, (x,), tmp_path / f"{name}.onnx")
    assert (tmp_path / f"{name}.onnx").stat().st_size > 0
    for custom_ops in ((True, False) if custom_ops_available() else (False,)):
        for res in check_parity(model, (x,), proto, custom_ops=custom_ops):
            assert res.max_rel <= TOL, f"{name} custom_ops={custom_ops}: rel err {res.max_rel:.3e}"


@pytest.mark.slow  # export + TVM compile: 15-50 s per model on 2 cores
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tvm_matches_pytorch(name, tmp_path):
    """Every architecture through edgeconv's TVM pipeline (blocked layout, standard-op form of
    the edgeconv ops), against PyTorch; no conv may be left on TVM's generic lowering."""
    import warnings

    pytest.importorskip("tvm")
    from edgeconv.exporters.tvm import compile_tvm
    from edgeconv.models._blocks import randomize_bn

    export_onnx, _, _ = _exporter()
    torch.manual_seed(0)
    model = randomize_bn(small(name)).eval()
    x = torch.randn(1, 3, 32, 32)
    proto = export_onnx(model, (x,), tmp_path / f"{name}.onnx")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "edgeconv: .* conv2d left")
        compiled = compile_tvm(proto, target="x86", input_shapes={proto.graph.input[0].name: [1, 3, 32, 32]})
    got = compiled(x.numpy())[0]
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(got - ref).max() / np.abs(ref).max() <= TOL
