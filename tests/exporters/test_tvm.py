"""edgeconv's TVM pipeline: every conv kind, compiled for the host, matches onnxruntime."""

from __future__ import annotations

import shutil
import subprocess
import warnings

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
import torch
import onnx
import onnxruntime as ort

from torch import nn  # noqa: E402

from edgeconv.exporters.tvm import compile_tvm, edgeconv_pipeline, import_model  # noqa: E402

RTOL = 1e-4


# --------------------------------------------------------------------------- models
class Conv(nn.Module):  # standard dense conv + bias + relu
    def __init__(self, s, c=6, o=10):
        super().__init__()
        self.c = nn.Conv2d(c, o, 3, s, 1)

    def forward(self, x):
        return torch.relu(self.c(x))


class Group(nn.Module):
    def __init__(self, s, c=8, o=12):
        super().__init__()
        self.c = nn.Conv2d(c, o, 3, s, 1, groups=4)

    def forward(self, x):
        return self.c(x)


class Depthwise(nn.Module):  # multiplier 2, relu6
    def __init__(self, s, c=6, k=3, mult=2):
        super().__init__()
        self.c = nn.Conv2d(c, c * mult, k, s, k // 2, groups=c)

    def forward(self, x):
        return torch.clamp(self.c(x), 0.0, 6.0)


class Dilated(nn.Module):
    def __init__(self, s, c=6):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, s, 2, dilation=2, groups=c)
        self.c = nn.Conv2d(c, 8, 3, 1, 3, dilation=(3, 2), bias=False)

    def forward(self, x):
        return self.c(self.dw(x))


class Separable(nn.Module):  # depthwise + BN + relu, pointwise + BN + relu
    def __init__(self, s, c=6, o=12):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, s, 1, groups=c, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, o, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(o)

    def forward(self, x):
        return torch.relu(self.bn2(self.pw(torch.relu(self.bn1(self.dw(x))))))


class MixConv(nn.Module):  # split + depthwise 3/5/7 + concat
    def __init__(self, s, c=6):
        super().__init__()
        self.splits = [2, 2, 2]
        self.convs = nn.ModuleList(nn.Conv2d(n, n, k, s, k // 2, groups=n) for n, k in zip(self.splits, (3, 5, 7)))

    def forward(self, x):
        xs = torch.split(x, self.splits, dim=1)
        return torch.cat([c(t) for c, t in zip(self.convs, xs)], dim=1)


class SpatialSep(nn.Module):  # kx1 then 1xk (dense)
    def __init__(self, s, c=6, o=8):
        super().__init__()
        self.v = nn.Conv2d(c, o, (3, 1), (s, 1), (1, 0))
        self.h = nn.Conv2d(o, o, (1, 3), (1, s), (0, 1))

    def forward(self, x):
        return self.h(self.v(x))


class Flattened(nn.Module):  # lateral 1x1, vertical kx1 per channel, horizontal 1xk per channel
    def __init__(self, s, c=6, o=8, k=5):
        super().__init__()
        self.l = nn.Conv2d(c, o, 1, bias=False)
        self.v = nn.Conv2d(o, o, (k, 1), (s, 1), (k // 2, 0), groups=o, bias=False)
        self.h = nn.Conv2d(o, o, (1, k), (1, s), (0, k // 2), groups=o)

    def forward(self, x):
        return self.h(self.v(self.l(x)))


class HetConv(nn.Module):  # HetConv as group KxK (G=P) + pointwise 1x1
    def __init__(self, s, c=8, o=8, p=4):
        super().__init__()
        self.g = nn.Conv2d(c, o, 3, s, 1, groups=p, bias=False)
        self.p = nn.Conv2d(c, o, 1, s, 0)

    def forward(self, x):
        return self.g(x) + self.p(x)


class Shuffle(nn.Module):  # group conv, channel shuffle, group conv
    def __init__(self, s, c=8, g=2):
        super().__init__()
        self.g = g
        self.c1 = nn.Conv2d(c, c, 1, 1, 0, groups=g)
        self.c2 = nn.Conv2d(c, c, 3, s, 1, groups=g)

    def forward(self, x):
        y = self.c1(x)
        b, c, h, w = y.shape
        y = y.reshape(b, self.g, c // self.g, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.c2(y)


class GDC(nn.Module):  # global depthwise conv: K = H x W, no padding
    def __init__(self, s, c=6, hw=(17, 23)):
        super().__init__()
        self.c = nn.Conv2d(c, c, hw, 1, 0, groups=c, bias=False)

    def forward(self, x):
        return self.c(x)


class Mixed(nn.Module):  # a tiny mobile net: stem, separable, shuffle group block, residual, head
    def __init__(self, s, c=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(c, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU6())
        self.dw = nn.Conv2d(16, 16, 3, s, 1, groups=16)
        self.pw = nn.Conv2d(16, 24, 1)
        self.g1 = nn.Conv2d(24, 24, 1, groups=4)
        self.g2 = nn.Conv2d(24, 24, 3, 1, 1, groups=24)
        self.g3 = nn.Conv2d(24, 24, 1, groups=4)
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(self.pw(torch.relu(self.dw(x))))
        y = torch.relu(self.g1(x))
        b, c, h, w = y.shape
        y = y.reshape(b, 4, c // 4, h, w).transpose(1, 2).reshape(b, c, h, w)
        y = self.g3(self.g2(y))
        x = torch.relu(x + y)
        return self.fc(x.mean(dim=(2, 3)))


KINDS = {
    "conv": (Conv, 6),
    "group": (Group, 8),
    "depthwise_mult": (Depthwise, 6),
    "dilated": (Dilated, 6),
    "separable": (Separable, 6),
    "mixconv": (MixConv, 6),
    "spatial_separable": (SpatialSep, 6),
    "flattened": (Flattened, 6),
    "hetconv": (HetConv, 8),
    "shuffle": (Shuffle, 8),
}


# --------------------------------------------------------------------------- helpers
def _export(model: nn.Module, x: np.ndarray) -> onnx.ModelProto:
    model.eval()
    # non-trivial BN statistics
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(model, (torch.from_numpy(x),), dynamo=True, verbose=False)
    return prog.model_proto


def _ort(model: onnx.ModelProto, x: np.ndarray):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


def _check(model_proto, x, layout="blocked"):
    ref = _ort(model_proto, x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = compile_tvm(model_proto, target="x86", layout=layout)
    failed = [str(w.message) for w in caught if "schedule failed" in str(w.message)]
    assert not failed, failed
    out = compiled(x)
    assert len(out) == len(ref)
    for o, r in zip(out, ref):
        assert o.shape == r.shape
        scale = max(float(np.abs(r).max()), 1e-6)
        err = float(np.abs(o - r).max()) / scale
        assert err < RTOL, f"max rel error {err:.3e}"
    return compiled


def _lowered(model_proto, family="x86", layout="blocked"):
    mod, _, _ = import_model(model_proto)
    target = tvm.target.Target({"kind": "llvm", "mcpu": "core-avx2"} if family == "x86" else {
        "kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]})
    with target:
        return edgeconv_pipeline(family, layout=layout)(mod)


def _assert_all_convs_ours(lowered):
    names = [gv.name_hint for gv, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    ours = [n for n in names if n.startswith("ec_")]
    stock = [n for n in names if "conv" in n and not n.startswith("ec_")]
    assert ours, names
    assert not stock, f"conv left to the stock lowering: {stock}"


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("stride,batch", [(1, 1), (2, 2)])
@pytest.mark.parametrize("kind", list(KINDS))
def test_kind_matches_onnxruntime(kind, stride, batch):
    cls, c = KINDS[kind]
    torch.manual_seed(0)
    model = cls(stride)
    x = np.random.default_rng(0).standard_normal((batch, c, 17, 23)).astype("float32")
    proto = _export(model, x)
    _check(proto, x)
    _assert_all_convs_ours(_lowered(proto))


@pytest.mark.parametrize("batch", [1, 2])
def test_gdc(batch):
    torch.manual_seed(0)
    x = np.random.default_rng(1).standard_normal((batch, 6, 17, 23)).astype("float32")
    _check(_export(GDC(1), x), x)


@pytest.mark.parametrize("stride,batch", [(1, 2), (2, 1)])
def test_mixed_model(stride, batch):
    torch.manual_seed(0)
    x = np.random.default_rng(2).standard_normal((batch, 3, 33, 47)).astype("float32")
    proto = _export(Mixed(stride), x)
    _check(proto, x)
    _assert_all_convs_ours(_lowered(proto))


@pytest.mark.parametrize("k,stride,dil", [(3, 2, 1), (5, 1, 1), (7, 2, 1), (3, 1, 2)])
def test_depthwise_kernels_wide_rows(k, stride, dil):
    """Vectorised paths (rows >= vector width) with bias + relu fused, onnx.helper graph."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(k)
    C, H, W = 16, 19, 37
    x = rng.standard_normal((1, C, H, W)).astype("float32")
    w = rng.standard_normal((C, 1, k, k)).astype("float32")
    b = rng.standard_normal((C,)).astype("float32")
    p = dil * (k // 2)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[stride] * 2,
                         pads=[p] * 4, dilations=[dil] * 2, group=C),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    _check(proto, x)


def test_separable_fused_kernel():
    """A depthwise-separable block with a large intermediate becomes one fused kernel."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(6)
    C, O, H, W = 64, 48, 65, 63  # 64 x 65 x 63 x 4 B ~ 1 MB intermediate: fused
    x = rng.standard_normal((1, C, H, W)).astype("float32")
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["d"], kernel_shape=[3, 3], pads=[1] * 4, group=C),
        helper.make_node("Relu", ["d"], ["r"]),
        helper.make_node("Conv", ["r", "w2", "b2"], ["y"], kernel_shape=[1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "sep", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(rng.standard_normal((C, 1, 3, 3)).astype("float32"), "w1"),
         numpy_helper.from_array(rng.standard_normal((C,)).astype("float32"), "b1"),
         numpy_helper.from_array(rng.standard_normal((O, C, 1, 1)).astype("float32"), "w2"),
         numpy_helper.from_array(rng.standard_normal((O,)).astype("float32"), "b2")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    _check(proto, x, layout="nchw")  # the fused kernel is NCHW
    lowered = _lowered(proto, layout="nchw")
    names = [gv.name_hint for gv, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert [n for n in names if n.startswith("ec_separable_")], names
    assert not [n for n in names if n.startswith(("ec_depthwise", "ec_pointwise"))], names


def test_named_pipeline_with_tvm_compile():
    from tvm import relax

    torch.manual_seed(0)
    x = np.random.default_rng(3).standard_normal((1, 8, 17, 23)).astype("float32")
    proto = _export(Group(1), x)
    mod, _, _ = import_model(proto)
    ex = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}), relax_pipeline="edgeconv_x86")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x)).numpy()
    ref = _ort(proto, x)[0]
    assert np.abs(out - ref).max() / np.abs(ref).max() < RTOL


def test_torch_module_import():
    torch.manual_seed(0)
    x = np.random.default_rng(4).standard_normal((1, 6, 17, 23)).astype("float32")
    model = Separable(2).eval()
    compiled = compile_tvm(model, target="x86", example_inputs=(x,))
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    out = compiled(x)[0]
    assert np.abs(out - ref).max() / np.abs(ref).max() < RTOL


def _cross_tools():
    return shutil.which("aarch64-linux-gnu-g++") and shutil.which("aarch64-linux-gnu-objdump")


@pytest.mark.skipif(not _cross_tools(), reason="aarch64 cross toolchain missing (apt-get install g++-aarch64-linux-gnu)")
def test_arm64_library_has_neon_fma(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    C = 16
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["d"], kernel_shape=[3, 3], pads=[1] * 4, group=C),
        helper.make_node("Conv", ["d", "w2"], ["y"], kernel_shape=[1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "sep", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, 20, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(rng.standard_normal((C, 1, 3, 3)).astype("float32"), "w1"),
         numpy_helper.from_array(rng.standard_normal((32, C, 1, 1)).astype("float32"), "w2")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    lib = tmp_path / "sep_arm64.so"
    compile_tvm(proto, target="arm64", output=lib)
    asm = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    # the NEON FMAs must sit in our conv kernels
    kernels = [blk for blk in asm.split("\n\n") if "<ec_" in blk.split("\n")[0]]
    assert kernels, "no ec_* kernels in the library"
    assert any("fmla\tv" in blk and ".4s" in blk for blk in kernels), "no NEON vector FMA in conv kernels"


def _sep_proto(C=16, O=32, H=20, W=20):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["d"], kernel_shape=[3, 3], pads=[1] * 4, group=C),
        helper.make_node("Conv", ["d", "w2"], ["y"], kernel_shape=[1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "sep", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, H, W])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(rng.standard_normal((C, 1, 3, 3)).astype("float32"), "w1"),
         numpy_helper.from_array(rng.standard_normal((O, C, 1, 1)).astype("float32"), "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.skipif(not shutil.which("objdump"), reason="binutils objdump missing")
def test_x86_avx512_library_uses_zmm_fma(tmp_path):
    """Cross-build for AVX-512 (the host may lack it): conv kernels use 512-bit FMAs."""
    lib = tmp_path / "sep_avx512.so"
    compile_tvm(_sep_proto(), target="x86-avx512", output=lib)
    asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True,
                         check=True).stdout
    kernels = [blk for blk in asm.split("\n\n") if "<ec_" in blk.split("\n")[0]]
    assert kernels
    assert any("vfmadd" in blk and "zmm" in blk for blk in kernels)


def test_compiled_model_benchmark_helper():
    x = np.random.default_rng(8).standard_normal((1, 16, 20, 20)).astype("float32")
    compiled = compile_tvm(_sep_proto(), target="x86")
    times = compiled.benchmark(x, number=2, repeat=2)
    assert len(times) == 2 and all(t > 0 for t in times)


@pytest.mark.slow
def test_metaschedule_tuning_on_top(tmp_path):
    """tune_trials > 0: MetaSchedule tunes the non-conv kernels, our conv kernels stay as they are."""
    torch.manual_seed(0)
    x = np.random.default_rng(9).standard_normal((1, 3, 33, 47)).astype("float32")
    proto = _export(Mixed(1), x)
    ref = _ort(proto, x)[0]
    compiled = compile_tvm(proto, target="x86", tune_trials=8, work_dir=str(tmp_path / "db"))
    out = compiled(x)[0]
    assert np.abs(out - ref).max() / np.abs(ref).max() < RTOL
    assert (tmp_path / "db" / "database_workload.json").exists()


def test_edgeconv_layers_chain():
    """The project's own layers (plain kinds, stride 1) chained in one model."""
    from edgeconv import layers

    extra = {"group": {"groups": 4}, "shuffle": {"groups": 2}, "shuffled_group": {"groups": 2}}
    kinds = ["conv", "true", "group", "depthwise", "shuffle", "shuffled_group", "separable", "dilated",
             "spatially_separable", "hetconv", "mixconv", "flattened"]
    torch.manual_seed(0)
    mods = []
    for kind in kinds:
        kw = {} if kind in ("shuffle", "mixconv") else dict(kernel_size=3)
        kw.update(extra.get(kind, {}))
        mods.append(layers.create_conv2d(kind, 8, 8, **kw))
    model = nn.Sequential(*mods).eval()
    x = np.random.default_rng(10).standard_normal((2, 8, 17, 23)).astype("float32")
    with torch.no_grad():
        assert tuple(model(torch.from_numpy(x)).shape) == (2, 8, 17, 23)  # stride 1 keeps the shape
    proto = _export(model, x)
    _check(proto, x)
    _assert_all_convs_ours(_lowered(proto))


def test_edgeconv_custom_ops_compile_through_their_standard_op_form():
    """A default export (edgeconv.DeformConv2d v2 + DynamicConv2d nodes with DeformConv-based
    fallbacks) compiles: import_model lowers the custom nodes to their decomposed bodies."""
    from edgeconv import export_onnx
    from edgeconv.layers import DynamicConv2d, ModulatedDeformConv2d

    torch.manual_seed(0)
    deform = ModulatedDeformConv2d(4, 8, 3)
    nn.init.normal_(deform.conv_offset.weight, std=0.3)  # non-zero offsets
    model = nn.Sequential(deform, nn.ReLU(), DynamicConv2d(8, 8, 3)).eval()
    x = torch.randn(2, 4, 9, 11)
    proto = export_onnx(model, (x,))
    assert {n.op_type for n in proto.graph.node if n.domain == "edgeconv"} == {"DeformConv2d", "DynamicConv2d"}
    name = proto.graph.input[0].name
    compiled = compile_tvm(proto, target="x86", input_shapes={name: list(x.shape)})
    expected = model(x).detach().numpy()
    # fp32 sums plus bilinear weights: relative error ~1e-6 measured; 1e-4 as for every kind here.
    np.testing.assert_allclose(compiled(x.numpy())[0], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("a_shape,b_shape,const", [
    ((1, 24, 72), (1, 1, 72, 40), "a"),  # decomposed deformable conv: weights @ columns
    ((1, 64), (64, 19), "b"),  # classifier: features @ weights
    ((2, 12, 36), (1, 2, 36, 50), "a"),  # decomposed grouped deformable conv: groups
    ((2, 12, 36), (3, 2, 36, 50), "a"),  # ... at batch 3: groups inside a batch
    ((3, 8, 16), (3, 16, 8), None),  # batched matmul of two inputs: groups of runtime weights
    ((1, 8, 16), (4, 16, 10), None),  # one a for every b: the batch
    ((3, 8, 16), (16, 10), "b"),  # one b for every a: a taller weight matrix
    ((2, 3, 8, 16), (3, 16, 8), None),  # a broadcast over b's groups: left to TVM, still correct
])
def test_matmul_runs_on_our_conv_kernels(a_shape, b_shape, const):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(8)
    a = rng.standard_normal(a_shape).astype("float32")
    b = rng.standard_normal(b_shape).astype("float32")
    inits = [numpy_helper.from_array(v, n) for n, v in (("A", a), ("B", b)) if const == n.lower()]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(v.shape))
              for n, v in (("A", a), ("B", b)) if const != n.lower()]
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["Y"])], "mm", inputs,
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [v for n, v in (("A", a), ("B", b)) if const != n.lower()]
    got = compile_tvm(proto, target="x86")(*feeds)[0]
    ref = np.matmul(a.astype(np.float64), b.astype(np.float64))
    # float32 sums of at most 72 products
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-5
    names = [gv.name_hint for gv in _lowered(proto).get_global_vars()]
    assert any(n.startswith(("ec_pointwise", "ec_group")) for n in names) == (len(a_shape) < 4), names
