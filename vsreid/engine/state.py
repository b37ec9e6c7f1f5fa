"""Per-sequence propagation state: compact per-object probabilities and the nearest-anchor bookkeeping."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vsreid.data.crops import object_box

NO_ANCHOR = -1000


@dataclass
class PropagationState:
    """Everything the propagator knows about one sequence.

    Attributes:
        probs: (T, N, H, W) float16, P(object i) per frame; P(not i) = 1 - P(i). Objects are indexed 0..N-1.
        anchors: (T, N) int, the frame whose (re)initialisation produced each prediction (``bbox_cnt`` of the
            original); ``NO_ANCHOR`` where nothing was predicted yet.
        object_ids: (N,) the object ids written to the output for indices 0..N-1.
        first_area: (N,) pixel area of each object in the first frame (the "lost" rule compares against it).
        templates: per object, the first-frame mask cropped with the 15%-enlarged box, (h, w) float32.
    """

    probs: np.ndarray
    anchors: np.ndarray
    object_ids: np.ndarray
    first_area: np.ndarray
    templates: list[np.ndarray] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return self.probs.shape[0]

    @property
    def num_objects(self) -> int:
        return self.probs.shape[1]

    def combined(self, t: int) -> np.ndarray:
        """(N+1, H, W) float32: channel 0 = prod_i P(not i), channel i = P(i), normalised over channels."""
        p = self.probs[t].astype(np.float32)
        out = np.empty((p.shape[0] + 1,) + p.shape[1:], np.float32)
        out[0] = np.prod(1.0 - p, axis=0)
        out[1:] = p
        out /= out.sum(axis=0, keepdims=True)
        return out

    def index_map(self, t: int) -> np.ndarray:
        """(H, W) uint8 index map of frame t, the argmax of the combined probability: 0 = background, i+1 = object
        index i (not the object id: see :meth:`labels`)."""
        return np.argmax(self.combined(t), axis=0).astype(np.uint8)

    def labels(self, t: int) -> np.ndarray:
        """(H, W) uint8 id map of frame t: the sequence's own object ids (``object_ids[i]`` where the index map says
        i+1), 0 = background."""
        lut = np.zeros(256, np.uint8)
        lut[1:self.num_objects + 1] = self.object_ids
        return lut[self.index_map(t)]

    def set_object(self, t: int, i: int, box, patch: np.ndarray) -> None:
        """P(i) of frame t becomes ``patch`` (h, w) inside ``box`` = (x1, y1, x2, y2) and 0 outside it."""
        x1, y1, x2, y2 = box
        self.probs[t, i] = 0
        self.probs[t, i, y1:y2, x1:x2] = patch


def initial_state(first_labels: np.ndarray, object_ids, num_frames: int, box_enlargement: float = 0.15
                  ) -> PropagationState:
    """State after reading the first frame's id map (H, W) uint8; frame 0 is every object's anchor."""
    object_ids = np.asarray(object_ids, np.uint8)
    h, w = first_labels.shape
    probs = np.zeros((num_frames, len(object_ids), h, w), np.float16)
    templates = []
    for i, oid in enumerate(object_ids):
        mask = first_labels == oid
        probs[0, i] = mask
        x1, y1, x2, y2 = object_box(mask, box_enlargement=box_enlargement)
        templates.append(mask[y1:y2, x1:x2].astype(np.float32))
    anchors = np.full((num_frames, len(object_ids)), NO_ANCHOR, np.int64)
    anchors[0] = 0
    first_area = np.array([(first_labels == oid).sum() for oid in object_ids], np.int64)
    return PropagationState(probs, anchors, object_ids, first_area, templates)
