"""Fuzz campaign against libedgeconv_ort: seeded random one-node models, valid and invalid.

Every case is a JSON spec made from (seed, case index) alone, so any case can be re-run. Cases run
in a pool of worker subprocesses (one model, session and run per case); the parent classifies:

* ``ok``                valid model, output matches an independent reference (numpy float64 loop
                        reference of docs/onnx-ops.md, and onnxruntime's own DeformConv for finite
                        deformable cases);
* ``rejected``          invalid model, rejected with a one-line edgeconv error naming a culprit
                        that an independent Python validator also finds;
* ``over limit``        valid model run with a small edgeconv.max_memory_bytes, rejected with the
                        memory-limit error;
* ``crash``             the worker died (signal, abort) without a sanitizer report;
* ``hang``              no answer within the timeout;
* ``sanitizer``         an AddressSanitizer / UndefinedBehaviorSanitizer report;
* ``wrong result``      valid model, output differs from the reference (values, shape, NaN/Inf);
* ``false rejection``   valid model rejected;
* ``unclear error``     invalid model rejected, but the message is not a one-line edgeconv error
                        naming the input or attribute at fault;
* ``missing rejection`` invalid model accepted;
* ``fuzzer error``      the generator produced something that is not a loadable ONNX model (a bug
                        of this file).

    python tests/custom_ops/fuzz_kernels.py --cases 10000 [--seed 0] [--workers 2] [--timeout 60]
    python tests/custom_ops/fuzz_kernels.py --case 123 --seed 0     # one case: spec and verdict

Exit status 1 when any case is in a bad category. The library is EDGECONV_ORT_LIBRARY or the
installed one (scripts/sanitize.sh --fuzz runs the sanitizer build).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BAD = ("crash", "hang", "sanitizer", "wrong result", "false rejection", "unclear error", "missing rejection",
       "fuzzer error")
CATEGORIES = ("ok", "rejected", "over limit") + BAD
MAX_ATTR = 2**24
I64_MAX = 2**63 - 1
OPS = {"deform": "DeformConv2d", "dynamic": "DynamicConv2d"}
INPUTS = {"deform": ["X", "W", "offset", "mask", "B"], "dynamic": ["X", "W", "attention", "B"]}
SANITIZER_MARKERS = ("AddressSanitizer", "UndefinedBehaviorSanitizer", "runtime error:", "LeakSanitizer")


# =============================================================================================
# Generator


def _rand_attr_value(rng, kind: str):
    """A wrongly typed attribute value: (type tag, value)."""
    return {"float": ("float", 1.0), "floats": ("floats", [1.0, 1.0]), "string": ("string", "1"),
            "int": ("int", 1), "ints": ("ints", [1, 1]), "empty": ("ints", [])}[kind]


def _valid_case(rng, op: str) -> dict:
    r = lambda lo, hi: int(rng.integers(lo, hi + 1))  # noqa: E731
    large = rng.random() < 0.1  # past the AVX2 blocking: > 16 output channels, reduction > 256
    # depthwise DynamicConv2d (C/group == 1: the direct per-plane path) with many groups, up to 5x5
    # kernels and rows wider than the AVX2 vectors (8 outputs, stride-2 rows read 16 pixels) and
    # than the register-accumulated rows (64 outputs)
    depthwise = op == "dynamic" and rng.random() < 0.25
    G = r(1, 24) if depthwise else r(1, 3)
    Cg = 1 if depthwise else (r(1, 40) if large else r(1, 3))
    C = G * Cg
    if rng.random() < 0.03:
        Og = 0
    elif depthwise:
        Og = 1 if rng.random() < 0.7 else r(2, 3)  # channel multiplier
    else:
        Og = r(1, 40) if large else r(1, 3)
    O = G * Og
    kmax = 5 if depthwise else 4
    KH, KW = r(1, kmax), r(1, kmax)
    sh, sw, dh, dw = r(1, 3), r(1, 3), r(1, 2), r(1, 2)
    pads = [r(0, 2) for _ in range(4)]
    extra = 20 if large or depthwise else 6
    H = max(1, (KH - 1) * dh + 1 - pads[0] - pads[2]) + r(0, extra)
    Wd = max(1, (KW - 1) * dw + 1 - pads[1] - pads[3]) + r(0, 90 if depthwise else extra)  # rows both sides of 64
    N = 0 if rng.random() < 0.05 else r(1, 3)
    OH = (H + pads[0] + pads[2] - (KH - 1) * dh - 1) // sh + 1
    OW = (Wd + pads[1] + pads[3] - (KW - 1) * dw - 1) // sw + 1
    attrs = {"strides": ("ints", [sh, sw]), "pads": ("ints", pads), "dilations": ("ints", [dh, dw]),
             "group": ("int", G)}
    for name, default in (("strides", [1, 1]), ("pads", [0, 0, 0, 0]), ("dilations", [1, 1]), ("group", 1)):
        if attrs[name][1] == default and rng.random() < 0.5:
            del attrs[name]  # defaults also exercised by absence
    if rng.random() < 0.2:
        attrs["kernel_shape"] = ("ints", [KH, KW])
    inputs = {"X": {"shape": [N, C, H, Wd]}}
    if op == "deform":
        divs = [d for d in range(1, C + 1) if C % d == 0]
        og = int(rng.choice(divs))
        if og != 1 or rng.random() < 0.3:
            attrs["offset_group"] = ("int", og)
        inputs["W"] = {"shape": [O, Cg, KH, KW]}
        inputs["offset"] = {"shape": [N, og * 2 * KH * KW, OH, OW], "scale": float(rng.choice([0.5, 2.0, 10.0]))}
        if rng.random() < 0.5:
            inputs["mask"] = {"shape": [N, og * KH * KW, OH, OW]}
        if rng.random() < 0.5:
            inputs["B"] = {"shape": [O]}
    else:
        K = r(1, 4)
        inputs["W"] = {"shape": [K, O, Cg, KH, KW]}
        inputs["attention"] = {"shape": [N, K]}
        if rng.random() < 0.5:
            inputs["B"] = {"shape": [K, O]}
    if rng.random() < 0.5:
        inputs["W"]["init"] = True
    if "B" in inputs and rng.random() < 0.3:
        inputs["B"]["init"] = True
    # non-finite / huge values at a few positions (valid models: compared with the reference)
    if rng.random() < 0.3:
        name = str(rng.choice([n for n in inputs if n != "X" or rng.random() < 0.5]))
        if name in ("offset",):
            specials = ["nan", "inf", "-inf", "1e30", "-3e38"]
        elif name == "attention":
            specials = ["nan"]
        else:
            specials = ["nan", "inf", "-inf"]
        inputs[name]["specials"] = [str(rng.choice(specials)) for _ in range(r(1, 3))]
    return {"op": op, "attrs": attrs, "inputs": inputs}


def _mutate(rng, case: dict) -> None:
    """One random defect (the validator decides afterwards whether the model is still valid)."""
    op, attrs, inputs = case["op"], case["attrs"], case["inputs"]
    kind = str(rng.choice(["attr_range", "attr_type", "attr_len", "foreign_attr", "kernel_shape", "rank",
                           "dim", "overflow", "zero_dim"]))
    if kind == "attr_range":
        name = str(rng.choice(["strides", "pads", "dilations", "group"] + (["offset_group"] if op == "deform" else [])))
        bad = int(rng.choice([0, -1, -3, MAX_ATTR + 1, 2**40, 2**62, I64_MAX]))
        if name in ("group", "offset_group"):
            attrs[name] = ("int", bad if rng.random() < 0.7 else inputs["X"]["shape"][1] + 1)
        else:
            n = {"strides": 2, "pads": 4, "dilations": 2}[name]
            typ, v = attrs.get(name, ("ints", [0 if name == "pads" else 1] * n))
            v = list(v) if typ == "ints" and len(v) == n else [0 if name == "pads" else 1] * n
            v[int(rng.integers(n))] = bad
            attrs[name] = ("ints", v)
    elif kind == "attr_type":
        name = str(rng.choice(["strides", "pads", "dilations", "group", "kernel_shape"]
                              + (["offset_group"] if op == "deform" else [])))
        scalar = name in ("group", "offset_group")
        attrs[name] = _rand_attr_value(rng, str(rng.choice(["float", "ints", "string"] if scalar else
                                                            ["float", "floats", "string", "int", "empty"])))
    elif kind == "attr_len":
        name = str(rng.choice(["strides", "pads", "dilations", "kernel_shape"]))
        attrs[name] = ("ints", [1] * int(rng.choice([1, 3, 5])))
    elif kind == "foreign_attr":
        if op == "deform" or rng.random() < 0.5:
            attrs["auto_pad"] = ("string", str(rng.choice(["NOTSET", "SAME_UPPER", "VALID"])))
        else:
            attrs["offset_group"] = ("int", 1)
    elif kind == "kernel_shape":
        w = inputs["W"]["shape"]
        attrs["kernel_shape"] = ("ints", [w[-2] + 1 if w[-2] < I64_MAX else 1, w[-1]])
    elif kind == "rank":
        name = str(rng.choice(list(inputs)))
        shape = inputs[name]["shape"]
        if rng.random() < 0.5 and len(shape) > 1:
            shape.pop(int(rng.integers(len(shape))))
        else:
            shape.insert(int(rng.integers(len(shape) + 1)), 1)
        inputs[name].pop("specials", None)
    elif kind == "dim":
        name = str(rng.choice(list(inputs)))
        shape = inputs[name]["shape"]
        i = int(rng.integers(len(shape)))
        shape[i] = max(0, shape[i] + int(rng.choice([-1, 1, 2])))
        inputs[name].pop("specials", None)
    elif kind == "zero_dim":
        name = str(rng.choice(["X", "W"]))
        shape = inputs[name]["shape"]
        shape[int(rng.integers(1, len(shape)))] = 0
        inputs[name].pop("specials", None)
    else:  # overflow: zero-size initializers whose other dims are huge (issue 15's cases)
        lead = [1] if op == "dynamic" else []
        C = inputs["X"]["shape"][1]
        pattern = str(rng.choice(["kernel", "cg_group", "big_x", "offset_kk"]))
        if pattern == "kernel":
            inputs["W"] = {"shape": lead + [0, C, int(rng.choice([I64_MAX, 2**62, 2**40, 2**31])), 3], "empty": True}
        elif pattern == "cg_group":
            attrs["group"] = ("int", 4)
            inputs["W"] = {"shape": lead + [0, 2**62 + 1, 1, 1], "empty": True}
        else:
            big = int(rng.choice([2**20, 2**30]))
            cin = int(rng.choice([1, 16, 2**40]))
            inputs["X"] = {"shape": [0, cin, big, big], "empty": True}
            inputs["W"] = {"shape": lead + [0, cin, big, big], "empty": True}
            if op == "deform":
                attrs["offset_group"] = ("int", int(rng.choice([1, 16])))
                inputs["offset"] = {"shape": [0, int(rng.choice([0, 2])), 1, 1]}
                inputs.pop("mask", None)
            else:
                inputs["attention"] = {"shape": [0, 1]}
            inputs.pop("B", None)


def make_case(seed: int, index: int) -> dict:
    rng = np.random.default_rng([seed, index])
    op = "deform" if rng.random() < 0.6 else "dynamic"
    case = _valid_case(rng, op)
    if rng.random() < 0.55:
        for _ in range(int(rng.choice([1, 1, 2]))):
            _mutate(rng, case)
    for spec in case["inputs"].values():
        if spec.get("empty") and 0 not in spec["shape"]:  # (a mutation removed the zero dim: keep the
            spec["shape"][0] = 0                            # initializer zero-size, i.e. well-formed ONNX)
    case.update(id=index, seed=seed, data_seed=int(rng.integers(2**31)), threads=int(rng.choice([1, 2])),
                isa=str(rng.choice(["auto", "generic"])), ort_check=bool(rng.random() < 0.3),
                scratch_limit=int(rng.choice([512, 4096, 65536])) if rng.random() < 0.05 else None)
    return case


# =============================================================================================
# Independent validator: every rule of docs/onnx-ops.md, in Python integers (no overflow)


def expected_shape(case: dict) -> list[int]:
    """Output shape of a valid case."""
    get = lambda n, d: case["attrs"][n][1] if n in case["attrs"] else d  # noqa: E731
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = get("strides", [1, 1]), get("pads", [0] * 4), get("dilations", [1, 1])
    N, _, H, W = case["inputs"]["X"]["shape"]
    O, _, KH, KW = case["inputs"]["W"]["shape"][-4:]
    return [N, O, (H + pt + pb - (KH - 1) * dh - 1) // sh + 1, (W + pl + pr - (KW - 1) * dw - 1) // sw + 1]


def defects(case: dict) -> list[set[str]]:
    """All defects of the model, each as the set of words an error message may name for it. Any
    one of them may be the one reported (the kernels stop at the first they check)."""
    op, attrs, inputs = case["op"], case["attrs"], case["inputs"]
    out: list[set[str]] = []

    def bad(*words):
        out.append(set(words))

    # attributes (checked at session creation)
    allowed = {"strides": 2, "pads": 4, "dilations": 2, "kernel_shape": 2, "group": None}
    if op == "deform":
        allowed["offset_group"] = None
    values = {}
    for name, (typ, value) in attrs.items():
        if name not in allowed:
            bad(f"attribute '{name}'")
        elif typ != ("int" if allowed[name] is None else "ints") or (typ == "ints" and len(value) == 0):
            bad(f"attribute '{name}'")
        elif typ == "ints" and len(value) != allowed[name]:
            bad(f"attribute '{name}'")
        else:
            lo = 0 if name == "pads" else 1
            if name != "kernel_shape" and any(not lo <= v <= MAX_ATTR for v in (value if typ == "ints" else [value])):
                bad(f"attribute '{name}'")
            values[name] = value
    if out:
        return out
    strides, pads = values.get("strides", [1, 1]), values.get("pads", [0, 0, 0, 0])
    dils, group, og = values.get("dilations", [1, 1]), values.get("group", 1), values.get("offset_group", 1)
    ks = values.get("kernel_shape")

    # inputs (checked per call)
    shp = {n: s["shape"] for n, s in inputs.items()}
    ranks = {"X": 4, "W": 4 if op == "deform" else 5, "offset": 4, "mask": 4, "attention": 2,
             "B": 1 if op == "deform" else 2}
    rank_ok = {n: len(s) == ranks[n] for n, s in shp.items()}
    for n, ok in rank_ok.items():
        if not ok:
            bad(f"'{n}'")
    if not (rank_ok["X"] and rank_ok["W"]):
        return out
    N, C, H, Wd = shp["X"]
    lead = 0 if op == "deform" else 1
    K = shp["W"][0] if op == "dynamic" else 1
    O, Cg, KH, KW = shp["W"][lead:]
    if K == 0:
        bad("'W'")
    if C == 0 or H == 0 or Wd == 0 or H > 2**30 or Wd > 2**30:
        bad("'X'")
    if KH == 0 or KW == 0:
        bad("'W'")
    if K == 0 or C == 0 or H == 0 or Wd == 0 or KH == 0 or KW == 0:
        return out
    if ks is not None and list(ks) != [KH, KW]:
        bad("attribute 'kernel_shape'")
    if C % group:
        bad("'X'", "group")
    elif Cg != C // group:
        bad("'W'")
    if O % group:
        bad("'W'", "group")
    ext_h, ext_w = (KH - 1) * dils[0] + 1, (KW - 1) * dils[1] + 1
    fits = True
    for ext, size, p0, p1 in ((ext_h, H, pads[0], pads[2]), (ext_w, Wd, pads[1], pads[3])):
        if ext > size + p0 + p1:
            bad("'W'", "'X'")
            fits = False
    if not fits:
        return out
    OH = (H + pads[0] + pads[2] - ext_h) // strides[0] + 1
    OW = (Wd + pads[1] + pads[3] - ext_w) // strides[1] + 1
    KK = KH * KW
    if KK * Cg > I64_MAX:
        bad("'W'")
    if N * O * OH * OW > I64_MAX:
        bad("'Y'")
    if op == "deform":
        if C % og:
            bad("'X'", "offset_group")
        if og * 2 * KK > I64_MAX:
            bad("'offset'")
        if rank_ok["offset"] and shp["offset"] != [N, og * 2 * KK, OH, OW]:
            bad("'offset'")
        if "mask" in shp and rank_ok["mask"] and shp["mask"] != [N, og * KK, OH, OW]:
            bad("'mask'")
        if "B" in shp and rank_ok["B"] and shp["B"] != [O]:
            bad("'B'")
    else:
        if rank_ok["attention"] and shp["attention"] != [N, K]:
            bad("'attention'")
        if "B" in shp and rank_ok["B"] and shp["B"] != [K, O]:
            bad("'B'")
    return out


# =============================================================================================
# Worker: builds and runs one case, compares with the reference


def _arrays(case: dict) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(case["data_seed"])
    arrays = {}
    for name, spec in case["inputs"].items():
        if spec.get("empty"):
            continue
        shape = spec["shape"]
        if name == "mask":
            a = rng.random(shape, dtype=np.float32)
        elif name == "attention":
            a = rng.random(shape, dtype=np.float32)
        else:
            a = rng.standard_normal(shape, dtype=np.float32) * np.float32(spec.get("scale", 1.0))
        if spec.get("specials") and a.size:
            flat = a.reshape(-1)
            for v in spec["specials"]:
                flat[rng.integers(flat.size)] = np.float32(float(v))
        arrays[name] = a
    return arrays


def _model(case: dict, arrays: dict):
    import onnx
    from onnx import AttributeProto, TensorProto, helper, numpy_helper

    from ec_ortops_util import make_model

    op = case["op"]
    present = [n for n in INPUTS[op] if n in case["inputs"]]
    names = [n if n in case["inputs"] else "" for n in INPUTS[op][: INPUTS[op].index(present[-1]) + 1]]
    node = helper.make_node(OPS[op], names, ["Y"], domain="edgeconv")
    types = {"int": AttributeProto.INT, "ints": AttributeProto.INTS, "float": AttributeProto.FLOAT,
             "floats": AttributeProto.FLOATS, "string": AttributeProto.STRING}
    for name, (typ, value) in case["attrs"].items():
        node.attribute.append(helper.make_attribute(name, value, attr_type=types[typ]))
    model = make_model(node, [n for n in names if n])
    inits = [n for n in present if case["inputs"][n].get("init") or case["inputs"][n].get("empty")]
    keep = [i for i in model.graph.input if i.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    for n in inits:
        if case["inputs"][n].get("empty"):
            model.graph.initializer.append(helper.make_tensor(n, TensorProto.FLOAT, case["inputs"][n]["shape"], []))
        else:
            model.graph.initializer.append(numpy_helper.from_array(arrays[n], n))
    assert isinstance(model, onnx.ModelProto)
    return model


def _attr(case, name, default):
    return case["attrs"].get(name, (None, default))[1]


def _reference(case: dict, a: dict) -> np.ndarray:
    from ec_ortops_util import deform_conv2d_ref, dynamic_conv2d_ref

    kw = dict(strides=tuple(_attr(case, "strides", [1, 1])), pads=tuple(_attr(case, "pads", [0, 0, 0, 0])),
              dilations=tuple(_attr(case, "dilations", [1, 1])), group=_attr(case, "group", 1))
    with np.errstate(invalid="ignore", over="ignore"):
        if case["op"] == "deform":
            return deform_conv2d_ref(a["X"], a["W"], a["offset"], a.get("mask"), a.get("B"),
                                     offset_group=_attr(case, "offset_group", 1), **kw)
        return dynamic_conv2d_ref(a["X"], a["W"], a["attention"], a.get("B"), **kw)


def _compare(y: np.ndarray, ref: np.ndarray, absref: np.ndarray, what: str) -> str | None:
    if y.shape != ref.shape:
        return f"{what}: shape {list(y.shape)} != {list(ref.shape)}"
    for pred in (np.isnan, np.isposinf, np.isneginf):
        if not np.array_equal(pred(y), pred(ref)):
            return f"{what}: {pred.__name__} pattern differs at {int((pred(y) != pred(ref)).sum())} values"
    fin = np.isfinite(ref) & np.isfinite(absref)
    # check_close's bound: a float32 sum of n terms errs by <= ~n*eps*sum|terms|
    err = np.abs(y.astype(np.float64)[fin] - ref[fin])
    bound = 2e-5 * absref[fin] + 1e-6
    if (err > bound).any():
        worst = int((err / bound).argmax())
        return f"{what}: error {err[worst]:.3g} > bound {bound[worst]:.3g} at {int((err > bound).sum())} values"
    return None


def _ort_deform(case, a) -> np.ndarray:
    import onnxruntime as ort

    from ec_ortops_util import onnx_deform_model

    attrs = {k: v for k, (t, v) in case["attrs"].items() if k != "kernel_shape"}
    model = onnx_deform_model("mask" in a, "B" in a, **attrs)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: a[i.name] for i in sess.get_inputs()})[0]


def run_case(case: dict, lib: str) -> dict:
    from ec_ortops_util import session

    try:
        arrays = _arrays(case)
        model = _model(case, arrays)
    except Exception as e:  # noqa: BLE001 - the generator made something that is not ONNX
        return {"outcome": "fuzzer error", "message": f"{type(e).__name__}: {e}"}
    try:
        config = {"edgeconv.isa": case["isa"]}
        if case.get("scratch_limit"):
            config["edgeconv.max_memory_bytes"] = str(case["scratch_limit"])
        sess = session(model, lib, case["threads"], **config)
        y = sess.run(None, {i.name: arrays[i.name] for i in sess.get_inputs()})[0]
    except Exception as e:  # noqa: BLE001 - the message is what is judged
        return {"outcome": "error", "type": type(e).__name__, "message": str(e)}
    problem = None
    if y.size == 0 or any(a.size == 0 for a in arrays.values()) or len(arrays) < len(case["inputs"]):
        if list(y.shape) != expected_shape(case):
            problem = f"output shape {list(y.shape)}, expected {expected_shape(case)}"
    else:
        try:
            problem = _check_values(case, arrays, y)
        except Exception as e:  # noqa: BLE001 - a reference that fails is reported, not fatal
            problem = f"reference failed: {type(e).__name__}: {e}"
    return {"outcome": "ran", "shape": list(y.shape), "problem": problem}


def _check_values(case: dict, arrays: dict, y: np.ndarray) -> str | None:
    """None when y matches the numpy reference (and onnxruntime's DeformConv when asked)."""
    ref = _reference(case, arrays)
    # the same sum over |terms| (offsets unchanged: they choose the terms)
    absref = _reference(case, {k: v if k == "offset" else np.abs(v) for k, v in arrays.items()})
    problem = _compare(y, ref, absref, "vs numpy reference")
    finite = all(np.isfinite(v).all() for v in arrays.values())
    if problem is None and case["op"] == "deform" and case["ort_check"] and finite and y.size:
        y_ort = _ort_deform(case, arrays).astype(np.float64)  # an independent implementation
        problem = (_compare(y_ort, ref, absref, "onnxruntime DeformConv vs the numpy reference")
                   or _compare(y, y_ort, absref, "vs onnxruntime DeformConv"))
    return problem


def worker_main(lib: str) -> None:
    sys.path.insert(0, str(HERE))
    for line in sys.stdin:
        case = json.loads(line)
        result = run_case(case, lib)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


# =============================================================================================
# Classification and the pool


def _clear_message(message: str, op: str, found: list[set[str]]) -> bool:
    """One line, from edgeconv (not an onnxruntime-internal error), naming a culprit the validator
    also found (or the scratch limit)."""
    text = message.split("Status Message: ")[-1].strip()
    prefix = f"edgeconv.{OPS[op]}: "
    if prefix not in text or "\n" in text:
        return False
    text = text[text.index(prefix):]
    return any(any(word in text for word in d) for d in found)


def classify(case: dict, result: dict | None, stderr: str) -> tuple[str, str]:
    if any(m in stderr for m in SANITIZER_MARKERS):
        return "sanitizer", stderr[-1500:]
    if result is None:
        return "crash", stderr[-1500:]
    if result.get("hang"):
        return "hang", ""
    if result["outcome"] == "fuzzer error":
        return "fuzzer error", result["message"]
    found = defects(case)
    if result["outcome"] == "error":
        if not found and case.get("scratch_limit") and _clear_message(result["message"], case["op"], [{"edgeconv.max_memory_bytes"}]):
            return "over limit", ""
        if not found:
            return "false rejection", result["message"]
        if _clear_message(result["message"], case["op"], found):
            return "rejected", ""
        return "unclear error", f"{result['message']} (validator: {found})"
    if found:
        return "missing rejection", f"validator: {found}, output shape {result['shape']}"
    if result["problem"]:
        return "wrong result", result["problem"]
    return "ok", ""


class Worker:
    def __init__(self, lib: str, timeout: float):
        self.lib, self.timeout = lib, timeout
        self.proc = None
        self.err = None

    def _start(self):
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", "--lib", self.lib], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err, text=True, bufsize=1, cwd=HERE)

    def _stderr(self, since: int) -> str:
        self.err.seek(since)
        return self.err.read()

    def run(self, case: dict) -> tuple[dict | None, str]:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.err.seek(0, os.SEEK_END)
        mark = self.err.tell()
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        line = self.proc.stdout.readline() if ready else None
        if not ready:
            self.stop()
            return {"hang": True}, ""
        if not line:  # died
            self.proc.wait()
            err = self._stderr(mark) + f"\n(worker exit status {self.proc.returncode})"
            self.proc = None
            return None, err
        return json.loads(line), self._stderr(mark)

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def campaign(n: int, seed: int = 0, workers: int = 2, timeout: float = 60.0, lib: str | None = None,
             progress: bool = False) -> tuple[Counter, list[dict]]:
    """Runs cases 0..n-1 of `seed`; returns counts per (expected validity, category) and the bad cases."""
    lib = _library(lib)
    todo: queue.Queue = queue.Queue()
    for i in range(n):
        todo.put(i)
    counts: Counter = Counter()
    bad: list[dict] = []
    lock = threading.Lock()
    t0 = time.time()

    errors: list[BaseException] = []

    def drive():
        w = Worker(lib, timeout)
        try:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                case = make_case(seed, i)
                result, err = w.run(case)
                cat, detail = classify(case, result, err)
                with lock:
                    counts["invalid" if defects(case) else "valid", cat] += 1
                    if cat in BAD:
                        bad.append({"case": i, "category": cat, "detail": detail})
                    done = sum(counts.values())
                    if progress and done % 500 == 0:
                        print(f"  {done}/{n} cases, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        except BaseException as e:  # a bug of the fuzzer itself: re-raised by campaign()
            errors.append(e)
        finally:
            w.stop()

    threads = [threading.Thread(target=drive) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return counts, sorted(bad, key=lambda b: b["case"])


def _library(lib: str | None) -> str:
    if lib is not None:
        return lib
    from edgeconv._library import get_library_path  # EDGECONV_ORT_LIBRARY or the installed one

    return get_library_path()


def table(counts: Counter) -> str:
    rows = ["| category | valid models | invalid models | total |", "|---|---:|---:|---:|"]
    for cat in CATEGORIES:
        v, i = counts["valid", cat], counts["invalid", cat]
        rows.append(f"| {cat} | {v} | {i} | {v + i} |")
    tv = sum(c for (k, _), c in counts.items() if k == "valid")
    ti = sum(c for (k, _), c in counts.items() if k == "invalid")
    rows.append(f"| **total** | {tv} | {ti} | {tv + ti} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per case before it counts as a hang")
    p.add_argument("--lib", default=None, help="library path (default: EDGECONV_ORT_LIBRARY or the installed one)")
    p.add_argument("--case", type=int, default=None, help="run and show this one case")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(args.lib)
        return 0
    if args.case is not None:
        case = make_case(args.seed, args.case)
        print(json.dumps(case, indent=1))
        print("validator:", defects(case) or "valid")
        worker = Worker(_library(args.lib), args.timeout)
        result, err = worker.run(case)
        worker.stop()
        print("result:", result)
        print("verdict:", classify(case, result, err))
        return 0
    t0 = time.time()
    counts, bad = campaign(args.cases, args.seed, args.workers, args.timeout, args.lib, progress=True)
    print(f"fuzz: {args.cases} cases, seed {args.seed}, {time.time() - t0:.0f} s")
    print(table(counts))
    for b in bad[:20]:
        print(f"case {b['case']}: {b['category']}: {b['detail'][:500]}")
    if bad:
        print(f"re-run one: python {__file__} --seed {args.seed} --case {bad[0]['case']}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
