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
