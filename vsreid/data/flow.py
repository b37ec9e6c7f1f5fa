"""Optical flow: Middlebury ``.flo`` files, flow estimators (OpenCV DIS, Farneback) and the per-sequence flow cache.

A flow is an (H, W, 2) float32 array of (dx, dy) pixel displacements on the grid of the frame it starts from: pixel p
of frame a moves to ``p + flow[p]`` in frame b. The cache keeps the original VS-ReID layout::

    FLOWROOT/<seq>/NNNNN.flo    forward flow t -> t+1 on frame t's grid, t = 0..T-2
    FLOWROOT/<seq>/NNNNN.rflo   backward flow t -> t-1 on frame t's grid, t = 1..T-1

with NNNNN the stem of frame t and FLOWROOT = ``ROOT/Flow/480p`` by default.
"""
from __future__ import annotations

import abc
import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from tqdm.auto import tqdm

from .atomic import atomic_write_bytes
from .davis import DavisRoot
from .errors import DataError
from .labels import read_frame

FLO_MAGIC = 202021.25
DEFAULT_PRESET = "medium"  #: the DIS preset used wherever none is given
_HEADER = np.dtype([("magic", "<f4"), ("width", "<i4"), ("height", "<i4")])
MAX_FLO_SIDE = 1 << 15


# ----------------------------------------------------------------------------------------------------- .flo files
def _read_header(path: Path) -> tuple[int, int]:
    """(H, W) from a ``.flo`` header, after checking the magic number and that the file size matches."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_HEADER.itemsize)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    if len(raw) < _HEADER.itemsize:
        raise DataError(path, f"truncated .flo file ({len(raw)} bytes, no complete header)")
    magic, width, height = np.frombuffer(raw, _HEADER)[0].tolist()
    if magic != FLO_MAGIC:
        raise DataError(path, f"not a .flo file (magic number {magic!r}, expected {FLO_MAGIC})")
    if not (0 < width <= MAX_FLO_SIDE and 0 < height <= MAX_FLO_SIDE):
        raise DataError(path, f"absurd flow size {width}x{height} in the header")
    size, expected = path.stat().st_size, _HEADER.itemsize + 8 * width * height
    if size < expected:
        raise DataError(path, f"truncated .flo file ({size} bytes, expected {expected} for {width}x{height})")
    if size > expected:
        raise DataError(path, f"{size - expected} bytes after the {width}x{height} flow data")
    return height, width


def read_flo(path: str | os.PathLike) -> np.ndarray:
    """Read a Middlebury ``.flo`` file as (H, W, 2) float32 (dx, dy) in pixels; DataError for a malformed file."""
    path = Path(path)
    height, width = _read_header(path)
    data = np.fromfile(path, "<f4", count=2 * height * width, offset=_HEADER.itemsize)
    return data.astype(np.float32, copy=False).reshape(height, width, 2)


def write_flo(path: str | os.PathLike, flow: np.ndarray) -> Path:
    """Write an (H, W, 2) flow as a Middlebury ``.flo`` file (float32, little-endian), atomically."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2 or flow.size == 0:
        raise ValueError(f"{path}: flow must be a non-empty (H, W, 2) array, got shape {flow.shape}")
    header = np.array([(FLO_MAGIC, flow.shape[1], flow.shape[0])], _HEADER)
    return atomic_write_bytes(path, header.tobytes() + np.ascontiguousarray(flow, "<f4").tobytes())


# ----------------------------------------------------------------------------------------------------- estimators
class FlowEstimator(abc.ABC):
    """Dense optical flow between two RGB (H, W, 3) uint8 frames."""

    @abc.abstractmethod
    def __call__(self, frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray:
        """Flow from a to b on a's grid: (H, W, 2) float32 (dx, dy) in pixels."""


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb


class DISFlow(FlowEstimator):
    """OpenCV's DIS optical flow on grayscale frames; ``preset`` trades speed for accuracy. Safe to call from several
    threads at once: each thread computes with an OpenCV DIS object of its own (one object holds its pyramids)."""

    PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}

    def __init__(self, preset: str = DEFAULT_PRESET):
        if preset not in self.PRESETS:
            raise ValueError(f"unknown DIS preset '{preset}', expected one of {', '.join(self.PRESETS)}")
        self.preset = preset
        self._local = threading.local()

    def __call__(self, frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray:
        dis = getattr(self._local, "dis", None)
        if dis is None:
            dis = self._local.dis = cv2.DISOpticalFlow_create(self.PRESETS[self.preset])
        return dis.calc(_gray(frame_a), _gray(frame_b), None)


class FarnebackFlow(FlowEstimator):
    """OpenCV's Farneback flow (pyramid 0.5 x 3 levels, window 15, 3 iterations); slower and less accurate than DIS."""

    def __call__(self, frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray:
        return cv2.calcOpticalFlowFarneback(_gray(frame_a), _gray(frame_b), None, 0.5, 3, 15, 3, 5, 1.2, 0)


FLOW_METHODS = ("dis", "farneback", "precomputed")


def make_flow_estimator(name: str = "dis", preset: str | None = None) -> FlowEstimator | None:
    """The estimator called ``name`` in configs: ``dis`` (with ``preset``, default medium), ``farneback`` (no presets;
    ``preset`` is ignored) or ``precomputed`` (None: flows are only read from the cache)."""
    if name == "dis":
        return DISFlow(preset or DEFAULT_PRESET)
    if name == "farneback":
        return FarnebackFlow()
    if name == "precomputed":
        return None
    raise ValueError(f"unknown flow method '{name}', expected one of {', '.join(FLOW_METHODS)}")


# ----------------------------------------------------------------------------------------------------- the cache
@dataclass(frozen=True)
class FillStats:
    """What :meth:`FlowCache.fill` did: frame pairs whose flows were computed or all already present, and seconds."""

    computed: int = 0
    skipped: int = 0
    seconds: float = 0.0


def cache_dir() -> Path:
    """The user's vsreid cache: ``$VSREID_CACHE``, else ``$XDG_CACHE_HOME/vsreid``, else ``~/.cache/vsreid``."""
    if os.environ.get("VSREID_CACHE"):
        return Path(os.environ["VSREID_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vsreid"


def default_flow_dir(root: DavisRoot) -> Path:
    """Where a root's flows live unless told: its ``Flow/480p`` when that exists (flows the user put there, the
    original layout), else a folder of the user cache named after the root (never inside the input data)."""
    if root.flow_dir.is_dir():
        return root.flow_dir
    where = hashlib.sha1(str(root.root.resolve()).encode()).hexdigest()[:10]
    return cache_dir() / "flow" / f"{root.root.resolve().name}-{where}"


class FlowCache:
    """Forward/backward flows of a DAVIS root's sequences, read from ``flow_dir`` (default: :func:`default_flow_dir`)
    or computed and stored there.

    ``estimator`` None means precomputed only: a missing file is a DataError. Files whose size differs from the
    sequence's frames are rejected with a DataError (the original crashed with an IndexError).
    """

    def __init__(self, root: DavisRoot, estimator: FlowEstimator | None,
                 flow_dir: str | os.PathLike | None = None):
        self.root = root
        self.estimator = estimator
        self.flow_dir = Path(flow_dir) if flow_dir is not None else default_flow_dir(root)
        self._frames: dict[str, list[Path]] = {}
        self._sizes: dict[str, tuple[int, int]] = {}

    def _frame_paths(self, seq: str) -> list[Path]:
        if seq not in self._frames:
            self._frames[seq] = self.root.frame_paths(seq)
        return self._frames[seq]

    def frame_size(self, seq: str) -> tuple[int, int]:
        """(H, W) of the first frame of ``seq``, decoded as :func:`read_frame` does (EXIF orientation applied)."""
        if seq not in self._sizes:
            self._sizes[seq] = read_frame(self._frame_paths(seq)[0]).shape[:2]
        return self._sizes[seq]

    def forward_path(self, seq: str, t: int) -> Path:
        """``<seq>/<stem of t>.flo``, the flow t -> t+1; t in 0..T-2."""
        return self._path(seq, t, forward=True)

    def backward_path(self, seq: str, t: int) -> Path:
        """``<seq>/<stem of t>.rflo``, the flow t -> t-1; t in 1..T-1."""
        return self._path(seq, t, forward=False)

    def _path(self, seq: str, t: int, forward: bool) -> Path:
        paths = self._frame_paths(seq)
        lo, hi = (0, len(paths) - 2) if forward else (1, len(paths) - 1)
        if not lo <= t <= hi:
            raise IndexError(f"{seq}: no {'forward' if forward else 'backward'} flow for frame {t} "
                             f"(valid frames {lo}..{hi})")
        return self.flow_dir / seq / (paths[t].stem + (".flo" if forward else ".rflo"))

    def paths(self, seq: str) -> list[Path]:
        """Every expected flow file of ``seq``: the T-1 ``.flo`` files, then the T-1 ``.rflo`` files."""
        n = len(self._frame_paths(seq))
        return [self.forward_path(seq, t) for t in range(n - 1)] + [self.backward_path(seq, t) for t in range(1, n)]

    def forward(self, seq: str, t: int) -> np.ndarray:
        """Flow t -> t+1 on frame t's grid, (H, W, 2) float32 px."""
        return self._get(seq, t, forward=True)

    def backward(self, seq: str, t: int) -> np.ndarray:
        """Flow t -> t-1 on frame t's grid, (H, W, 2) float32 px."""
        return self._get(seq, t, forward=False)

    def _get(self, seq: str, t: int, forward: bool) -> np.ndarray:
        path = self._path(seq, t, forward)
        if path.exists():
            flow = read_flo(path)
            self._check_size(seq, path, flow.shape[:2])
            return flow
        self._require_estimator(path)
        paths = self._frame_paths(seq)
        other = t + 1 if forward else t - 1
        flow = self._estimate(read_frame(paths[t]), read_frame(paths[other]), paths[t], paths[other])
        write_flo(path, flow)
        return flow

    def check_existing(self, seq: str) -> int:
        """Check the header and size of every flow file of ``seq`` already in the cache; returns how many exist."""
        existing = [p for p in self.paths(seq) if p.exists()]
        for path in existing:
            self.check(seq, path)
        return len(existing)

    def check(self, seq: str, path: Path) -> None:
        """Check a flow file's header and size against the frames of ``seq`` without reading the data."""
        self._check_size(seq, path, _read_header(path))

    def _check_size(self, seq: str, path: Path, size: tuple[int, int]) -> None:
        (height, width), (frame_h, frame_w) = size, self.frame_size(seq)
        if (height, width) != (frame_h, frame_w):
            raise DataError(path, f"flow is {width}x{height}, frames are {frame_w}x{frame_h}")

    def _require_estimator(self, path: Path) -> None:
        if self.estimator is None:
            raise DataError(path, "flow file missing and computing is disabled (precomputed flows only); "
                                  "compute it with `vsreid flow` or enable a flow method")

    def _estimate(self, frame_a: np.ndarray, frame_b: np.ndarray, path_a: Path, path_b: Path) -> np.ndarray:
        if frame_a.shape != frame_b.shape:
            raise DataError(path_b, f"frame size {frame_b.shape[1]}x{frame_b.shape[0]} differs from "
                                    f"{path_a.name}'s {frame_a.shape[1]}x{frame_a.shape[0]}")
        return self.estimator(frame_a, frame_b)

    def fill(self, seq: str, progress: bool | Callable[[], None] = True) -> FillStats:
        """Compute every missing flow file of ``seq`` (existing files are size-checked and kept); each frame is read
        at most once. ``progress``: True for a tqdm bar, or a function called once per frame pair."""
        start = time.perf_counter()
        paths = self._frame_paths(seq)
        pairs = [(t, self.forward_path(seq, t), self.backward_path(seq, t + 1)) for t in range(len(paths) - 1)]
        bar = tqdm(total=len(pairs), desc=seq, unit="pair", leave=False) if progress is True else None
        tick = bar.update if bar is not None else (progress or (lambda: None))
        computed, previous = 0, None  # previous: (t, frame t)
        try:
            for t, fwd, bwd in pairs:
                missing = []
                for path in (fwd, bwd):
                    if path.exists():
                        self.check(seq, path)
                    else:
                        missing.append(path)
                if missing:
                    self._require_estimator(missing[0])
                    a = previous[1] if previous and previous[0] == t else read_frame(paths[t])
                    b = read_frame(paths[t + 1])
                    previous = (t + 1, b)
                    if fwd in missing:
                        write_flo(fwd, self._estimate(a, b, paths[t], paths[t + 1]))
                    if bwd in missing:
                        write_flo(bwd, self._estimate(b, a, paths[t + 1], paths[t]))
                    computed += 1
                tick()
        finally:
            if bar is not None:
                bar.close()
        return FillStats(computed, len(pairs) - computed, time.perf_counter() - start)
