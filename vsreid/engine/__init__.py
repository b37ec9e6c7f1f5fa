"""Plain-PyTorch inference core: flow warping, mask propagation with MP2S, online finetuning, re-ID recovery, and the
Python API (no Lightning)."""
from .api import Segmenter, VideoState
from .predictor import PatchPredictor
from .propagator import PropagationConfig, Propagator
from .segmenter import SegmentationResult, SegmentSettings, segment_frames, segment_sequence
from .source import SequenceSource
from .state import PropagationState

__all__ = ["PatchPredictor", "PropagationConfig", "PropagationState", "Propagator", "SegmentSettings",
           "SegmentationResult", "Segmenter", "SequenceSource", "VideoState", "segment_frames", "segment_sequence"]
