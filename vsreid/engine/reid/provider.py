"""The re-ID provider interface: candidate boxes with scores per frame and object."""
from __future__ import annotations

from typing import Protocol

import numpy as np


class ReIDProvider(Protocol):
    """Where lost objects may be: for frame t and object index i, a (K, 5) float array ``x1, y1, x2, y2, score``.

    Boxes are in pixels of the annotation resolution (480p), scores in [0, 1]. Row r must be the same candidate for
    every object of a frame (the recovery rule "another missing object scores this box higher" compares rows).
    ``prepare`` is called once per sequence before any ``candidates`` call.
    """

    def prepare(self, source, first_labels: np.ndarray, object_ids) -> None: ...

    def candidates(self, t: int, i: int) -> np.ndarray: ...

    def class_scores(self, i: int) -> np.ndarray | None:
        """Per-object classification scores (the original's ImageNet-DET vector), or None when unknown."""
        ...
