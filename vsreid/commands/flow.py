"""Compute the optical-flow cache (Flow/480p/<seq>/NNNNN.flo and .rflo) of a DAVIS root.

Existing files are kept (after checking their size), new ones are written atomically, so an interrupted run can simply
be restarted. --workers N computes N sequences in parallel processes.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

import cv2
from tqdm.auto import tqdm

from vsreid.commands import add_split_argument, positive_int
from vsreid.data.davis import DavisRoot
from vsreid.data.errors import DataError
from vsreid.data.flow import DEFAULT_PRESET, DISFlow, FillStats, FlowCache, make_flow_estimator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--davis-root", required=True, help="DAVIS root holding JPEGImages/480p/<seq>/")
    which = parser.add_mutually_exclusive_group()
    add_split_argument(which, "a split of ImageSets, e.g. val; default: every sequence")
    which.add_argument("--sequences", nargs="+", metavar="SEQ", help="these sequences only")
    parser.add_argument("--workers", type=positive_int, default=1, help="parallel processes, one sequence each")
    parser.add_argument("--method", default="dis", choices=("dis", "farneback"), help="flow estimator (default dis)")
    parser.add_argument("--preset", default=DEFAULT_PRESET, choices=tuple(DISFlow.PRESETS), help="DIS preset")
    parser.add_argument("--out", help="flow folder (default ROOT/Flow/480p)")


_progress: mp.Queue | None = None


def _init_worker(progress: mp.Queue, threads: int) -> None:
    global _progress
    _progress = progress
    cv2.setNumThreads(threads)


def _fill(root: str, out: str, method: str, preset: str, seq: str,
          tick: Callable[[], None] | None = None) -> FillStats | tuple[str, str]:
    """Fill one sequence; a DataError is returned as (path, problem) because it does not survive pickling."""
    try:
        cache = FlowCache(DavisRoot(root), make_flow_estimator(method, preset), flow_dir=out)
        return cache.fill(seq, progress=tick or (lambda: _progress.put(1)))
    except DataError as e:
        return e.path, e.problem


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    root = DavisRoot(args.davis_root)
    names = root.sequences(args.split, args.sequences)
    out = args.out or str(root.flow_dir)
    total = sum(len(root.frame_paths(seq)) - 1 for seq in names)
    job = (str(root.root), out, args.method, args.preset)
    with tqdm(total=total, desc="flow", unit="pair") as bar:
        if args.workers == 1 or len(names) == 1:
            results = [_fill(*job, seq, tick=bar.update) for seq in names]
        else:
            results = _run_parallel(job, names, min(args.workers, len(names)), bar, total)
    for result in results:
        if isinstance(result, tuple):
            raise DataError(*result)
    computed, skipped = sum(r.computed for r in results), sum(r.skipped for r in results)
    print(f"flow: {len(names)} sequences, {computed} pairs computed, {skipped} skipped, "
          f"{time.perf_counter() - start:.1f} s -> {out}")
    return 0


def _run_parallel(job: tuple, names: list[str], workers: int, bar: tqdm, total: int) -> list:
    """Fill the sequences in ``workers`` spawned processes, each with its share of OpenCV threads."""
    ctx = mp.get_context("spawn")
    progress = ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(progress, threads)) as pool:
        futures = [pool.submit(_fill, *job, seq) for seq in names]
        try:
            while not all(f.done() for f in futures):
                try:
                    bar.update(progress.get(timeout=0.1))
                except queue.Empty:
                    pass
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
        results = [f.result() for f in futures]
    try:
        while bar.n < total:  # ticks still in the queue's pipe
            bar.update(progress.get(timeout=1))
    except queue.Empty:
        pass  # a sequence failed before its last pair
    return results
