"""The Python API, in the spirit of SAM 2's video predictor (no Lightning)::

    from vsreid import Segmenter
    seg = Segmenter.from_pretrained()                  # the shipped model with the settings it was measured with
    state = seg.init_state("clip.mp4")                 # or a frame folder, or a (T, H, W, 3) uint8 RGB array
    seg.add_mask(state, frame=0, mask=id_map)          # (H, W) uint8 ids (0 background, 255 void); several objects
    for t, ids in seg.propagate(state, finetune_steps=30, reid=True, progress=True):
        ...                                            # (H, W) uint8 id map of frame t

What is streamed: the forward pass yields each frame as soon as it is segmented (frame order; finetuning, when on,
runs before the first frame). Re-ID needs the whole video (it searches every frame for lost objects), so with
``reid=True`` the corrected frames follow the forward pass: every frame is yielded a second time, in order, with its
final ids; the last value yielded for a frame is its result. ``state.result`` holds both passes at the end.

Frames are given to the method as a DAVIS-layout sequence in a work folder (``work_dir``, default a temporary
folder removed by ``state.close()``): frame files are linked, arrays and decoded video frames written as lossless
PNGs, so every path decodes the same pixels as ``vsreid predict`` on the same frames. Flow is cached in
``flow_dir`` (default: in the work folder).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from vsreid.data.davis import FRAME_EXTENSIONS, DavisRoot
from vsreid.data.errors import DataError
from vsreid.data.flow import DEFAULT_PRESET, FlowCache, make_flow_estimator
from vsreid.data.labels import VOID, read_frame, read_labels, write_frame, write_labels
from vsreid.data.video import read_video, scaled_size
from vsreid.models.checkpoints import load_network, read_predict_settings
from vsreid.resources import weights_path

from .propagator import PropagationConfig
from .reid import AppearanceReID, RecoveryConfig
from .segmenter import SegmentationResult, SegmentSettings, segment_frames
from .source import SequenceSource

SEQUENCE = "video"


@dataclass
class VideoState:
    """One video being segmented: the work folder holding it as a DAVIS sequence, its frame count and size, the
    mask (frame index, id map) once added, and the result once propagated."""

    root: DavisRoot
    num_frames: int
    height: int
    width: int
    flow_dir: Path
    stems: list[str]
    temporary: tempfile.TemporaryDirectory | None = None
    mask_frame: int | None = None
    mask: np.ndarray | None = None
    result: SegmentationResult | None = field(default=None, repr=False)

    def close(self) -> None:
        """Delete the temporary work folder (if the state made one)."""
        if self.temporary is not None:
            self.temporary.cleanup()
            self.temporary = None


class Segmenter:
    """The VS-ReID method on any video: ``net`` (an MP2S), ``settings`` (how one sequence is segmented),
    ``flow_preset`` (DIS), ``reid`` (whether :meth:`propagate` applies re-ID by default)."""

    def __init__(self, net: nn.Module, settings: SegmentSettings | None = None, flow_preset: str = DEFAULT_PRESET,
                 reid: bool = True):
        self.net = net.eval()
        self.settings = settings or SegmentSettings()
        self.flow_preset = flow_preset
        self.reid = reid

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "lite0", device: str | torch.device = "cpu"
                        ) -> "Segmenter":
        """A segmenter with shipped weights (``"lite0"``) or a weights file (``vsreid export-model``), with the
        predict settings recorded in the file (the ones its numbers were measured with) or the defaults."""
        path = weights_path(name_or_path)
        recorded = read_predict_settings(path)
        net = load_network(path, bands=recorded).to(device)
        return cls(net, settings_from_record(recorded) if recorded else None,
                   flow_preset=(recorded or {}).get("flow_preset", DEFAULT_PRESET), reid=(recorded or {}).get("reid", True))

    def init_state(self, video: str | os.PathLike | np.ndarray, work_dir: str | os.PathLike | None = None,
                   flow_dir: str | os.PathLike | None = None, height: int | None = None) -> VideoState:
        """Prepare ``video``: a video file (anything OpenCV/FFmpeg decodes), a folder of frame images (sorted by
        name) or a (T, H, W, 3) uint8 RGB array. ``height`` resizes taller frames to that many rows (aspect kept,
        width even), e.g. 480 as the model was trained; None keeps them as they are."""
        temporary = tempfile.TemporaryDirectory(prefix="vsreid-") if work_dir is None else None
        root = Path(temporary.name if temporary else work_dir)
        frames_dir = root / "JPEGImages" / "480p" / SEQUENCE
        if frames_dir.exists():
            shutil.rmtree(frames_dir)
        frames_dir.mkdir(parents=True)
        if isinstance(video, np.ndarray):
            _check_array(video)
            _write_frames(iter(video), frames_dir, height)
        elif Path(video).is_dir():
            if height is None:
                _link_frames(Path(video), frames_dir)
            else:
                _write_frames((read_frame(p) for p in frame_files(Path(video))), frames_dir, height)
        elif Path(video).is_file():
            _write_frames(read_video(video), frames_dir, height)
        else:
            raise DataError(video, "not found (expected a video file, a folder of frames or an array)")
        davis = DavisRoot(root)
        stems = davis.frame_stems(SEQUENCE)
        height, width = davis.read_frame(SEQUENCE, 0).shape[:2]
        flows = Path(flow_dir) if flow_dir is not None else root / "Flow" / "480p"
        return VideoState(davis, len(stems), height, width, flows, stems, temporary)

    def add_mask(self, state: VideoState, frame: int, mask: np.ndarray | str | os.PathLike) -> None:
        """The objects to segment: an (H, W) uint8 id map of frame ``frame`` (or a palette/grayscale PNG's path).
        Frames before ``frame`` are not segmented."""
        labels = read_labels(mask) if not isinstance(mask, np.ndarray) else np.asarray(mask)
        if labels.ndim == 2 and labels.dtype == np.uint8 and labels.shape != (state.height, state.width) and \
                abs(labels.shape[1] / labels.shape[0] - state.width / state.height) < 0.01:
            labels = cv2.resize(labels, (state.width, state.height), interpolation=cv2.INTER_NEAREST)  # resized video
        if labels.shape != (state.height, state.width) or labels.dtype != np.uint8:
            raise ValueError(f"mask must be a uint8 ({state.height}, {state.width}) id map (or one of the same aspect "
                             f"ratio), got {labels.dtype} {labels.shape}")
        if not ((labels > 0) & (labels != VOID)).any():
            raise ValueError("mask is empty (no object to segment)")
        if not 0 <= frame < state.num_frames:
            raise ValueError(f"frame {frame} outside 0..{state.num_frames - 1}")
        state.mask_frame, state.mask = frame, labels

    def propagate(self, state: VideoState, finetune_steps: int | None = None, reid: bool | None = None,
                  progress: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """Segment the video from its mask: yields ``(t, ids)`` (see the module docstring for what is streamed)."""
        source = self._source(state)
        settings = self.settings if finetune_steps is None else replace(self.settings, finetune_steps=finetune_steps)
        ids = tuple(int(i) for i in np.unique(state.mask) if i not in (0, VOID))
        provider = AppearanceReID(device=next(self.net.parameters()).device) if (
            self.reid if reid is None else reid) else None
        frames = segment_frames(self.net, source, state.mask, ids, settings, provider, progress)
        while True:
            try:
                _, t, labels = next(frames)
            except StopIteration as done:
                state.result = done.value
                return
            yield state.mask_frame + t, labels


    def compute_flow(self, state: VideoState, progress: bool = False) -> None:
        """Compute the optical flow :meth:`propagate` needs now (otherwise the forward pass computes it as it
        goes), with a progress bar on request."""
        source = self._source(state)
        source.flow_cache.fill(source.seq, progress=progress)

    def _source(self, state: VideoState) -> SequenceSource:
        """The sequence to segment (the frames from the mask's on), its first frame annotated with the mask."""
        if state.mask is None:
            raise ValueError("add_mask() first: the objects to segment are given by a mask")
        root, seq = _trimmed(state)
        write_labels(root.annotation_path(seq, root.frame_stems(seq)[0]), state.mask)
        cache = FlowCache(root, make_flow_estimator("dis", preset=self.flow_preset), flow_dir=state.flow_dir)
        return SequenceSource(root, seq, cache)


def settings_from_record(record: dict) -> SegmentSettings:
    """:class:`SegmentSettings` from the predict settings recorded in a weights file (see
    :func:`vsreid.models.checkpoints.read_predict_settings`)."""
    propagation = PropagationConfig(**{k: record[k] for k in ("crop_size", "box_enlargement", "lost_ratio",
                                                              "max_flow_error", "refine_iterations") if k in record})
    recovery = RecoveryConfig(**{k.removeprefix("reid_"): record[k] for k in (
        "reid_score_threshold", "reid_occlusion_threshold", "reid_max_rounds") if k in record})
    kept = {k: record[k] for k in ("flip", "finetune_steps", "finetune_lr", "finetune_crop_size", "lovasz_weight")
            if k in record}
    if "predict_batch_size" in record:
        kept["batch_size"] = record["predict_batch_size"]
    return SegmentSettings(propagation, recovery=recovery, **kept)


def _check_array(video: np.ndarray) -> None:
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8 or len(video) == 0:
        raise ValueError(f"expected a (T, H, W, 3) uint8 RGB array, got {video.dtype} {video.shape}")


def _write_frames(frames: Iterator[np.ndarray], folder: Path, height: int | None) -> None:
    """Frames as lossless PNGs ``00000.png ...``, resized to ``height`` rows when they are taller."""
    for t, frame in enumerate(frames):
        if height is not None and frame.shape[0] > height:
            h, w = scaled_size(*frame.shape[:2], height)
            frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        write_frame(folder / f"{t:05d}.png", frame)


def frame_files(source: Path) -> list[Path]:
    """The image files of a frame folder, sorted by name (hidden files skipped)."""
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS and not p.name.startswith("."))
    if not files:
        raise DataError(source, "no frames (expected image files)")
    return files


def _link_frames(source: Path, folder: Path) -> None:
    for t, path in enumerate(frame_files(source)):
        os.symlink(path.resolve(), folder / f"{t:05d}{path.suffix.lower()}")


def _trimmed(state: VideoState) -> tuple[DavisRoot, str]:
    """The sequence to segment: the whole video, or a second sequence of the frames from the mask's on."""
    if not state.mask_frame:
        return state.root, SEQUENCE
    seq = f"{SEQUENCE}-from-{state.mask_frame:05d}"
    folder = state.root.frames_dir / seq
    if not folder.exists():
        folder.mkdir(parents=True)
        for t, path in enumerate(state.root.frame_paths(SEQUENCE)[state.mask_frame:]):
            os.symlink(path.resolve(), folder / f"{t:05d}{path.suffix}")
    return state.root, seq
