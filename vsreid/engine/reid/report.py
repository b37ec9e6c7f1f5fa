"""The per-sequence re-ID report (written as ``<output>/<seq>/reid.json``), read back by ``vsreid evaluate-reid``."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vsreid.data.crops import boxes_from_labels

from .provider import ReIDProvider
from .recovery import RecoveryLog, presence_from_boxes

TOP_CANDIDATES = 5


def draft_presence(draft: np.ndarray, object_ids: Sequence[int]) -> np.ndarray:
    """(T, N) bool presence of each object in the draft, (T, H, W) uint8 id maps; the rule of
    :func:`~.recovery.presence_from_boxes`."""
    return np.array([presence_from_boxes(boxes_from_labels(labels, object_ids, box_enlargement=0.0))
                     for labels in draft], bool).reshape(len(draft), len(object_ids))


def build_report(seq: str, draft: np.ndarray, provider: ReIDProvider, log: RecoveryLog,
                 object_ids: Sequence[int], score_threshold: float | None = None) -> dict:
    """The JSON-ready report of one sequence.

    Args:
        seq: sequence name.
        draft: (T, H, W) uint8 id maps of the forward pass alone, before re-ID (``SegmentationResult.draft``).
        provider: the prepared provider; candidates are read from its object pass (``set_pass("object")``).
        log: what :func:`~.recovery.recover` accepted.
        object_ids: the ids of object indices 0..N-1.
        score_threshold: the recovery's minimum candidate score, recorded for ``vsreid evaluate-reid``.

    Returns:
        ``{"sequence", "object_ids", "lost": [[t, id], ...] (frames 1..T-2 where the draft lost the object or recovery
        dropped its prediction as drifted), "drifted": [[t, id], ...], "restored": [[t, id], ...] (drifted ones put
        back because re-ID found nothing there),
        "candidates": {"t:id": top-5 [x1, y1, x2, y2, score] by score}, "recoveries": [{"frame", "object_id", "box",
        "score", "kind"}], "score_threshold"}``.
    """
    ids = [int(o) for o in object_ids]
    presence = draft_presence(draft, ids)
    for t, i in log.drifted:
        presence[t, i] = False
    if hasattr(provider, "set_pass"):
        provider.set_pass("object")
    lost, candidates = [], {}
    for t in range(1, len(presence) - 1):
        for i in np.flatnonzero(~presence[t]):
            lost.append([t, ids[i]])
            rows = np.asarray(provider.candidates(t, int(i)), np.float64).reshape(-1, 5)
            top = rows[np.argsort(-rows[:, 4], kind="stable")[:TOP_CANDIDATES]]
            candidates[f"{t}:{ids[i]}"] = [[round(float(v), 4) for v in row] for row in top]
    recoveries = [{"frame": r.frame, "object_id": ids[r.object_index], "box": [float(v) for v in r.box],
                   "score": float(r.score), "kind": r.kind} for r in log.recoveries]
    drifted = [[int(t), ids[i]] for t, i in sorted(log.drifted)]
    restored = [[int(t), ids[i]] for t, i in sorted(log.restored)]
    return {"sequence": seq, "object_ids": ids, "lost": lost, "drifted": drifted, "restored": restored,
            "candidates": candidates, "recoveries": recoveries, "score_threshold": score_threshold}
