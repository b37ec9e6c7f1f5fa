"""The results folder of ``vsreid predict``: one layout for its writer and every reader::

    OUT/<seq>/NNNNN.png          final id maps (DAVIS palette PNGs)
    OUT/<seq>/reid.json          what re-ID found and accepted (only when re-ID ran)
    OUT/<seq>/.done              completion record (JSON): frames, rank, compute seconds, and the digest of the
                                 settings and inputs that produced the result
    OUT/draft/<seq>/NNNNN.png    the forward pass alone, before re-ID
    OUT/overlays/<seq>.mp4       on request: the frames with the objects tinted and outlined
    OUT/overlays/<seq>.png       on request: a strip of four of those frames

A sequence is finished when its ``.done`` exists; it is finished *for a run* when its record also holds that run's
settings digest and frame count, otherwise a rerun recomputes it.
"""
from __future__ import annotations

import json
import os
from enum import Enum
from pathlib import Path

from .atomic import atomic_write_bytes, remove_orphaned_temporaries

DONE = ".done"
DRAFT = "draft"
OVERLAYS = "overlays"
REID_REPORT = "reid.json"


class Status(Enum):
    MISSING = "missing"  # never finished (or interrupted)
    DONE = "done"  # finished with the same settings and frame count
    STALE = "stale"  # finished, but with other settings or another frame count


class ResultsFolder:
    """Paths and completion records of one results folder ``root``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @property
    def draft_root(self) -> Path:
        """The forward-pass results as a results folder of their own (``evaluate_results`` reads it like OUT)."""
        return self.root / DRAFT

    def reid_sequences(self) -> list[str]:
        """The sequences that have a re-ID report."""
        return sorted(p.parent.name for p in self.root.glob(f"*/{REID_REPORT}"))

    def sequence_dir(self, seq: str) -> Path:
        return self.root / seq

    def draft_dir(self, seq: str) -> Path:
        return self.root / DRAFT / seq

    def reid_report(self, seq: str) -> Path:
        return self.root / seq / REID_REPORT

    def overlay_video(self, seq: str) -> Path:
        return self.root / OVERLAYS / f"{seq}.mp4"

    def overlay_strip(self, seq: str) -> Path:
        return self.root / OVERLAYS / f"{seq}.png"

    def marker(self, seq: str) -> Path:
        return self.root / seq / DONE

    def record(self, seq: str) -> dict | None:
        """The completion record of ``seq``, or None when it has none (or an unreadable one)."""
        try:
            record = json.loads(self.marker(seq).read_text())
        except (OSError, ValueError):  # absent, unreadable, or below a file: not finished
            return None
        return record if isinstance(record, dict) else None

    def status(self, seq: str, settings: str | None = None, frames: int | None = None) -> Status:
        """Whether ``seq`` is finished; with ``settings`` (a digest) and ``frames``, finished by the same run."""
        record = self.record(seq)
        if record is None:
            return Status.MISSING
        if settings is not None and record.get("settings") != settings:
            return Status.STALE
        if frames is not None and record.get("frames") != frames:
            return Status.STALE
        return Status.DONE

    def unmark(self, seq: str) -> None:
        self.marker(seq).unlink(missing_ok=True)

    def mark_done(self, seq: str, frames: int, rank: int, settings: str | None, seconds: float) -> None:
        """Write the completion record: frame count, the rank that wrote it, the settings digest, compute seconds."""
        atomic_write_bytes(self.marker(seq), json.dumps({"frames": frames, "rank": rank, "settings": settings,
                                                         "seconds": round(seconds, 2)}).encode())

    def remove_orphaned_temporaries(self) -> int:
        """Delete temporary files left by killed writers (never those of a live process); returns how many."""
        return remove_orphaned_temporaries(self.root) if self.root.is_dir() else 0
