"""Known-harmless output of the back ends, dropped at edgeconv's API boundary unless verbose.

TVM's C++ ``LOG(WARNING)`` writes straight to file descriptor 2 (``std::cerr`` in
``tvm/runtime/logging.h``; TVM 0.27 has no level setting for it, ``TVM_LOG_DEBUG`` only enables
``VLOG``), so neither ``warnings`` nor ``logging`` filters reach it: :func:`native_stderr_filtered`
captures fd 2 around a call and passes on every line that is not known to be harmless.

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

__all__ = ["VERBOSE_ENV", "verbose", "native_stderr_filtered"]

VERBOSE_ENV = "EDGECONV_VERBOSE"


def verbose() -> bool:
    """True when ``EDGECONV_VERBOSE`` is set to anything but ``""``/``"0"``."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def _python_stderr_on_fd2() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # pytest's capsys, a StringIO, ...
        return False


@contextlib.contextmanager
def native_stderr_filtered(harmless: Sequence[str]) -> Iterator[None]:
    """Capture fd 2 while the body runs, then write back every line matching none of the
    ``harmless`` regular expressions. Python's own ``sys.stderr`` (warnings, rich progress
    bars) keeps going to the real stderr meanwhile. A no-op in verbose mode."""
    if verbose() or not harmless:
        yield
        return
    patterns = [re.compile(p) for p in harmless]
    sys.stderr.flush()
    saved = os.dup(2)
    swap = _python_stderr_on_fd2()
    py_stderr = sys.stderr
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        if swap:  # Python-level writes bypass the capture
            sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(saved), "wb", buffering=0), write_through=True,
                                          encoding=py_stderr.encoding, errors="backslashreplace")
        try:
            yield
        finally:
            if swap:
                sys.stderr.close()
                sys.stderr = py_stderr
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(p.search(line) for p in patterns)]
            if kept:
                os.write(2, "".join(kept).encode())
