"""Handing memory that was freed back to the operating system between the phases of a sequence.

glibc's allocator keeps freed blocks in per-thread arenas for reuse by the same arena: after online finetuning (its
autograd buffers were allocated on the finetuning threads) or the forward pass, hundreds of MB stay resident that the
next phase's threads do not reuse, and the process's peak grows by them (``bench/bench_memory.py``: 0.83 GiB resident
after finetuning, 0.56 GiB once released). ``malloc_trim(0)`` returns every arena's free pages; it takes milliseconds.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """libc's ``malloc_trim`` when the C library has one (glibc), else None."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """Return the allocator's free pages to the operating system (glibc); False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
