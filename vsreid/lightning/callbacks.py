"""Predict-time callbacks: the resumable DAVIS writer and TensorBoard monitoring (the method itself runs in the
engine, called by ``predict_step``)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from vsreid.data.atomic import atomic_write_bytes
from vsreid.data.davis import DavisRoot
from vsreid.data.errors import DataError
from vsreid.data.labels import overlay, overlay_strip, write_frame, write_labels
from vsreid.data.results import ResultsFolder, Status
from vsreid.data.video import write_video
from vsreid.metrics.evaluation import evaluate_results, evaluate_sequence, global_table, object_statistics

from .predict import PredictedSequence

class DavisWriter(BasePredictionWriter):
    """Writes ``<output>/<seq>/NNNNN.png`` palette PNGs atomically; a sequence is done only when all are written.

    ``draft=True`` also writes the forward pass alone to ``<output>/draft/<seq>/``; ``overlays=True`` writes
    ``<output>/overlays/<seq>.mp4`` (objects tinted and outlined) and a strip of four frames ``<seq>.png``. The
    ``.done`` record of a
    sequence holds ``settings`` (a digest of the settings and inputs of the run, set by the CLI), so a rerun skips
    what the same settings finished and recomputes the rest (see :mod:`vsreid.data.results`).
    """

    def __init__(self, output: str, draft: bool = True, overlays: bool = False):
        super().__init__(write_interval="batch")
        self.output, self.draft, self.overlays = Path(output), draft, overlays
        self.folder = ResultsFolder(self.output)
        self.settings: str | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
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

    def write_on_batch_end(self, trainer, pl_module, prediction: PredictedSequence, batch_indices, batch,
                           batch_idx: int, dataloader_idx: int = 0) -> None:
        seq, result = prediction.item.sequence, prediction.result
        stems = prediction.info.frame_stems
        status = self.folder.status(seq, self.settings, len(stems))
        if status is Status.DONE and self.settings is not None:
            return  # another run into this folder finished it meanwhile with the same settings: nothing to add
        if status is not Status.MISSING:  # an older result is replaced: unfinished until every frame is written
            self.folder.unmark(seq)
        for t, stem in enumerate(stems):
            write_labels(self.folder.sequence_dir(seq) / f"{stem}.png", result.labels[t])
            if self.draft:
                write_labels(self.folder.draft_dir(seq) / f"{stem}.png", result.draft[t])
        if self.overlays:
            self._write_overlays(prediction)
        if result.report is not None:
            atomic_write_bytes(self.folder.reid_report(seq), json.dumps(result.report, indent=1).encode())
        else:  # a report of an earlier run with re-ID must not outlive it
            self.folder.reid_report(seq).unlink(missing_ok=True)
        self.folder.mark_done(seq, len(stems), trainer.global_rank, self.settings, result.seconds)

    def _write_overlays(self, prediction: PredictedSequence) -> None:
        seq, labels, source = prediction.item.sequence, prediction.result.labels, prediction.source
        write_video(self.folder.overlay_video(seq),
                    (overlay(source.frame(t), labels[t], outline=True) for t in range(len(labels))))
        write_frame(self.folder.overlay_strip(seq), overlay_strip(source.frame, labels))

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

    def on_predict_batch_end(self, trainer, pl_module, outputs: PredictedSequence, batch, batch_idx,
                             dataloader_idx=0) -> None:
        seq = outputs.item.sequence
        labels = outputs.result.labels
        experiment = getattr(pl_module.logger, "experiment", None) if pl_module.logger else None
        root = outputs.source.root
        if outputs.info.num_frames < 3:
            print(f"vsreid predict: {seq}: {outputs.info.num_frames} frame(s), no J&F (the protocol scores the frames "
                  "between the first and the last)")
        elif len(root.annotated_stems(seq)) == outputs.info.num_frames:
            gt = root.read_annotations(seq)
            scores = {}
            for name, pred in (("draft", outputs.result.draft), ("final", labels)):
                stats = object_statistics(*evaluate_sequence(pred, gt, name=seq))
                scores[name] = 100 * global_table(stats.mean(axis=0))["J&F-Mean"]
            self.scores[seq] = scores
            if experiment is not None and hasattr(experiment, "add_scalar"):
                for name, value in scores.items():
                    experiment.add_scalar(f"predict/{seq}/J&F_{name}", value, 0)
        if experiment is not None and hasattr(experiment, "add_image"):
            grid = overlay_strip(outputs.source.frame, labels, self.frames_per_sequence)
            experiment.add_image(f"predict/{seq}", torch.from_numpy(grid).permute(2, 0, 1), 0)
