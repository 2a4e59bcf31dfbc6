"""What the ``edgeconv`` CLI and the benchmarks (``edgeconv.bench``) share: one-line usage
errors (exit code 2), argument types for shapes, counts and RPC addresses, rich tables."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Dict, Sequence, Tuple

__all__ = ["PROG", "TARGETS", "CLIError", "Parser", "parse_shape", "shape_arg", "checked", "positive_int",
           "positive_float", "non_negative_int", "parse_rpc", "rpc_arg", "console", "print_table", "fmt_count"]

PROG = "edgeconv"
#: TVM target names: ``edgeconv.exporters.tvm.targets.TARGET_NAMES`` (not imported here: that
#: package imports TVM; tests/test_cli.py checks that the two agree)
TARGETS = ("x86", "x86-avx2", "x86-avx512", "arm64", "arm64-dotprod")


class CLIError(Exception):
    """A user error: printed as ``edgeconv: error: <message>``, exit code 2."""


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line ``edgeconv: error: ...`` with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        hint = f" (see '{self.prog} --help')"
        sys.stderr.write(f"{PROG}: error: {message}{hint}\n")
        sys.exit(2)


# ------------------------------------------------------------------------------------------
# argument helpers
# ------------------------------------------------------------------------------------------


def parse_shape(text: str) -> Tuple[int, ...]:
    """``"1,3,224,224"`` (or ``1x3x224x224``) -> ``(1, 3, 224, 224)``; 4 positive ints (NCHW)."""
    raw = str(text).strip().replace("x", ",").replace("X", ",")
    parts = [p.strip() for p in raw.split(",")]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise CLIError(f"malformed input shape {text!r}: expected 4 comma-separated positive ints like 1,3,224,224") from None
    if len(shape) != 4 or min(shape) <= 0:
        raise CLIError(f"malformed input shape {text!r}: expected 4 comma-separated positive ints like 1,3,224,224 (NCHW)")
    return shape


def shape_arg(text: str) -> Tuple[int, ...]:
    try:
        return parse_shape(text)
    except CLIError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def checked(convert: Callable[[str], Any], accept: Callable[[Any], bool], expected: str):
    """An argparse ``type``: ``convert`` the text, then require ``accept(value)``."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = checked(int, lambda v: v > 0, "a positive int")
positive_float = checked(float, lambda v: 0 < v < float("inf"), "a positive number")  # NaN fails
non_negative_int = checked(int, lambda v: v >= 0, "an int >= 0")
thread_counts = checked(lambda t: tuple(int(p) for p in t.split(",")),
                        lambda v: bool(v) and min(v) > 0 and len(set(v)) == len(v),
                        "comma-separated distinct positive thread counts like 1,2")


def parse_rpc(text: str) -> Dict[str, Any]:
    """``HOST:PORT`` (RPC server) or ``HOST:PORT/KEY`` (RPC tracker + device key)."""
    key = None
    spec = text
    if "/" in spec:
        spec, key = spec.split("/", 1)
        if not key:
            raise CLIError(f"malformed --rpc {text!r}: empty tracker key after '/'")
    host, sep, port = spec.rpartition(":")
    if not sep or not host:
        raise CLIError(f"malformed --rpc {text!r}: expected HOST:PORT or HOST:PORT/KEY")
    try:
        port_num = int(port)
    except ValueError:
        raise CLIError(f"malformed --rpc {text!r}: port {port!r} is not an int") from None
    if not 0 < port_num < 65536:
        raise CLIError(f"malformed --rpc {text!r}: port out of range")
    return {"host": host, "port": port_num, "key": key}


def rpc_arg(text: str) -> Dict[str, Any]:
    try:
        return parse_rpc(text)
    except CLIError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def console(quiet: bool = False, stderr: bool = False):
    """A rich console; when not writing to a terminal, wide enough that tables do not wrap."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 220
    return Console(quiet=quiet, highlight=False, soft_wrap=True, width=width, stderr=stderr)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False)
    for i, h in enumerate(header):
        table.add_column(h, justify="right" if i in right else "left", overflow="fold")
    for r in rows:
        table.add_row(*[str(c) for c in r])
    console().print(table)


def fmt_count(n: float) -> str:
    n = float(n)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{int(n)}"
