"""Known-harmless output of the back ends, dropped at edgeconv's API boundary unless verbose.

TVM's C++ ``LOG(WARNING)`` writes straight to file descriptor 2 (``std::cerr`` in
``tvm/runtime/logging.h``; TVM 0.27 has no level setting for it, ``TVM_LOG_DEBUG`` only enables
``VLOG``), so neither ``warnings`` nor ``logging`` filters reach it: :func:`native_stderr_filtered`
captures fd 2 around a call and passes on every line that is not known to be harmless;
:func:`captured_fd2` is the capture itself (``deploy -q`` keeps compiler output for the report).

Verbose mode (``EDGECONV_VERBOSE=1``, set by the CLI's ``--verbose``) turns every filter off.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from typing import Iterator, Sequence

__all__ = ["VERBOSE_ENV", "verbose", "Captured", "captured_fd2", "native_stderr_filtered"]

VERBOSE_ENV = "EDGECONV_VERBOSE"


def verbose() -> bool:
    """True when ``EDGECONV_VERBOSE`` is set to anything but ``""``/``"0"``."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def _python_stderr_on_fd2() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # pytest's capsys, a StringIO, ...
        return False


class Captured:
    """What :func:`captured_fd2` captured: ``text``, set when the capture ends."""

    text = ""


@contextlib.contextmanager
def captured_fd2(python_stderr_passes: bool = True) -> Iterator[Captured]:
    """Redirect file descriptor 2 (C/C++ stderr, e.g. TVM's ``LOG(WARNING)``) to a temporary file
    while the body runs; the yielded :class:`Captured` holds what was written once it ends.
    ``python_stderr_passes``: Python's own ``sys.stderr`` (warnings, rich progress bars) keeps
    going to the real stderr meanwhile; else it is captured too."""
    out = Captured()
    sys.stderr.flush()
    saved = os.dup(2)
    swap = python_stderr_passes and _python_stderr_on_fd2()
    py_stderr = sys.stderr
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        if swap:  # Python-level writes bypass the capture
            sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(saved), "wb", buffering=0), write_through=True,
                                          encoding=py_stderr.encoding, errors="backslashreplace")
        try:
            yield out
        finally:
            if swap:
                sys.stderr.close()
                sys.stderr = py_stderr
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            out.text = captured.read().decode(errors="replace")


@contextlib.contextmanager
def native_stderr_filtered(harmless: Sequence[str]) -> Iterator[None]:
    """Capture fd 2 while the body runs (:func:`captured_fd2`), then write back every line matching
    none of the ``harmless`` regular expressions. A no-op in verbose mode."""
    if verbose() or not harmless:
        yield
        return
    patterns = [re.compile(p) for p in harmless]
    out = None
    try:
        with captured_fd2() as out:
            yield
    finally:  # fd 2 is restored by now, also when the body raised
        kept = [] if out is None else [
            line for line in out.text.splitlines(keepends=True) if not any(p.search(line) for p in patterns)]
        if kept:
            os.write(2, "".join(kept).encode())
