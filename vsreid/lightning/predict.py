"""One sequence through the engine inside ``predict_step``: optional online finetuning, then the forward pass."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vsreid.data.davis import DavisRoot, SequenceInfo
from vsreid.data.flow import FlowCache, make_flow_estimator
from vsreid.engine.propagator import Propagator
from vsreid.engine.source import SequenceSource
from vsreid.engine.state import PropagationState


@dataclass
class SequenceItem:
    """What the predict dataloader yields: one whole sequence (plain values, picklable for DDP)."""

    root: str
    sequence: str
    num_frames: int
    num_objects: int
    flow_method: str = "dis"
    flow_preset: str = "medium"
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
class SequencePrediction:
    """The result of ``predict_step`` for one sequence; callbacks refine it (re-ID) and write it."""

    item: SequenceItem
    info: SequenceInfo
    source: SequenceSource
    state: PropagationState
    propagator: Propagator
    first_labels: np.ndarray
    draft: np.ndarray  # (T, H, W) uint8 id maps of the forward pass alone
    started: float  # time.perf_counter() when the sequence started (finetuning included)
    extras: dict[str, Any] = field(default_factory=dict)

    def labels(self) -> np.ndarray:
        """(T, H, W) uint8 id maps of the current state."""
        return np.stack([self.state.labels(t) for t in range(self.state.num_frames)])


def predict_sequence(module, item: SequenceItem) -> SequencePrediction:
    """Validate the sequence, optionally finetune a copy of the network on its first frame, propagate forward."""
    started = time.perf_counter()
    root, source = item.open()
    info = root.validate(item.sequence)
    first = root.read_annotation(item.sequence, info.frame_stems[0])
    net = module.net
    if module.hparams.finetune_steps > 0:
        net = module.finetuned_copy(first_frame_batches(module, root, source, item))
    propagator = module.make_propagator(net)
    state = propagator.start(source, first, info.object_ids)
    with tqdm(total=source.num_frames - 1, desc=item.sequence, unit="frame", leave=False,
              position=module.global_rank) as bar:
        propagator.run_forward(source, state, progress=lambda t: bar.update(1))
    draft = np.stack([state.labels(t) for t in range(state.num_frames)])
    return SequencePrediction(item, info, source, state, propagator, first, draft, started)


def first_frame_batches(module, root: DavisRoot, source: SequenceSource, item: SequenceItem, batch_size: int = 4):
    """Endless batches of augmented first-frame samples of this sequence for online finetuning."""
    from vsreid.data.samples import FirstFrameSamples

    samples = FirstFrameSamples(root, [item.sequence], source.flow_cache, size=module.hparams.finetune_crop_size,
                                samples_per_epoch=batch_size * max(1, module.hparams.finetune_steps), seed=0)
    while True:
        for start in range(0, len(samples), batch_size):
            items = [samples[k] for k in range(start, min(len(samples), start + batch_size))]
            yield {key: torch.from_numpy(np.stack([it[key] for it in items])) for key in items[0]}
