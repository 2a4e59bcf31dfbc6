"""A short fuzz campaign (fuzz_kernels.py) in the default suite: a few hundred seeded one-node
models, valid and invalid, each in a worker subprocess; `make fuzz N=10000` runs the long one."""

from __future__ import annotations

import fuzz_kernels


def test_validator_knows_the_issue_cases():
    """The independent validator flags the models the issue found accepted."""
    case = {"op": "deform", "attrs": {}, "inputs": {"X": {"shape": [1, 4, 2, 2]}, "W": {"shape": [0, 4, 2**63 - 1, 3]},
                                                  "offset": {"shape": [1, 18, 1, 1]}}}
    assert {"'W'", "'X'"} in fuzz_kernels.defects(case)  # kernel larger than the padded input
    case["inputs"]["W"]["shape"] = [0, 2**62 + 1, 1, 1]
    case["attrs"]["group"] = ("int", 4)
    assert {"'W'"} in fuzz_kernels.defects(case)


def test_short_campaign(lib_path):
    counts, bad = fuzz_kernels.campaign(400, seed=1, workers=2, timeout=60, lib=lib_path)
    print(fuzz_kernels.table(counts))
    assert counts["valid", "ok"] > 100 and counts["invalid", "rejected"] > 100, counts  # both kinds exercised
    assert not bad, bad[:5]
