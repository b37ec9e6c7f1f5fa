"""Reading a DAVIS root: sequence lists, frames, annotations, and validation with one-line errors.

Layout (DAVIS 2017; DAVIS 2016 split files also accepted)::

    ROOT/JPEGImages/480p/<seq>/NNNNN.jpg         frames (required)
    ROOT/JPEGImages/Full-Resolution/<seq>/...    optional full-resolution frames
    ROOT/Annotations/480p/<seq>/NNNNN.png        id maps; at least the first frame
    ROOT/ImageSets/2017/<split>.txt              one sequence name per line
    ROOT/ImageSets/480p/<split>.txt              DAVIS 2016: "/JPEGImages/480p/<seq>/NNNNN.jpg /Annotations/..." lines
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError
from .labels import VOID, read_frame, read_labels

log = logging.getLogger(__name__)

MAX_OBJECTS = 254
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


def frame_files(folder: Path) -> list[Path]:
    """The frame images of ``folder`` (JPEG or PNG), sorted by name, hidden files skipped; DataError when none."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS and not p.name.startswith("."))
    if not files:
        raise DataError(folder, "no frames (expected image files such as 00000.jpg)")
    return files


@dataclass(frozen=True)
class SequenceInfo:
    """What validation learnt about one sequence.

    ``object_ids`` are the ids present in the first annotated frame, ascending (1..N when contiguous).
    """

    name: str
    num_frames: int
    height: int
    width: int
    object_ids: tuple[int, ...]
    frame_stems: tuple[str, ...]

    @property
    def num_objects(self) -> int:
        return len(self.object_ids)

    @property
    def contiguous(self) -> bool:
        return self.object_ids == tuple(range(1, len(self.object_ids) + 1))


class DavisRoot:
    """A DAVIS-layout folder. ``resolution`` is the frame/annotation folder name (``480p``)."""

    def __init__(self, root: str | os.PathLike, resolution: str = "480p"):
        self.root = Path(root)
        self.resolution = resolution
        if not self.frames_dir.is_dir():
            raise DataError(self.frames_dir, "not a folder: expected a DAVIS root with JPEGImages/<resolution>/<seq>/")

    @property
    def frames_dir(self) -> Path:
        return self.root / "JPEGImages" / self.resolution

    @property
    def annotations_dir(self) -> Path:
        return self.root / "Annotations" / self.resolution

    @property
    def flow_dir(self) -> Path:
        return self.root / "Flow" / self.resolution

    def full_resolution_dir(self, seq: str) -> Path | None:
        """The ``Full-Resolution`` frame folder of ``seq``, or None when the root has none."""
        d = self.root / "JPEGImages" / "Full-Resolution" / seq
        return d if d.is_dir() else None

    # ----------------------------------------------------------------- sequence lists
    def all_sequences(self) -> list[str]:
        return sorted(p.name for p in self.frames_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def split_file(self, split: str) -> Path:
        for candidate in (self.root / "ImageSets" / "2017" / f"{split}.txt",
                          self.root / "ImageSets" / self.resolution / f"{split}.txt"):
            if candidate.is_file():
                return candidate
        raise DataError(self.root / "ImageSets" / "2017" / f"{split}.txt",
                        f"split '{split}' not found (looked in ImageSets/2017 and ImageSets/{self.resolution})")

    def read_split(self, split: str) -> list[str]:
        """Sequence names of a split, in file order, each once."""
        path = self.split_file(split)
        names: list[str] = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            if "/" in line:  # DAVIS 2016: "/JPEGImages/480p/<seq>/00000.jpg /Annotations/480p/<seq>/00000.png"
                parts = Path(line.split()[0]).parts
                if len(parts) < 3:
                    raise DataError(path, f"cannot read a sequence name from line '{line}'")
                line = parts[-2]
            if line not in names:
                names.append(line)
        return names

    def sequences(self, split: str | None = None, sequences: list[str] | None = None) -> list[str]:
        """The sequences to work on: an explicit list (which must belong to the split when one is given too), a
        split, or every folder under ``JPEGImages``."""
        if sequences:
            names = list(sequences)
            if split:
                outside = sorted(set(names) - set(self.read_split(split)))
                if outside:
                    raise DataError(self.split_file(split), f"{', '.join(outside)} not in split '{split}'")
        elif split:
            names = self.read_split(split)
        else:
            names = self.all_sequences()
        for name in names:
            if not (self.frames_dir / name).is_dir():
                raise DataError(self.frames_dir / name, "sequence folder not found")
        return names

    # ----------------------------------------------------------------- files of one sequence
    def frame_paths(self, seq: str) -> list[Path]:
        d = self.frames_dir / seq
        if not d.is_dir():
            raise DataError(d, "sequence folder not found")
        return frame_files(d)

    def frame_stems(self, seq: str) -> list[str]:
        return [p.stem for p in self.frame_paths(seq)]

    def annotation_path(self, seq: str, stem: str) -> Path:
        return self.annotations_dir / seq / f"{stem}.png"

    def annotated_stems(self, seq: str) -> list[str]:
        d = self.annotations_dir / seq
        if not d.is_dir():
            return []
        return sorted(p.stem for p in d.glob("*.png") if not p.name.startswith("."))

    def read_frame(self, seq: str, index: int) -> np.ndarray:
        """Frame ``index`` of ``seq`` as RGB (H, W, 3) uint8."""
        return read_frame(self.frame_paths(seq)[index])

    def read_annotation(self, seq: str, stem: str) -> np.ndarray:
        """The id map (H, W) uint8 of frame ``stem``."""
        return read_labels(self.annotation_path(seq, stem))

    def read_annotations(self, seq: str) -> np.ndarray:
        """Every frame's id map, (T, H, W) uint8; raises when a frame has no annotation."""
        return np.stack([self.read_annotation(seq, s) for s in self.frame_stems(seq)])

    # ----------------------------------------------------------------- validation
    def validate(self, seq: str, check_all_frames: bool = False, require_all_annotations: bool = False) -> SequenceInfo:
        """Check one sequence and describe it; raise :class:`DataError` naming the file and the problem.

        Checks: frame numbering without gaps, every annotation has its frame, annotations are id maps (not RGB) of the
        frame size, the first frame is annotated and not empty, at most 254 objects. With ``check_all_frames`` every
        frame is decoded and checked for truncation (otherwise only the first); with ``require_all_annotations``
        every frame needs an annotation.
        Non-contiguous object ids are reported in the log and kept in ``object_ids``.
        """
        paths = self.frame_paths(seq)
        stems = [p.stem for p in paths]
        if all(s.isdigit() for s in stems):
            widths = sorted({len(s) for s in stems})
            if len(widths) > 1:
                short = next(p for p in paths if len(p.stem) == widths[0])
                raise DataError(short, f"frame names of {widths[0]} and {widths[-1]} digits: number frames with one "
                                       "width (00000.jpg, 00001.jpg, ...) so that they sort in order")
            numbers = [int(s) for s in stems]
            expected = range(numbers[0], numbers[0] + len(numbers))
            if numbers != list(expected):
                missing = sorted(set(expected) - set(numbers))[:5]
                width = len(stems[0])
                raise DataError(self.frames_dir / seq,
                                "missing frames " + ", ".join(f"{m:0{width}d}" for m in missing)
                                + " (frame numbers must have no gaps)")
        first = read_frame(paths[0])
        height, width = first.shape[:2]
        if check_all_frames:
            for p in paths[1:]:
                shape = read_frame(p).shape[:2]
                if shape != (height, width):
                    raise DataError(p, f"frame size {shape[1]}x{shape[0]} differs from the first frame's "
                                       f"{width}x{height}")
        annotated = self.annotated_stems(seq)
        extra = sorted(set(annotated) - set(stems))
        if extra:
            raise DataError(self.annotation_path(seq, extra[0]), "annotation without a frame (extra frame)")
        if stems[0] not in annotated:
            raise DataError(self.annotation_path(seq, stems[0]), "first-frame annotation missing")
        if require_all_annotations:
            missing = [s for s in stems if s not in annotated]
            if missing:
                raise DataError(self.annotation_path(seq, missing[0]), "annotation missing for this frame")
        object_ids: tuple[int, ...] = ()
        for stem in annotated:
            path = self.annotation_path(seq, stem)
            labels = read_labels(path)
            if labels.shape != (height, width):
                raise DataError(path, f"annotation size {labels.shape[1]}x{labels.shape[0]} differs from its frame "
                                      f"{width}x{height}")
            if stem == stems[0]:
                ids = np.unique(labels)
                ids = ids[(ids != 0) & (ids != VOID)]
                if ids.size == 0:
                    raise DataError(path, "first-frame mask is empty (no object to segment)")
                if ids.size > MAX_OBJECTS:
                    raise DataError(path, f"{ids.size} objects, at most {MAX_OBJECTS} are supported")
                object_ids = tuple(int(i) for i in ids)
                if object_ids != tuple(range(1, len(object_ids) + 1)):
                    log.warning("%s: non-contiguous object ids %s; they are kept as they are", path, list(object_ids))
        return SequenceInfo(seq, len(paths), height, width, object_ids, tuple(stems))
