"""Independent pieces of work run at once on the CPU's cores, each on its own share of torch's threads.

On the 2-core CPU, two single-threaded network passes at once do more work per second than one pass on two threads
(x1.2 for the Lite network forward and for a finetuning step, ``bench/bench_speed.py``): many of its ops (depthwise
and small convolutions, element-wise ops) are too small to keep two threads busy. :func:`run_split` is how the
predictor runs the two halves of the flip and finetuning the samples of a step.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")

_pools: dict[int, ThreadPoolExecutor] = {}
_lock = threading.Lock()


def split_ways(device: torch.device | str, tasks: int) -> int:
    """How many of ``tasks`` independent pieces to run at once on ``device``: one per torch thread on the CPU (at
    most ``tasks``), 1 elsewhere (a GPU runs one stream of kernels)."""
    if torch.device(device).type != "cpu":
        return 1
    return max(1, min(tasks, torch.get_num_threads()))


def run_split(tasks: Sequence[Callable[[], T]], ways: int) -> list[T]:
    """The results of ``tasks`` in order, run ``ways`` at a time on threads of their own, each with torch's threads
    shared out among them (``ways`` 1: one after the other on the calling thread). Grad mode and inference mode
    are the caller's in every task. Torch's thread count is the caller's again afterwards."""
    if ways <= 1 or len(tasks) <= 1:
        return [task() for task in tasks]
    threads = torch.get_num_threads()
    share = max(1, threads // ways)
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def run(task: Callable[[], T]) -> T:
        torch.set_num_threads(share)
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return task()

    with _lock:
        pool = _pools.setdefault(ways, ThreadPoolExecutor(ways, thread_name_prefix="vsreid-split"))
    try:
        return list(pool.map(run, tasks))
    finally:
        torch.set_num_threads(threads)
