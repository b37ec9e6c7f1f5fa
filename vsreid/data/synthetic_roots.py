"""Whole synthetic DAVIS roots: sequences from the shape generator (:mod:`.synthetic`) or composites of real objects
(:mod:`.composite`), listed in a split file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .atomic import atomic_write_bytes
from .composite import random_composite
from .synthetic import SyntheticSequence, generate_sequence, write_sequence


def write_synthetic_root(root: str | os.PathLike, num_sequences: int, seed: int = 0, split: str = "val",
                         composite_from: str | os.PathLike | None = None,
                         progress: Callable[[SyntheticSequence], None] | None = None, **kw) -> list[str]:
    """Write ``num_sequences`` sequences (sequence i from seed ``seed + i``) and add them to
    ``ImageSets/2017/<split>.txt``; return their names (``synth-<seed>`` or ``composite-<seed>``).

    ``kw`` goes to :func:`generate_sequence`, or with ``composite_from`` (a DAVIS root whose objects and backgrounds
    are drawn by seed) to :func:`vsreid.data.composite.random_composite`. ``progress(seq)`` is called after each one.
    """
    names = []
    for s in range(seed, seed + num_sequences):
        if composite_from is None:
            seq = generate_sequence(f"synth-{s}", s, **kw)
        else:
            seq = random_composite(f"composite-{s}", composite_from, s, **kw)
        write_sequence(root, seq)
        names.append(seq.name)
        if progress:
            progress(seq)
    split_file = Path(root) / "ImageSets" / "2017" / f"{split}.txt"
    listed = split_file.read_text().split() if split_file.is_file() else []
    atomic_write_bytes(split_file, "".join(f"{n}\n" for n in listed + [n for n in names if n not in listed]).encode())
    return names
