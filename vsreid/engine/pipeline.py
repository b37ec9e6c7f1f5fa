"""The whole method on one sequence without Lightning: forward propagation, then re-ID recovery."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from vsreid.data.davis import DavisRoot
from vsreid.data.flow import FlowCache, make_flow_estimator

from .predictor import PatchPredictor
from .propagator import PropagationConfig, Propagator
from .reid.provider import ReIDProvider
from .reid.recovery import RecoveryConfig, RecoveryLog, recover
from .source import SequenceSource
from .state import PropagationState


@dataclass
class SegmentationResult:
    """draft: (T, H, W) uint8 id maps of the forward pass; labels: after re-ID; log: accepted re-identifications."""

    draft: np.ndarray
    labels: np.ndarray
    state: PropagationState
    log: RecoveryLog | None


def segment_sequence(net: nn.Module, root: str | DavisRoot, seq: str, reid: ReIDProvider | None = None,
                     config: PropagationConfig | None = None, flow_dir: str | None = None, flip: bool = True,
                     flow_preset: str = "medium", recovery: RecoveryConfig | None = None) -> SegmentationResult:
    """Segment ``seq`` of a DAVIS root from its first-frame annotation with an MP2S ``net``.

    Flow comes from the cache (``flow_dir`` or ``ROOT/Flow/480p``), computed with DIS where missing. ``reid`` None
    skips recovery.
    """
    root = root if isinstance(root, DavisRoot) else DavisRoot(root)
    info = root.validate(seq)
    source = SequenceSource(root, seq, FlowCache(root, make_flow_estimator("dis", preset=flow_preset), flow_dir))
    propagator = Propagator(PatchPredictor(net, flip=flip), config)
    first = root.read_annotation(seq, info.frame_stems[0])
    state = propagator.run_forward(source, propagator.start(source, first, info.object_ids))
    draft = np.stack([state.labels(t) for t in range(state.num_frames)])
    if reid is None:
        return SegmentationResult(draft, draft, state, None)
    reid.prepare(source, first, info.object_ids)
    log = recover(propagator, source, state, reid, recovery)
    return SegmentationResult(draft, np.stack([state.labels(t) for t in range(state.num_frames)]), state, log)
