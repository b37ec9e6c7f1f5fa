"""The one builder of small DAVIS roots for the tests: :func:`write_davis_root` (also the ``make_davis_root`` fixture
of ``conftest.py``). What differs between tests is a parameter: sequences and their frame counts, frame size, objects,
what the frames and annotations show, cached flows, split files."""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from vsreid.data.davis import DavisRoot
from vsreid.data.flow import write_flo
from vsreid.data.labels import write_frame, write_labels
from vsreid.data.synthetic import generate_sequence, write_sequence

#: The default objects, for the default 24x32 frames: rows y1:y2 and columns x1:x2 in frame 0, moving dx px a frame.
BOXES = ((2, 10, 3, 12, 1), (14, 20, 20, 28, 0))  # y1, y2, x1, x2, dx

Image = Callable[[str, int, np.random.Generator], "np.ndarray | Path"]
Labels = Callable[[str, int], "np.ndarray | None"]
Flow = Callable[[str, int, int], np.ndarray]


def boxes(t: int, size: tuple[int, int], objects: int) -> np.ndarray:
    """(H, W) uint8 id map of frame t with the first ``objects`` of :data:`BOXES` (ids 1..objects)."""
    if objects > len(BOXES):
        raise ValueError(f"the default layout has {len(BOXES)} objects; give labels= for {objects}")
    labels = np.zeros(size, np.uint8)
    for k, (y1, y2, x1, x2, dx) in enumerate(BOXES[:objects], start=1):
        labels[y1:y2, x1 + dx * t:x2 + dx * t] = k
    return labels


def write_davis_root(path: str | os.PathLike, sequences: Sequence[str] | Mapping[str, int] = ("seq",), *,
                     frames: int = 4, size: tuple[int, int] = (24, 32), objects: int = 2,
                     labels: Labels | None = None, image: Image | None = None, images: bool = True,
                     frame_ext: str = "jpg", first: int = 0, flow: Flow | None = None, flow_folder: bool = False,
                     splits: Mapping[str, Sequence[str]] | None = None, synthetic_seed: int | None = None,
                     seed: int = 0) -> DavisRoot:
    """Write a DAVIS root under ``path`` (into what is already there) and return it.

    Args:
        sequences: names (``frames`` frames each) or name -> frame count.
        size: (H, W) of the frames.
        objects: objects of the default annotations (:func:`boxes`, on every frame); 0 = no annotations.
        labels: ``labels(seq, t)`` -> (H, W) uint8 id map of frame t, or None for a frame without annotation; replaces
            the default annotations.
        image: ``image(seq, t, rng)`` -> (H, W, 3) uint8 RGB frame, or the path of an image file copied as it is;
            default uniform noise drawn from ``rng`` (one generator of ``seed`` for the whole root, drawn in
            sequence then frame order).
        images: False leaves the frame folders empty (annotations only).
        frame_ext: file type of the frames written (``jpg`` or lossless ``png``).
        first: number of the first frame's files (``00010.jpg`` ... for 10).
        flow: ``flow(seq, t, step)`` -> (H, W, 2) float32, written as the cached flow of frame t toward t + step:
            ``Flow/480p/<seq>/NNNNN.flo`` (step 1, every frame but the last) and ``.rflo`` (step -1, every frame but
            the first).
        flow_folder: create an (empty) ``Flow/480p``, which flow caches then use.
        splits: split name -> sequences, written as ``ImageSets/2017/<split>.txt``.
        synthetic_seed: sequences from the shape generator instead (sequence k from seed ``synthetic_seed + k``,
            ``objects`` objects, absences of at least one frame), written as ``vsreid synth`` writes them (frames,
            annotations and ``synthetic/<seq>.json``); ``labels``, ``image`` and ``flow`` do not apply.
    """
    root = Path(path)
    counts = dict(sequences) if isinstance(sequences, Mapping) else {name: frames for name in sequences}
    rng = np.random.default_rng(seed)
    for k, (seq, count) in enumerate(counts.items()):
        (root / "JPEGImages/480p" / seq).mkdir(parents=True, exist_ok=True)
        if synthetic_seed is not None:
            write_sequence(root, generate_sequence(seq, synthetic_seed + k, size=size, num_frames=count,
                                                   num_objects=objects, min_absence=1))
            continue
        for t in range(count):
            stem = f"{first + t:05d}"
            if images:
                frame = image(seq, t, rng) if image else rng.integers(0, 255, (*size, 3), np.uint8)
                if isinstance(frame, Path):
                    shutil.copy(frame, root / "JPEGImages/480p" / seq / f"{stem}{frame.suffix}")
                else:
                    write_frame(root / "JPEGImages/480p" / seq / f"{stem}.{frame_ext}", frame)
            annotation = labels(seq, t) if labels else boxes(t, size, objects) if objects else None
            if annotation is not None:
                write_labels(root / "Annotations/480p" / seq / f"{stem}.png", annotation)
            for step, suffix, wanted in ((1, "flo", t < count - 1), (-1, "rflo", t > 0)):
                if flow and wanted:
                    write_flo(root / "Flow/480p" / seq / f"{stem}.{suffix}", flow(seq, t, step))
    if flow_folder:
        (root / "Flow/480p").mkdir(parents=True, exist_ok=True)
    for split, names in (splits or {}).items():
        (root / "ImageSets/2017").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets/2017" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return DavisRoot(root)
