"""Box arithmetic of the original VS-ReID code. Boxes are (x1, y1, x2, y2) ints in frame pixels."""
from __future__ import annotations

from typing import Sequence


def enclosing_iou(a: Sequence[int], b: Sequence[int]) -> float:
    """The original ``IoU``: intersection over the area of the enclosing box (not the union).

    Kept as written in the original, including its ``+1`` terms, because the re-ID occlusion rule (0.3) and the
    neighbour rule (> 1e-6) were tuned with it.
    """
    inter = (max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
             * max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1))
    enclosing = (max(a[3], b[3]) - min(a[1], b[1] + 1)) * (max(a[2], b[2]) - min(a[0], b[0] + 1))
    return float(inter) / float(enclosing)
