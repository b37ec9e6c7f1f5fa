"""Import a video file (MP4, AVI, ... anything OpenCV/FFmpeg decodes) as a DAVIS-layout sequence."""
from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from .errors import DataError
from .labels import VOID, read_labels, write_frame, write_labels


@dataclass(frozen=True)
class ImportedVideo:
    """Where the frames (and the first-frame mask, if any) went, and their count and size in pixels."""

    frames_dir: Path
    num_frames: int
    height: int
    width: int
    mask_path: Path | None


def scaled_size(height: int, width: int, target_height: int) -> tuple[int, int]:
    """(H, W) after resizing to ``target_height`` rows, keeping the aspect ratio; the width is rounded to even."""
    return target_height, max(2, 2 * round(width * target_height / height / 2))


def read_video(video: str | os.PathLike) -> Iterator[np.ndarray]:
    """The frames of a video file as RGB (H, W, 3) uint8 arrays, in order; DataError when none decodes."""
    capture = cv2.VideoCapture(str(video))
    try:
        count = 0
        while capture.isOpened():
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        if count == 0:
            raise DataError(video, "not a readable video (OpenCV/FFmpeg could not decode a frame)")
    finally:
        capture.release()


def video_fps(video: str | os.PathLike, default: float = 24.0) -> float:
    """Frames per second recorded in a video file (``default`` when it records none)."""
    capture = cv2.VideoCapture(str(video))
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    finally:
        capture.release()
    return fps if fps and fps > 0 else default


def write_video(path: str | os.PathLike, frames: Iterator[np.ndarray], fps: float = 24.0) -> Path:
    """Write RGB (H, W, 3) uint8 frames as an MP4 (mp4v) atomically; DataError when OpenCV cannot encode it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-video.tmp.mp4")
    writer = None
    try:
        for frame in frames:
            if writer is None:
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, frame.shape[1::-1])
                if not writer.isOpened():
                    raise DataError(path, "this OpenCV build cannot write mp4v videos")
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        if writer is None:
            raise DataError(path, "no frames to write")
        writer.release()
        writer = None
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.release()
        tmp.unlink(missing_ok=True)
    return path


def _resize(image, size: tuple[int, int], interpolation: int | None = None):
    height, width = size
    if interpolation is None:
        interpolation = cv2.INTER_AREA if height < image.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def import_video(video: str | os.PathLike, root: str | os.PathLike, name: str, height: int = 480, every: int = 1,
                 max_frames: int | None = None, mask: str | os.PathLike | None = None, resolution: str = "480p",
                 progress: bool = True) -> ImportedVideo:
    """Write every ``every``-th frame of ``video`` (at most ``max_frames``) resized to ``height`` rows as
    ``root/JPEGImages/<resolution>/<name>/00000.jpg ...``, and ``mask`` (an id map of the first frame, any size with
    the video's aspect ratio) resized with nearest neighbour as ``root/Annotations/<resolution>/<name>/00000.png``.

    The frames are written to a hidden folder renamed into place at the end, so a failed import leaves nothing behind;
    an existing non-empty sequence folder is an error.
    """
    video, root = Path(video), Path(root)
    if every < 1 or height < 2 or (max_frames is not None and max_frames < 1):
        raise ValueError(f"every ({every}) and max_frames ({max_frames}) must be >= 1 and height ({height}) >= 2")
    frames_dir = root / "JPEGImages" / resolution / name
    if frames_dir.is_dir() and any(frames_dir.iterdir()):
        raise DataError(frames_dir, "sequence folder already exists and is not empty (choose another name)")
    if not video.is_file():
        raise DataError(video, "file not found")
    labels = read_labels(mask) if mask is not None else None
    if labels is not None and not ((labels > 0) & (labels != VOID)).any():
        raise DataError(mask, "mask is empty (no object to segment)")
    capture = cv2.VideoCapture(str(video))
    try:
        ok, frame = capture.read() if capture.isOpened() else (False, None)
        if not ok:
            raise DataError(video, "not a readable video (OpenCV/FFmpeg could not decode a frame)")
        size = scaled_size(*frame.shape[:2], height)
        if labels is not None and abs(labels.shape[1] * height / labels.shape[0] - size[1]) > 2:
            raise DataError(mask, f"mask is {labels.shape[1]}x{labels.shape[0]}, its aspect ratio differs from the "
                                  f"video's {frame.shape[1]}x{frame.shape[0]}")
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        frames_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=frames_dir.parent))
        try:
            count = _write_frames(capture, frame, tmp, size, every, max_frames,
                                  tqdm(total=total, desc=name, unit="frame", disable=not progress, leave=False))
            if frames_dir.is_dir():
                frames_dir.rmdir()
            tmp.rename(frames_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        capture.release()
    mask_path = None
    if labels is not None:
        mask_path = write_labels(root / "Annotations" / resolution / name / "00000.png",
                                 _resize(labels, size, cv2.INTER_NEAREST))
    return ImportedVideo(frames_dir, count, size[0], size[1], mask_path)


def _write_frames(capture: cv2.VideoCapture, frame, folder: Path, size: tuple[int, int], every: int,
                  max_frames: int | None, bar: tqdm) -> int:
    """Write the kept frames (BGR, starting with the already decoded ``frame``) as JPEGs; return how many."""
    count = 0
    with bar:
        for index in itertools.count():
            if index % every == 0:
                write_frame(folder / f"{count:05d}.jpg", cv2.cvtColor(_resize(frame, size), cv2.COLOR_BGR2RGB))
                count += 1
            bar.update(1)
            ok, frame = (False, None) if count == max_frames else capture.read()
            if not ok:
                break
    return count
