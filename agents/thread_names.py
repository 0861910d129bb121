"""The OS name of a worker thread (``/proc/<pid>/task/<tid>/comm``), so ``top -H`` and the benchmark tell them apart.

Python 3.11 names its threads only for itself; the kernel sees every one as
``python``. librdkafka names its own (``rdk:main``, ``rdk:broker1``, …).
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

_PR_SET_NAME = 15
_MAX = 15  # the kernel keeps 15 bytes and a NUL


def name_this_thread(name: str) -> None:
    """Set the calling thread's OS name (Linux; elsewhere, or if libc refuses, nothing happens)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, name.encode()[:_MAX], 0, 0, 0)


__all__ = ["name_this_thread"]
