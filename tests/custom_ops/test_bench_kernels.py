"""Smoke test of `python -m edgeconv.bench kernels --quick` on a tiny shape."""

from __future__ import annotations

import json


def test_bench_kernels_quick(lib_path, tmp_path):
    from edgeconv.bench.kernels import main

    assert main(["--quick", "--shapes", "1x4x8x8-4k3", "--threads", "1", "--no-torch", "--library", lib_path,
                 "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "kernels.json").read_text())
    for key in ("shapes", "threads", "results", "ratios", "versions", "cpu", "repeats", "notes"):
        assert key in res, key
    assert res["shapes"] == ["1x4x8x8-4k3"] and res["threads"] == [1]
    variants = {(r["op"], r["variant"]) for r in res["results"]}
    assert {("deform", "edgeconv_v1"), ("deform", "edgeconv_v2"), ("deform", "ort_Conv"), ("dynamic", "edgeconv"),
            ("dynamic", "ort_Conv"), ("dynamic", "decomp_mix"), ("dynamic", "decomp_kconv")} <= variants
    assert all(r["median_ms"] > 0 for r in res["results"])
    ratio = res["ratios"][0]
    assert ratio["deform_edgeconv_v2_over_conv"] > 0 and ratio["dynamic_over_conv"] > 0
    assert (tmp_path / "kernels.png").stat().st_size > 0
