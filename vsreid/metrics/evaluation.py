"""DAVIS 2017 semi-supervised evaluation of result folders, with the official toolkit's object rules and CSVs.

Protocol (as ``davis2017-evaluation``): objects are ids 1..N with N the largest id of the first ground-truth frame
(255 is void); for the semi-supervised task the first and last frames are not scored and void pixels count as
background; J and F are summarised per object (mean, recall, decay) and the global numbers are means over objects,
not over sequences. Differences: a result with more ids than the ground truth raises (the official script prints a
message and exits with status 0), and the CSVs are recomputed on every run (the official script re-reads old ones).
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vsreid.data.atomic import atomic_write
from vsreid.data.davis import DavisRoot
from vsreid.data.errors import DataError
from vsreid.data.labels import VOID, read_labels

from .measures import jaccard_and_boundary
from .statistics import db_statistics

OBJECT_COLUMNS = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
GLOBAL_COLUMNS = ("J&F-Mean",) + OBJECT_COLUMNS
PER_SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")
DEFAULT_SPLIT = "custom"


def evaluate_sequence(pred_labels: np.ndarray, gt_labels: np.ndarray, semi_supervised: bool = True,
                      name: str = "sequence") -> tuple[np.ndarray, np.ndarray]:
    """Per-object, per-frame J and F of one sequence: two (N, T') float64 arrays.

    ``pred_labels`` and ``gt_labels`` are (T, H, W) integer id maps. N = largest id in ``gt_labels[0]`` (void 255
    excluded); object k is id k in both maps, so a missing predicted id scores as an empty mask. Semi-supervised:
    T' = T - 2 (first and last frames dropped) and void is background; otherwise every frame is scored and void
    pixels are ignored (ids are compared as given: no proposal matching). Raises :class:`DataError` (a
    ``ValueError``) naming ``name`` when the scored predictions hold an id above N, the shapes differ, or a
    semi-supervised sequence has fewer than 3 frames.
    """
    pred_labels, gt_labels = np.asarray(pred_labels), np.asarray(gt_labels)
    if pred_labels.ndim != 3 or pred_labels.shape != gt_labels.shape:
        raise DataError(name, f"prediction {pred_labels.shape} and ground truth {gt_labels.shape} must be equal "
                              "(T, H, W) shapes")
    minimum = 3 if semi_supervised else 1
    if len(gt_labels) < minimum:
        raise DataError(name, f"{len(gt_labels)} frame(s), at least {minimum} needed (semi-supervised: the first "
                              "and last are not scored)")
    scored = slice(1, -1) if semi_supervised else slice(None)
    gt, pred = gt_labels[scored], pred_labels[scored]
    void = None if semi_supervised else gt == VOID
    n_objects = int(np.where(gt_labels[0] == VOID, 0, gt_labels[0]).max())
    n_pred = int(pred.max())
    if n_pred > n_objects:
        raise DataError(name, f"the prediction holds object id {n_pred} but the ground truth's first frame has "
                              f"{n_objects} object(s) (ids 1..{n_objects})")
    j = np.zeros((n_objects, len(gt)))
    f = np.zeros((n_objects, len(gt)))
    for k in range(n_objects):
        j[k], f[k] = jaccard_and_boundary(pred == k + 1, gt == k + 1, void)
    return j, f


def object_statistics(j: np.ndarray, f: np.ndarray) -> np.ndarray:
    """(N, 6) float64 rows in :data:`OBJECT_COLUMNS` order from per-object, per-frame J and F (N, T')."""
    return np.array([db_statistics(jk) + db_statistics(fk) for jk, fk in zip(j, f)]).reshape(-1, 6)


def global_table(object_means: np.ndarray) -> dict[str, float]:
    """The global row (keys :data:`GLOBAL_COLUMNS`) from the means over objects of the 6 object statistics."""
    values = dict(zip(OBJECT_COLUMNS, (float(v) for v in object_means)))
    return {"J&F-Mean": (values["J-Mean"] + values["F-Mean"]) / 2, **values}


@dataclass(frozen=True)
class EvaluationResult:
    """Scores of one result folder: per-object statistics, the global row, and where the CSVs were written."""

    split: str
    objects: tuple[str, ...]
    object_stats: np.ndarray
    global_results: dict[str, float]
    global_csv: Path
    per_sequence_csv: Path

    def format(self) -> str:
        """The global table and the per-object table as aligned text (3 decimals)."""
        rows = [[f"{self.global_results[c]:.3f}" for c in GLOBAL_COLUMNS]]
        per_object = [[name, f"{s[0]:.3f}", f"{s[3]:.3f}"] for name, s in zip(self.objects, self.object_stats)]
        return (f"Global results for {self.split}\n{_text_table(GLOBAL_COLUMNS, rows)}\n\n"
                f"Per-object results for {self.split}\n{_text_table(PER_SEQUENCE_COLUMNS, per_object)}")


def evaluate_results(davis_root: str | os.PathLike | DavisRoot, results_dir: str | os.PathLike,
                     split: str | None = None, sequences: list[str] | None = None,
                     progress: bool = True) -> EvaluationResult:
    """Score ``results_dir/<seq>/<stem>.png`` against the ground truth and write the toolkit's two CSVs into it.

    Sequences: ``sequences``, else the split ``split``, else every sequence of the root. Every annotated frame but
    the first and last needs a result of the same size (id map PNG); a missing or mismatched one raises
    :class:`DataError` naming it. CSVs: ``global_results-<split>.csv`` and ``per-sequence_results-<split>.csv`` (one row
    per object ``<seq>_<k>``), ``<split>`` being ``split`` or ``custom``; written atomically, always recomputed.
    """
    root = davis_root if isinstance(davis_root, DavisRoot) else DavisRoot(davis_root)
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise DataError(results_dir, "results folder not found")
    names, stats = [], []
    for seq in tqdm(root.sequences(split, sequences), desc="evaluate", unit="seq", disable=not progress):
        gt, pred = _read_sequence(root, results_dir, seq)
        seq_stats = object_statistics(*evaluate_sequence(pred, gt, name=str(results_dir / seq)))
        names += [f"{seq}_{k + 1}" for k in range(len(seq_stats))]
        stats.append(seq_stats)
    stats = np.concatenate(stats) if stats else np.zeros((0, 6))
    table = global_table(stats.mean(axis=0) if len(stats) else np.full(6, np.nan))
    split = split or DEFAULT_SPLIT
    global_csv = results_dir / f"global_results-{split}.csv"
    per_sequence_csv = results_dir / f"per-sequence_results-{split}.csv"
    _write_csv(global_csv, GLOBAL_COLUMNS, [[table[c] for c in GLOBAL_COLUMNS]])
    _write_csv(per_sequence_csv, PER_SEQUENCE_COLUMNS, [[n, s[0], s[3]] for n, s in zip(names, stats)])
    return EvaluationResult(split, tuple(names), stats, table, global_csv, per_sequence_csv)


def _read_sequence(root: DavisRoot, results_dir: Path, seq: str) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth (T, H, W) uint8 and results (T, H, W) uint8, first and last result frames left empty."""
    stems = root.annotated_stems(seq)
    if len(stems) < 3:
        raise DataError(root.annotations_dir / seq, f"{len(stems)} annotated frame(s); evaluation needs ground "
                                                    "truth on every frame (at least 3)")
    gt = np.stack([root.read_annotation(seq, s) for s in stems])
    pred = np.zeros_like(gt)
    for i, stem in enumerate(stems[1:-1], start=1):
        path = results_dir / seq / f"{stem}.png"
        if not path.is_file():
            raise DataError(path, "result missing (one id map PNG is needed per ground-truth frame except the "
                                  "first and last)")
        labels = read_labels(path)
        if labels.shape != gt.shape[1:]:
            raise DataError(path, f"result size {labels.shape[1]}x{labels.shape[0]} differs from the ground "
                                  f"truth's {gt.shape[2]}x{gt.shape[1]}")
        pred[i] = labels
    return gt, pred


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[list]) -> None:
    """Write like pandas ``to_csv(index=False, float_format="%.3f")``: NaN as an empty field."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[_csv_value(v) for v in row] for row in rows])
    atomic_write(path, lambda tmp: tmp.write_text(buffer.getvalue()))


def _csv_value(value) -> str:
    if isinstance(value, str):
        return value
    return "" if np.isnan(value) else f"{value:.3f}"


def _text_table(columns, rows) -> str:
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    lines = [columns] + rows
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in lines)
