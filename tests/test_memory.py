"""Freed memory handed back to the operating system between a sequence's phases."""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from vsreid.engine import memory


def _resident_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux") or memory._malloc_trim() is None,
                    reason="needs Linux's /proc and glibc's malloc_trim")
def test_memory_freed_on_another_thread_is_handed_back():
    """256 MB of 64 KB blocks allocated and freed on a worker thread (one kept, so its heap cannot shrink from the
    top) stay resident until ``release_freed_memory``."""
    kept = []

    def work() -> None:
        blocks = [np.ones(8000) for _ in range(4000)]
        kept.append(blocks[-1])

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    before = _resident_mib()
    assert memory.release_freed_memory()
    assert before - _resident_mib() > 100
