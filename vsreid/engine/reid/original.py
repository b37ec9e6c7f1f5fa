"""The original VS-ReID re-ID inputs: ``PersonSearch``, ``ObjectSearch`` and ``Class`` pickles of one DAVIS split.

``PersonSearch/480p/<split>.pkl`` and ``ObjectSearch/480p/<split>.pkl`` are lists indexed by a global frame counter that
runs over all the split's sequences concatenated in split order; element ``g`` is a list over objects (index = id - 1)
of (K, >=6) arrays whose columns 0-3 are x1, y1, x2, y2 (480p pixels) and column 5 the score. ``Class/480p/<split>.pkl``
maps a sequence to its per-object class-score vectors. All three are Python-2 pickles, read with latin-1 through an
unpickler that admits only NumPy and plain data (``vsreid.data.safe_pickle``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from vsreid.data.davis import DavisRoot
from vsreid.data.errors import DataError
from vsreid.data.safe_pickle import load_data_pickle

KINDS = ("person", "object")
KEEP_COLUMNS = [0, 1, 2, 3, 5]


class OriginalSearchResults:
    """A :class:`~vsreid.engine.reid.provider.ReIDProvider` reading the original's precomputed re-ID results.

    Args:
        person_pkl, object_pkl, class_pkl: paths of the three pickles of one split.
        sequences_in_split_order: the split's sequences in ``ImageSets`` order (the pickles' frame counter order).
        frame_counts: the number of frames of each of those sequences, or a function ``seq -> count``.

    ``set_pass("person" | "object")`` (called by :func:`~vsreid.engine.reid.recovery.recover`) chooses which rows
    ``candidates`` returns; the default is ``"object"``. Raises :class:`DataError` when a search pickle's length is not
    the split's total frame count (the original's IndexError, issue #6).
    """

    def __init__(self, person_pkl, object_pkl, class_pkl, sequences_in_split_order: Sequence[str],
                 frame_counts: Sequence[int] | Callable[[str], int]):
        self.sequences = list(sequences_in_split_order)
        counts = [frame_counts(s) for s in self.sequences] if callable(frame_counts) else list(frame_counts)
        if len(counts) != len(self.sequences):
            raise ValueError(f"{len(counts)} frame counts for {len(self.sequences)} sequences")
        self.frame_counts = dict(zip(self.sequences, counts))
        self.offsets = dict(zip(self.sequences, np.cumsum([0] + counts[:-1]).tolist()))
        total = int(sum(counts))
        self.paths = {"person": Path(person_pkl), "object": Path(object_pkl), "class": Path(class_pkl)}
        self.search = {}
        for kind in KINDS:
            rows = load_data_pickle(self.paths[kind])
            if not isinstance(rows, (list, tuple)):
                raise DataError(self.paths[kind], f"expected a list over frames, got {type(rows).__name__}")
            if len(rows) != total:
                raise DataError(self.paths[kind], f"{len(rows)} frames, but the split's {len(self.sequences)} "
                                                  f"sequences have {total} frames in total")
            self.search[kind] = rows
        self.classes = load_data_pickle(self.paths["class"])
        if not isinstance(self.classes, dict):
            raise DataError(self.paths["class"], f"expected a dict video -> class scores, "
                                                 f"got {type(self.classes).__name__}")
        self.kind = "object"
        self.seq: str | None = None
        self.columns: list[int] = []

    @classmethod
    def from_davis_root(cls, root: DavisRoot, split: str) -> "OriginalSearchResults":
        """The pickles ``{PersonSearch,ObjectSearch,Class}/<resolution>/<split>.pkl`` under a DAVIS root; sequences and
        frame counts from ``ImageSets`` and ``JPEGImages`` (every split sequence must be present)."""
        names = root.read_split(split)
        pkl = [root.root / d / root.resolution / f"{split}.pkl" for d in ("PersonSearch", "ObjectSearch", "Class")]
        return cls(*pkl, names, lambda seq: len(root.frame_paths(seq)))

    # ------------------------------------------------------------------ ReIDProvider
    def prepare(self, source, first_labels: np.ndarray, object_ids) -> None:
        """Select ``source.seq``; object index i reads the pickles' column ``object_ids[i] - 1``."""
        seq = source.seq
        if seq not in self.offsets:
            raise DataError(self.paths["object"], f"sequence '{seq}' is not in the split the pickles were made for")
        if self.frame_counts[seq] != source.num_frames:
            raise DataError(self.paths["object"], f"'{seq}' has {source.num_frames} frames, the split's frame count "
                                                  f"for it is {self.frame_counts[seq]}")
        self.seq = seq
        self.columns = [int(oid) - 1 for oid in object_ids]

    def set_pass(self, kind: str) -> None:
        """``"person"``: PersonSearch rows; ``"object"``: ObjectSearch rows."""
        if kind not in KINDS:
            raise ValueError(f"pass must be one of {KINDS}, got {kind!r}")
        self.kind = kind

    def candidates(self, t: int, i: int) -> np.ndarray:
        """(K, 5) float64 ``x1, y1, x2, y2, score`` of frame t for object index i, from the current pass's pickle."""
        path = self.paths[self.kind]
        per_object = self.search[self.kind][self.offsets[self.seq] + t]
        column = self.columns[i]
        if column >= len(per_object):
            raise DataError(path, f"'{self.seq}' frame {t}: results for {len(per_object)} objects, "
                                  f"object id {column + 1} has none")
        rows = np.asarray(per_object[column], np.float64)
        if rows.size == 0:
            return np.zeros((0, 5))
        if rows.ndim != 2 or rows.shape[1] < 6:
            raise DataError(path, f"'{self.seq}' frame {t} object id {column + 1}: array of shape {rows.shape}, "
                                  f"expected (K, >=6)")
        return rows[:, KEEP_COLUMNS]

    def class_scores(self, i: int) -> np.ndarray | None:
        """Object index i's class-score vector for the current sequence ("person" = index 123)."""
        if self.seq not in self.classes:
            raise DataError(self.paths["class"], f"no class scores for sequence '{self.seq}'")
        per_object = self.classes[self.seq]
        column = self.columns[i]
        if column >= len(per_object):
            raise DataError(self.paths["class"], f"'{self.seq}': class scores for {len(per_object)} objects, "
                                                 f"object id {column + 1} has none")
        return np.asarray(per_object[column], np.float64).ravel()
