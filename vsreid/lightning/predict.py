"""What travels through ``predict``: the dataloader's sequence items and ``predict_step``'s results."""
from __future__ import annotations

from dataclasses import dataclass

from vsreid.data.davis import DavisRoot, SequenceInfo
from vsreid.data.flow import DEFAULT_PRESET, FlowCache, make_flow_estimator
from vsreid.engine.segmenter import SegmentationResult
from vsreid.engine.source import SequenceSource


@dataclass
class SequenceItem:
    """What the predict dataloader yields: one whole sequence (plain values, picklable for DDP)."""

    root: str
    sequence: str
    num_frames: int
    num_objects: int
    flow_method: str = "dis"
    flow_preset: str = DEFAULT_PRESET
    flow_dir: str | None = None
    full_resolution: bool = False

    @property
    def cost(self) -> int:
        """Work estimate used to balance ranks: frames x objects."""
        return self.num_frames * max(1, self.num_objects)

    def open(self) -> tuple[DavisRoot, SequenceSource]:
        root = DavisRoot(self.root)
        estimator = make_flow_estimator(self.flow_method, preset=self.flow_preset) if self.flow_method else None
        cache = FlowCache(root, estimator, flow_dir=self.flow_dir)
        return root, SequenceSource(root, self.sequence, cache, full_resolution=self.full_resolution)


@dataclass
class PredictedSequence:
    """What ``predict_step`` returns for one sequence: the item, its checked description, its frames and flows, and
    the engine's result; callbacks write, monitor and log it."""

    item: SequenceItem
    info: SequenceInfo
    source: SequenceSource
    result: SegmentationResult
