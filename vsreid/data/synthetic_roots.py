"""Whole synthetic DAVIS roots: sequences from the shape generator (:mod:`.synthetic`) or composites of real objects
(:mod:`.composite`), listed in a split file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from .atomic import atomic_write_bytes
from .composite import random_composite
from .synthetic import SyntheticSequence, generate_sequence, write_sequence


Count = int | tuple[int, int]


def draw_count(value: Count, seed: int, salt: int) -> int:
    """``value`` itself, or for a range (lo, hi) an integer in [lo, hi] drawn from ``seed`` (``salt`` tells the
    settings apart); the range draw uses its own generator, so fixed settings give the same sequences as before."""
    if isinstance(value, int):
        return value
    lo, hi = value
    return int(np.random.default_rng([seed, salt]).integers(lo, hi + 1))


def write_synthetic_root(root: str | os.PathLike, num_sequences: int, seed: int = 0, split: str = "val",
                         composite_from: str | os.PathLike | None = None,
                         progress: Callable[[SyntheticSequence], None] | None = None, num_frames: Count = 40,
                         num_objects: Count = 3, **kw) -> list[str]:
    """Write ``num_sequences`` sequences (sequence i from seed ``seed + i``) and add them to
    ``ImageSets/2017/<split>.txt``; return their names (``synth-<seed>`` or ``composite-<seed>``).

    ``num_frames`` and ``num_objects`` are a number or a range (lo, hi) drawn per sequence from its seed. ``kw`` goes
    to :func:`generate_sequence`, or with ``composite_from`` (a DAVIS root whose objects and backgrounds are drawn by
    seed; ``source_split`` and ``part`` restrict them) to :func:`vsreid.data.composite.random_composite`.
    ``progress(seq)`` is called after each one.
    """
    names = []
    for s in range(seed, seed + num_sequences):
        counts = {"num_frames": draw_count(num_frames, s, 1), "num_objects": draw_count(num_objects, s, 2)}
        if composite_from is None:
            seq = generate_sequence(f"synth-{s}", s, **counts, **kw)
        else:
            seq = random_composite(f"composite-{s}", composite_from, s, **counts, **kw)
        write_sequence(root, seq)
        names.append(seq.name)
        if progress:
            progress(seq)
    split_file = Path(root) / "ImageSets" / "2017" / f"{split}.txt"
    listed = split_file.read_text().split() if split_file.is_file() else []
    atomic_write_bytes(split_file, "".join(f"{n}\n" for n in listed + [n for n in names if n not in listed]).encode())
    return names
