"""``python -m edgeconv.bench <name> [options]``: dispatch to ``edgeconv.bench.<name>.main``."""

from __future__ import annotations

import importlib
import sys

# benchmark name -> module with a main(argv) function
BENCHMARKS = {
    "kernels": "edgeconv.bench.kernels",
    "tvm": "edgeconv.bench.tvm",
    "model": "edgeconv.bench.model",
    "models": "edgeconv.bench.models",
    "optimize": "edgeconv.bench.optimize",
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHMARKS:
        print(f"usage: python -m edgeconv.bench {{{','.join(BENCHMARKS)}}} [options]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(BENCHMARKS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
