"""Predict-time callbacks: re-ID recovery, the resumable DAVIS writer, and TensorBoard monitoring."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from vsreid.data.atomic import atomic_write_bytes
from vsreid.data.davis import DavisRoot
from vsreid.data.errors import DataError
from vsreid.data.labels import overlay, write_labels
from vsreid.data.results import ResultsFolder, Status
from vsreid.engine.reid.recovery import RecoveryConfig, recover

from .predict import SequencePrediction

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

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Read the original pickles now (their length is checked against the split) rather than after the first
        sequence was computed."""
        root = getattr(trainer.datamodule, "root", None)
        if self.enabled and self.provider == "original" and root is not None:
            self._original(str(DavisRoot(root).root))

    def _original(self, root: str):
        from vsreid.engine.reid import OriginalSearchResults

        if root not in self._providers:
            self._providers[root] = OriginalSearchResults.from_davis_root(DavisRoot(root), self.split)
        return self._providers[root]

    def _make_provider(self, prediction: SequencePrediction, device: torch.device):
        from vsreid.engine.reid import AppearanceReID

        if self.provider == "appearance":
            return AppearanceReID(device=device)
        return self._original(prediction.item.root)

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

    ``draft=True`` also writes the forward pass alone to ``<output>/draft/<seq>/``. The ``.done`` record of a
    sequence holds ``settings`` (a digest of the settings and inputs of the run, set by the CLI), so a rerun skips
    what the same settings finished and recomputes the rest (see :mod:`vsreid.data.results`).
    """

    def __init__(self, output: str, draft: bool = True, overlays: bool = False):
        super().__init__(write_interval="batch")
        self.output, self.draft, self.overlays = Path(output), draft, overlays
        self.folder = ResultsFolder(self.output)
        self.settings: str | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        names = [type(c).__name__ for c in trainer.callbacks]
        if "ReIDRecovery" in names and names.index("ReIDRecovery") > names.index(type(self).__name__):
            raise ValueError("callback order: ReIDRecovery must come before DavisWriter in trainer.callbacks")
        self._check_writable()
        self.folder.remove_orphaned_temporaries()

    def _check_writable(self) -> None:
        """Fail before any computation when the output folder cannot be written."""
        try:
            self.output.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.output / f".write-check-{os.getpid()}", b"")
            (self.output / f".write-check-{os.getpid()}").unlink()
        except OSError as e:
            raise DataError(self.output, f"output folder not writable ({e.strerror or e})") from None

    def write_on_batch_end(self, trainer, pl_module, prediction: SequencePrediction, batch_indices, batch,
                           batch_idx: int, dataloader_idx: int = 0) -> None:
        seq = prediction.item.sequence
        self.folder.unmark(seq)
        stems = prediction.info.frame_stems
        labels = prediction.labels()
        for t, stem in enumerate(stems):
            write_labels(self.folder.sequence_dir(seq) / f"{stem}.png", labels[t])
            if self.draft:
                write_labels(self.folder.draft_dir(seq) / f"{stem}.png", prediction.draft[t])
        report = prediction.extras.get("reid_report")
        if report is not None:
            atomic_write_bytes(self.folder.reid_report(seq), json.dumps(report, indent=1).encode())
        else:  # a report of an earlier run with re-ID must not outlive it
            self.folder.reid_report(seq).unlink(missing_ok=True)
        self.folder.mark_done(seq, len(stems), trainer.global_rank, self.settings,
                              time.perf_counter() - prediction.started)
        prediction.extras["labels"] = labels

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Wait until every rank has written and marked its sequences, then check them all and report on rank 0."""
        trainer.strategy.barrier("vsreid-predict-end")
        items = getattr(trainer.datamodule, "items", None)
        if items is None:
            return
        names = [it.sequence for it in items]
        missing = [n for n in names if self.folder.status(n, self.settings) is not Status.DONE]
        if missing:
            raise RuntimeError(f"{self.output}: {', '.join(missing)} not marked done after every rank finished")
        if trainer.is_global_zero:
            print(self.summary(items, trainer))

    def summary(self, items, trainer: Trainer) -> str:
        """What the run did: per sequence the frames written, compute seconds and, where every frame has ground
        truth, J&F (the number `vsreid evaluate` prints), then where the masks and the TensorBoard logs are."""
        from vsreid.metrics.evaluation import evaluate_results

        skipped = getattr(trainer.datamodule, "skipped", [])
        lines = [f"vsreid predict: {len(items)} sequence(s) written to {self.output} by {trainer.world_size} "
                 f"process(es)" + (f"; {len(skipped)} already finished there, skipped" if skipped else "")]
        scored = [it for it in items if it.num_frames >= 3 and
                  len(DavisRoot(it.root).annotated_stems(it.sequence)) == it.num_frames]
        per_sequence, total = {}, None
        if scored:
            result = evaluate_results(scored[0].root, self.output, sequences=[it.sequence for it in scored],
                                      progress=False)
            total = 100 * result.global_results["J&F-Mean"]
            for name, stats in zip(result.objects, result.object_stats):
                per_sequence.setdefault(name.rsplit("_", 1)[0], []).append(50 * (stats[0] + stats[3]))
        lines.append(f"  {'sequence':<24}{'frames':>7}{'seconds':>9}{'J&F':>7}")
        for it in items:
            record = self.folder.record(it.sequence) or {}
            jf = per_sequence.get(it.sequence)
            lines.append(f"  {it.sequence:<24}{record.get('frames', 0):>7}{record.get('seconds', 0):>9.1f}"
                         + (f"{sum(jf) / len(jf):>7.1f}" if jf else f"{'-':>7}"))
        if total is not None:
            lines.append(f"  J&F {total:.1f} over the {len(scored)} sequence(s) with ground truth on every frame "
                         f"(as `vsreid evaluate` computes it)")
        log_dir = getattr(trainer.logger, "log_dir", None) if trainer.logger else None
        if log_dir:
            lines.append(f"TensorBoard: tensorboard --logdir {log_dir}")
        return "\n".join(lines)


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
        if outputs.info.num_frames < 3:
            print(f"vsreid predict: {seq}: {outputs.info.num_frames} frame(s), no J&F (the protocol scores the frames "
                  "between the first and the last)")
        elif len(root.annotated_stems(seq)) == outputs.info.num_frames:
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
