"""The memory-amplification case of issue 15, run as a script so that its peak RSS is its own:
a 1 MB model (DynamicConv2d, W an initializer [1, 1, 1, 512, 512], one output channel per group)
and a 2 KB input (X [512, 1, 1, 1], pads 256). Before the fix the AVX2 path kept N copies of the
16x panel-padded mixed weights: 8.3 GB RSS.

    python amplification_case.py LIB [ISA] -> prints "maxrss_mb=<peak RSS in MB> seconds=<run time>"
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ec_ortops_util import dynamic_model, session, to_initializers  # noqa: E402

# VmHWM, not ru_maxrss: Linux carries the parent's high-water mark (pytest's) across vfork+exec
from edgeconv.deploy.backends import peak_rss_kb  # noqa: E402

N, KS = 512, 512


def main(lib: str, isa: str = "auto") -> None:
    rng = np.random.default_rng(0)
    feeds = {"X": rng.standard_normal((N, 1, 1, 1), dtype=np.float32),
             "W": rng.standard_normal((1, 1, 1, KS, KS), dtype=np.float32),
             "attention": np.ones((N, 1), np.float32)}
    model, names = dynamic_model(False, pads=[KS // 2] * 4)
    model = to_initializers(model, feeds, ["W"])
    sess = session(model, lib, 1, **{"edgeconv.isa": isa})
    t0 = time.perf_counter()
    y = sess.run(None, {"X": feeds["X"], "attention": feeds["attention"]})[0]
    seconds = time.perf_counter() - t0
    # Y[n, 0, i, j] = W[KS/2 - i, KS/2 - j] * X[n] (the only tap that hits the 1x1 image).
    c = KS // 2
    ref = feeds["W"][0, 0, 0, c - np.arange(2)[:, None], c - np.arange(2)[None, :]][None] * feeds["X"][:, :, 0]
    np.testing.assert_allclose(y[:, 0], ref, rtol=1e-6)
    print(f"maxrss_mb={peak_rss_kb() / 1024:.0f} seconds={seconds:.2f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
