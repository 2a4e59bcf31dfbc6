"""Runtime behaviour of compiled models: thread pool sizing and symbolic batch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeconv.exporters.tvm import compile_tvm


def _conv_model(batch) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((16, 8, 3, 3)) / 8).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["y"], ["z"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8, 12, 12])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [batch, 16, 12, 12])],
        [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_set_num_threads_resizes_the_pool_after_a_first_run(tmp_path):
    """1 then 2 then 1 threads, with a run at each step (TVM sizes its pool at first use: a pool
    first used at 1 thread used to stay at 1). Fresh process: the pool is per process."""
    path = tmp_path / "conv.onnx"
    onnx.save(_conv_model(1), str(path))
    code = textwrap.dedent(f"""
        import numpy as np, tvm
        from edgeconv.exporters.tvm import compile_tvm, set_num_threads
        cm = compile_tvm({str(path)!r})
        x = np.ones((1, 8, 12, 12), np.float32)
        sizes = []
        for n in (1, 2, 1):
            set_num_threads(n)
            cm(x)
            sizes.append(int(tvm.get_global_func("runtime.NumThreads")()))
        print(sizes)
    """)
    env = {**__import__("os").environ, "TVM_NUM_THREADS": "1"}  # TVM's pool would start at 1 worker
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[1, 2, 1]"


def test_default_dynamic_batch_export_compiles_to_scheduled_kernels():
    """export_onnx's default (dynamic batch) compiled without input_shapes: every conv on our
    kernels, one module for batch 1 and 3, matching onnxruntime."""
    import warnings

    import torch
    from torch import nn

    from edgeconv.exporters.onnx import export_onnx

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU6(),
        nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.ReLU(),
        nn.Conv2d(16, 24, 1), nn.Conv2d(24, 24, 5, 1, 2, groups=4),
    ).eval()
    proto = export_onnx(model, (torch.randn(1, 3, 32, 32),))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the default: dynamic batch
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "left to TVM's generic lowering"
        cm = compile_tvm(proto)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        ref = sess.run(None, {proto.graph.input[0].name: x})[0]
        # float32, fan-in <= 150, other summation order: ~1e-6 measured
        assert np.abs(cm(x)[0] - ref).max() < 1e-4 * max(1.0, float(np.abs(ref).max()))


def test_wrong_input_shape_is_a_clear_error():
    import pytest

    cm = compile_tvm(_conv_model(2))
    with pytest.raises(ValueError, match=r"input 'x' has shape \(3, 8, 12, 12\).*compiled for \(2, 8, 12, 12\)"):
        cm(np.zeros((3, 8, 12, 12), np.float32))
