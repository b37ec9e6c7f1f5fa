"""Predict-time callbacks: re-ID recovery, the resumable DAVIS writer, and TensorBoard monitoring."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from vsreid.data.atomic import atomic_write_bytes
from vsreid.data.labels import overlay, write_labels
from vsreid.engine.reid.recovery import RecoveryConfig, recover

from .predict import SequencePrediction

DONE_MARKER = ".done"


def is_finished(output: str | Path, seq: str) -> bool:
    """True when the writer completed ``seq`` under ``output`` (all frames written, marker present)."""
    return (Path(output) / seq / DONE_MARKER).is_file()


class ReIDRecovery(Callback):
    """Applies re-ID recovery to each predicted sequence, with the module's propagator.

    Args:
        provider: ``"appearance"`` (embedded, nothing precomputed) or ``"original"`` (the original PersonSearch /
            ObjectSearch / Class pickles under the DAVIS root, for the split given by ``split``).
        split: the split name of the original pickles (their frame counter runs over the whole split).
        score_threshold, occlusion_threshold: the original's 0.5 and 0.3.
        max_rounds: cap on accepted re-identifications per sequence (None: until no candidate qualifies).
        enabled: switch recovery off without removing the callback (``--reid false``).
    """

    def __init__(self, provider: str = "appearance", split: str | None = None, score_threshold: float = 0.5,
                 occlusion_threshold: float = 0.3, max_rounds: int | None = None, enabled: bool = True):
        if provider not in ("appearance", "original"):
            raise ValueError(f"provider must be 'appearance' or 'original', got {provider!r}")
        if provider == "original" and not split:
            raise ValueError("provider 'original' needs split=<set name> (the pickles are indexed over a split)")
        self.provider, self.split, self.enabled = provider, split, enabled
        self.config = RecoveryConfig(score_threshold=score_threshold, occlusion_threshold=occlusion_threshold,
                                     max_rounds=max_rounds)
        self._providers: dict[str, Any] = {}

    def _make_provider(self, prediction: SequencePrediction, device: torch.device):
        from vsreid.engine.reid import AppearanceReID, OriginalSearchResults

        if self.provider == "appearance":
            return AppearanceReID(device=device)
        key = prediction.item.root
        if key not in self._providers:
            from vsreid.data.davis import DavisRoot

            self._providers[key] = OriginalSearchResults.from_davis_root(DavisRoot(key), self.split)
        return self._providers[key]

    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self.enabled or not isinstance(outputs, SequencePrediction):
            return
        from vsreid.engine.reid.report import build_report

        provider = self._make_provider(outputs, pl_module.device)
        provider.prepare(outputs.source, outputs.first_labels, outputs.info.object_ids)
        log = recover(outputs.propagator, outputs.source, outputs.state, provider, self.config)
        outputs.extras["reid_report"] = build_report(outputs.item.sequence, outputs.draft, provider, log,
                                                      outputs.info.object_ids)


class DavisWriter(BasePredictionWriter):
    """Writes ``<output>/<seq>/NNNNN.png`` palette PNGs atomically; a sequence is done only when all are written.

    ``draft=True`` also writes the forward pass alone to ``<output>/draft/<seq>/``. A ``.done`` marker per sequence
    lets a rerun skip finished sequences (see :class:`DavisPredictDataModule`).
    """

    def __init__(self, output: str, draft: bool = True, overlays: bool = False):
        super().__init__(write_interval="batch")
        self.output, self.draft, self.overlays = Path(output), draft, overlays

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        names = [type(c).__name__ for c in trainer.callbacks]
        if "ReIDRecovery" in names and names.index("ReIDRecovery") > names.index(type(self).__name__):
            raise ValueError("callback order: ReIDRecovery must come before DavisWriter in trainer.callbacks")

    def write_on_batch_end(self, trainer, pl_module, prediction: SequencePrediction, batch_indices, batch,
                           batch_idx: int, dataloader_idx: int = 0) -> None:
        seq = prediction.item.sequence
        folder = self.output / seq
        marker = folder / DONE_MARKER
        if marker.exists():
            marker.unlink()
        stems = prediction.info.frame_stems
        labels = prediction.labels()
        for t, stem in enumerate(stems):
            write_labels(folder / f"{stem}.png", labels[t])
            if self.draft:
                write_labels(self.output / "draft" / seq / f"{stem}.png", prediction.draft[t])
        report = prediction.extras.get("reid_report")
        if report is not None:
            atomic_write_bytes(folder / "reid.json", json.dumps(report, indent=1).encode())
        atomic_write_bytes(marker, json.dumps({"frames": len(stems), "rank": trainer.global_rank}).encode())
        prediction.extras["labels"] = labels

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Wait until every rank has written and marked its sequences, then check them all and report on rank 0."""
        trainer.strategy.barrier("vsreid-predict-end")
        items = getattr(trainer.datamodule, "items", None)
        if items is None:
            return
        names = [it.sequence for it in items]
        missing = [n for n in names if not is_finished(self.output, n)]
        if missing:
            raise RuntimeError(f"{self.output}: no {DONE_MARKER} for {', '.join(missing)} after every rank finished")
        if trainer.is_global_zero:
            skipped = getattr(trainer.datamodule, "skipped", [])
            print(f"vsreid predict: {len(names)} sequence(s) written to {self.output} by {trainer.world_size} "
                  f"process(es)" + (f"; {len(skipped)} already finished there, skipped" if skipped else ""))


class PredictionMonitor(Callback):
    """TensorBoard during predict: overlays of a few frames per sequence, and per-sequence J&F when ground truth
    exists for every frame (draft and final)."""

    def __init__(self, frames_per_sequence: int = 4):
        self.frames_per_sequence = frames_per_sequence
        self.scores: dict[str, dict[str, float]] = {}

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not isinstance(outputs, SequencePrediction):
            return
        from vsreid.metrics.evaluation import evaluate_sequence, global_table, object_statistics

        seq = outputs.item.sequence
        labels = outputs.extras.get("labels")
        labels = outputs.labels() if labels is None else labels
        experiment = getattr(pl_module.logger, "experiment", None) if pl_module.logger else None
        root = outputs.source.root
        if len(root.annotated_stems(seq)) == outputs.info.num_frames:
            gt = root.read_annotations(seq)
            scores = {}
            for name, pred in (("draft", outputs.draft), ("final", labels)):
                stats = object_statistics(*evaluate_sequence(pred, gt, name=seq))
                scores[name] = 100 * global_table(stats.mean(axis=0))["J&F-Mean"]
            self.scores[seq] = scores
            if experiment is not None and hasattr(experiment, "add_scalar"):
                for name, value in scores.items():
                    experiment.add_scalar(f"predict/{seq}/J&F_{name}", value, 0)
        if experiment is not None and hasattr(experiment, "add_image"):
            picks = np.linspace(0, outputs.info.num_frames - 1, self.frames_per_sequence).round().astype(int)
            tiles = [overlay(outputs.source.frame(t), labels[t]) for t in picks]
            grid = np.concatenate(tiles, axis=1)
            experiment.add_image(f"predict/{seq}", torch.from_numpy(grid).permute(2, 0, 1), 0)
