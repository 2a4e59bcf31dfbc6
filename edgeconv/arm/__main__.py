"""``python -m edgeconv.arm [MODEL.onnx | dcnv2 | dynamic_conv | mixed]... [--no-tvm] [--no-ort]``:
verify models (ONNX files or the built-in samples) on aarch64 under qemu and print the tables.
(The user-facing command is ``edgeconv verify-arm``; this is a small developer entry point.)"""

from __future__ import annotations

import argparse
import sys

from .models import SAMPLE_MODELS
from .toolchain import ArmToolError
from .verify import format_table, verify_arm


def _main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeconv.arm", description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", default=list(SAMPLE_MODELS),
                   help=f"ONNX files or sample names ({', '.join(SAMPLE_MODELS)}); default: all samples")
    p.add_argument("--no-tvm", action="store_true")
    p.add_argument("--no-ort", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--commands", action="store_true", help="also print the commands that were run")
    a = p.parse_args(argv)
    ok = True
    try:
        for m in a.models:
            model = SAMPLE_MODELS[m]() if m in SAMPLE_MODELS else m
            res = verify_arm(model, tvm=not a.no_tvm, ort=not a.no_ort, threads=a.threads, repeat=a.repeat)
            print(format_table(res, commands=a.commands), flush=True)
            ok = ok and res.ok
    except ArmToolError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(_main())
