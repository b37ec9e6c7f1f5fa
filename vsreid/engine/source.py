"""Lazy access to one sequence's frames and flows, with small caches so long videos stream from disk."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from vsreid.data.davis import DavisRoot
from vsreid.data.labels import read_frame


class SequenceSource:
    """Frames (RGB uint8) and flows ((H, W, 2) float32 px) of one sequence, read on demand.

    ``flow_cache`` is a :class:`vsreid.data.flow.FlowCache`. With ``full_resolution`` the image crops are taken from
    ``JPEGImages/Full-Resolution`` when the root has it (boxes scaled as the original does).
    """

    def __init__(self, root: DavisRoot, seq: str, flow_cache, full_resolution: bool = False, cache_size: int = 6):
        self.root, self.seq, self.flow_cache = root, seq, flow_cache
        self.paths = root.frame_paths(seq)
        full_dir = root.full_resolution_dir(seq) if full_resolution else None
        self.crop_paths = [full_dir / p.name for p in self.paths] if full_dir else self.paths
        first = read_frame(self.paths[0])
        self.height, self.width = first.shape[:2]
        crop_first = read_frame(self.crop_paths[0]) if full_dir else first
        self.crop_scale = (crop_first.shape[1] / self.width, crop_first.shape[0] / self.height)  # (sx, sy)
        self._frame = lru_cache(cache_size)(lambda t: read_frame(self.paths[t]))
        self._crop_frame = lru_cache(cache_size)(lambda t: read_frame(self.crop_paths[t])) if full_dir else self._frame
        self._flow = lru_cache(2 * cache_size)(self._read_flow)

    @property
    def num_frames(self) -> int:
        return len(self.paths)

    def frame(self, t: int) -> np.ndarray:
        """(H, W, 3) RGB uint8 at the annotation resolution."""
        return self._frame(t)

    def crop_frame(self, t: int) -> np.ndarray:
        """The frame the image crops come from (Full-Resolution when enabled), RGB uint8."""
        return self._crop_frame(t)

    def _read_flow(self, t: int, forward: bool) -> np.ndarray:
        return self.flow_cache.forward(self.seq, t) if forward else self.flow_cache.backward(self.seq, t)

    def flow_to_source(self, t: int, step: int) -> np.ndarray:
        """Flow on frame t's grid toward the source frame t - step (``t.rflo`` forward, ``t.flo`` backward)."""
        return self._flow(t, step < 0)

    def flow_from_source(self, t: int, step: int) -> np.ndarray:
        """Flow on the source frame t - step's grid toward t (``(t-1).flo`` forward, ``(t+1).rflo`` backward)."""
        return self._flow(t - step, step > 0)
