"""Process-wide settings of a training job that make small CPU steps cheaper.

:func:`keep_freed_memory`: glibc's ``malloc`` hands every block above 128 KiB back to the kernel
when it is freed (``mmap``/``munmap``) and trims the heap above 128 KiB of free space, so each
training step of a small network maps its activation buffers afresh and pays a page fault per
4 KiB page touched. Raising both thresholds keeps freed blocks in the heap for the next step: a
default-preset step on one thread took 8 % (pooled CNN) to 18 % (atrous) less time
(``benchmarks/bench_malloc.py``, fresh processes alternating). The process's resident memory then
stays at its peak instead of shrinking between steps, which a training job reaches in its first
step anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3
_DONE: list[bool] = []


def keep_freed_memory(mmap_threshold: int = 32 * 2**20, trim_threshold: int = 512 * 2**20) -> bool:
    """Raise glibc's mmap threshold (blocks below it come from the reusable heap; glibc caps it at
    32 MiB) and trim threshold (free heap kept); once per process. Returns whether they are set
    (False where the C library is not glibc, e.g. macOS or musl, which are left alone)."""
    if _DONE:
        return _DONE[0]
    ok = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            ok = bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(
                mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
    _DONE.append(ok)
    return ok
