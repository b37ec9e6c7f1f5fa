"""The whole method on one sequence, in one place: optional online finetuning of a copy of the network on the first
frame, the forward pass, then re-ID recovery. ``vsreid predict`` (``predict_step``), the Python API
(:class:`vsreid.Segmenter`), the demo and the benches all run :func:`segment_frames`.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from vsreid.models.inference_graph import inference_graph
from vsreid.models.mixed_precision import check_precision

from .finetune import check_scope, finetuned_copy, first_frame_batches
from .memory import release_freed_memory
from .predictor import PatchPredictor, check_prior_weight
from .propagator import PropagationConfig, Propagator
from .reid.provider import ReIDProvider
from .reid.recovery import RecoveryConfig, RecoveryLog, recover
from .reid.report import build_report
from .source import SequenceSource
from .state import PropagationState


@dataclass(frozen=True)
class SegmentSettings:
    """How one sequence is segmented. ``propagation``: crops, boxes, lost objects, refinement passes;
    ``flip``: average with the mirrored pass; ``batch_size``: crops per network pass; ``finetune_steps`` (0 = off),
    ``finetune_lr``, ``finetune_crop_size`` (None = the propagation crop size), ``finetune_batch_size``,
    ``finetune_scope`` (see :data:`vsreid.engine.finetune.FINETUNE_SCOPES`), ``finetune_precision`` (see
    :data:`vsreid.models.mixed_precision.PRECISIONS`), ``lovasz_weight``: online finetuning on the first frame;
    ``inference_precision``: arithmetic of the network's forward passes (one of the same PRECISIONS);
    ``prior_weight``: share of the prior crop mixed into the network's P(fg) (see
    :class:`vsreid.engine.predictor.PatchPredictor`); ``recovery``: the re-ID rules (used when a provider is given).
    The defaults are the paper's where it has one."""

    propagation: PropagationConfig = field(default_factory=PropagationConfig)
    flip: bool = True
    batch_size: int = 4
    finetune_steps: int = 0
    finetune_lr: float = 1e-4
    finetune_crop_size: int | None = None
    finetune_batch_size: int = 4
    finetune_scope: str = "all"
    finetune_precision: str = "float32"
    lovasz_weight: float = 0.0
    inference_precision: str = "float32"
    prior_weight: float = 0.0
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)

    def __post_init__(self):
        check_scope(self.finetune_scope)
        check_precision(self.finetune_precision)
        check_precision(self.inference_precision, "inference_precision")
        check_prior_weight(self.prior_weight)


def settings_from_arguments(arguments: Mapping[str, Any]) -> SegmentSettings:
    """:class:`SegmentSettings` from predict arguments by their option names (``crop_size``, ``flip``,
    ``predict_batch_size``, ``finetune_steps``, ``reid_score_threshold``, ...: the module's arguments and the predict
    record of a weights file); absent or None ones keep the defaults above, other keys are ignored."""
    given = {k: v for k, v in arguments.items() if v is not None}

    def pick(names: dict[str, str]) -> dict[str, Any]:
        return {field_name: given[arg] for arg, field_name in names.items() if arg in given}

    propagation = PropagationConfig(**pick({k: k for k in ("crop_size", "box_enlargement", "lost_ratio",
                                                          "max_flow_error", "refine_iterations")}))
    recovery = RecoveryConfig(**pick({"reid_score_threshold": "score_threshold",
                                      "reid_occlusion_threshold": "occlusion_threshold",
                                      "reid_max_rounds": "max_rounds", "reid_drift_threshold": "drift_threshold",
                                      "reid_drift_restore": "drift_restore", "reid_undo_failed": "undo_failed",
                                      "reid_max_failures": "max_failures", "reid_max_jump": "max_jump",
                                      "reid_jump_across_gaps": "jump_across_gaps",
                                      "reid_require_recurrence": "require_recurrence",
                                      "reid_skip_failed_chains": "skip_failed_chains",
                                      "reid_views_from_recoveries": "views_from_recoveries",
                                      "reid_views_need_track": "views_need_track",
                                      "reid_keep_repeated": "keep_repeated",
                                      "reid_confirm_kept": "confirm_kept",
                                      "reid_recheck_neighbours": "recheck_neighbours"}))
    return SegmentSettings(propagation, recovery=recovery, **pick({
        "flip": "flip", "predict_batch_size": "batch_size", "finetune_steps": "finetune_steps",
        "finetune_lr": "finetune_lr", "finetune_crop_size": "finetune_crop_size",
        "finetune_batch_size": "finetune_batch_size", "finetune_scope": "finetune_scope",
        "finetune_precision": "finetune_precision", "lovasz_weight": "lovasz_weight",
        "inference_precision": "inference_precision", "prior_weight": "prior_weight"}))


@dataclass
class SegmentationResult:
    """One segmented sequence. ``draft``, ``labels``: (T, H, W) uint8 id maps of the forward pass and after re-ID
    (the same array when re-ID did not run); ``log``, ``report``: what re-ID accepted (None without re-ID);
    ``seconds``: wall time of the whole method, finetuning included."""

    sequence: str
    object_ids: tuple[int, ...]
    draft: np.ndarray
    labels: np.ndarray
    state: PropagationState
    log: RecoveryLog | None
    report: dict | None
    seconds: float


def sequence_propagator(net: nn.Module, source: SequenceSource, settings: SegmentSettings, progress: bool = False,
                        position: int = 0, finetune_seed: int = 0) -> Propagator:
    """The propagator of ``source``: ``net`` as an inference graph, first finetuned (a copy; ``net`` is not changed) on
    the first frame when ``settings.finetune_steps`` > 0, with a progress bar at ``position`` when ``progress``.
    ``finetune_seed`` draws the finetuning samples and dropout (prediction always uses 0; benches vary it)."""
    finetuned = settings.finetune_steps > 0
    if finetuned:
        batches = first_frame_batches(source, settings.finetune_crop_size or settings.propagation.crop_size,
                                      settings.finetune_steps, settings.finetune_batch_size, seed=finetune_seed)
        if progress:
            batches = tqdm(batches, total=settings.finetune_steps, desc=f"{source.seq}: finetune", unit="step",
                           leave=False, position=position)
        net = finetuned_copy(net, batches, settings.finetune_steps, settings.finetune_lr, settings.lovasz_weight,
                             seed=finetune_seed, scope=settings.finetune_scope,
                             precision=settings.finetune_precision)
        release_freed_memory()  # the finetuning threads' autograd buffers
    net = inference_graph(net, in_place=finetuned)  # the finetuned copy is ours: folded without another copy
    return Propagator(PatchPredictor(net, flip=settings.flip, batch_size=settings.batch_size,
                                     precision=settings.inference_precision, prior_weight=settings.prior_weight),
                      settings.propagation)


class _Stopped(Exception):
    """Ends a flow fill that is no longer wanted."""


@contextmanager
def flows_alongside(source: SequenceSource, enabled: bool = True) -> Iterator[None]:
    """Within the block (online finetuning), the sequence's missing flows are computed on a thread of their own,
    on the cores the finetuning steps leave idle, rather than one by one as the forward pass reads them (car-shadow
    end to end about 1 s faster, ``bench/bench_speed.py --sections predict``). Leaving the block waits for them and
    raises their errors; when the block raises, the fill stops after the frame pair at hand. Nothing happens unless
    ``enabled`` and the source's flow cache has a flow method (precomputed flows only are read as they are)."""
    if not enabled or getattr(source.flow_cache, "estimator", None) is None:
        yield
        return
    stop = threading.Event()

    def next_pair() -> None:
        if stop.is_set():
            raise _Stopped

    with ThreadPoolExecutor(1, thread_name_prefix="vsreid-flow") as pool:
        filled = pool.submit(source.flow_cache.fill, source.seq, next_pair)
        try:
            yield
        except BaseException:
            stop.set()
            raise
        filled.result()


def segment_frames(net: nn.Module, source: SequenceSource, first_labels: np.ndarray, object_ids: tuple[int, ...],
                   settings: SegmentSettings, reid: ReIDProvider | None = None, progress: bool = False,
                   position: int = 0) -> Generator[tuple[str, int, np.ndarray], None, SegmentationResult]:
    """Segment ``source`` from its first-frame id map (H, W) uint8 holding ``object_ids``.

    Yields ``("draft", t, labels)`` for every frame as the forward pass produces it (frame 0 first: the given
    mask), then, when ``reid`` is given, ``("final", t, labels)`` for every frame after recovery (re-ID needs the
    whole draft: it searches every frame for lost objects). Returns the :class:`SegmentationResult`. ``net`` is not
    changed (finetuning trains a copy). ``progress`` shows bars for finetuning and the forward pass (at ``position``
    for several processes).
    """
    started = time.perf_counter()
    with flows_alongside(source, settings.finetune_steps > 0):
        propagator = sequence_propagator(net, source, settings, progress, position)
    state = propagator.start(source, first_labels, object_ids)
    yield "draft", 0, state.labels(0)
    with tqdm(total=source.num_frames - 1, desc=source.seq, unit="frame", leave=False, position=position,
              disable=not progress) as bar:
        for t in propagator.forward_frames(source, state):
            bar.update(1)
            yield "draft", t, state.labels(t)
    draft = np.stack([state.labels(t) for t in range(state.num_frames)])
    log = report = None
    labels = draft
    if reid is not None:
        release_freed_memory()  # the forward pass's network buffers, before re-ID's features
        reid.prepare(source, first_labels, object_ids)
        log = recover(propagator, source, state, reid, settings.recovery)
        report = build_report(source.seq, draft, reid, log, object_ids, settings.recovery.score_threshold)
        labels = np.stack([state.labels(t) for t in range(state.num_frames)])
        for t in range(state.num_frames):
            yield "final", t, labels[t]
    return SegmentationResult(source.seq, tuple(object_ids), draft, labels, state, log, report,
                              time.perf_counter() - started)


def segment_sequence(net: nn.Module, source: SequenceSource, first_labels: np.ndarray, object_ids: tuple[int, ...],
                     settings: SegmentSettings, reid: ReIDProvider | None = None, progress: bool = False,
                     position: int = 0) -> SegmentationResult:
    """:func:`segment_frames` run to the end."""
    frames = segment_frames(net, source, first_labels, object_ids, settings, reid, progress, position)
    while True:
        try:
            next(frames)
        except StopIteration as done:
            return done.value
