"""Plain-PyTorch inference core: flow warping, mask propagation with MP2S, re-ID recovery (no Lightning)."""
from .pipeline import SegmentationResult, segment_sequence
from .predictor import PatchPredictor
from .propagator import PropagationConfig, Propagator
from .source import SequenceSource
from .state import PropagationState

__all__ = ["PatchPredictor", "PropagationConfig", "PropagationState", "Propagator", "SegmentationResult",
           "SequenceSource", "segment_sequence"]
