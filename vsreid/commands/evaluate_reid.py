"""Evaluate re-ID against the ground truth: candidate recall on lost objects and precision of accepted recoveries.

Reads DIR/<seq>/reid.json (written by `vsreid predict` with re-ID) and the DAVIS annotations. Over the (frame, object)
pairs the draft (forward pass alone) lost, or whose draft prediction re-ID dropped as drifted: recall = fraction of
those where the object is in the ground truth that have a candidate box with IoU >= 0.5 with its tight ground-truth
box; "correctly lost" counts those where it is truly absent. Precision = fraction of accepted recoveries whose box has IoU >= 0.5 with the object's ground-truth box.
Frames without an annotation are skipped. Prints a per-sequence table and writes DIR/reid_results.csv.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import numpy as np

from vsreid.commands import add_split_argument
from vsreid.data.atomic import atomic_write_bytes
from vsreid.data.crops import box_iou, object_box
from vsreid.data.davis import DavisRoot
from vsreid.data.errors import DataError
from vsreid.data.results import ResultsFolder

IOU_THRESHOLD = 0.5
COLUMNS = ("sequence", "lost", "lost_in_gt", "recalled", "recall", "correctly_lost", "recoveries", "correct",
           "precision")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--davis-root", required=True, help="DAVIS root with Annotations/480p/<seq>/")
    parser.add_argument("--results", required=True, help="prediction folder holding <seq>/reid.json")
    which = parser.add_mutually_exclusive_group()
    add_split_argument(which, "a split of ImageSets; default: every <seq>/reid.json in DIR")
    which.add_argument("--sequences", nargs="+", metavar="SEQ", help="these sequences only")


def read_report(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(path, "re-ID report missing (run `vsreid predict` with re-ID enabled)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e})") from None
    missing = [k for k in ("lost", "candidates", "recoveries") if k not in (report if isinstance(report, dict) else {})]
    if missing:
        raise DataError(path, f"not a re-ID report: missing {', '.join(missing)}")
    return report


class _GroundTruth:
    """Tight ground-truth boxes of one sequence, read per frame on demand; None where the frame is not annotated."""

    def __init__(self, root: DavisRoot, seq: str):
        self.root, self.seq = root, seq
        self.stems = root.frame_stems(seq)
        self.annotated = set(root.annotated_stems(seq))
        self._labels: dict[int, np.ndarray | None] = {}

    def box(self, t: int, object_id: int):
        """(x1, y1, x2, y2) of the object in frame t, () when absent there, None when t has no annotation."""
        if t not in self._labels:
            stem = self.stems[t] if 0 <= t < len(self.stems) else None
            self._labels[t] = self.root.read_annotation(self.seq, stem) if stem in self.annotated else None
        labels = self._labels[t]
        if labels is None:
            return None
        mask = labels == object_id
        return object_box(mask, box_enlargement=0.0) if mask.any() else ()


def evaluate_sequence(root: DavisRoot, seq: str, report: dict) -> dict:
    """Counts of one sequence (the CSV row without the ratios)."""
    gt = _GroundTruth(root, seq)
    row = dict.fromkeys(COLUMNS[1:], 0)
    for t, oid in report["lost"]:
        box = gt.box(t, oid)
        if box is None:
            continue
        row["lost"] += 1
        if not box:
            row["correctly_lost"] += 1
            continue
        row["lost_in_gt"] += 1
        cands = report["candidates"].get(f"{t}:{oid}", [])
        row["recalled"] += any(box_iou(c[:4], box) >= IOU_THRESHOLD for c in cands)
    for rec in report["recoveries"]:
        box = gt.box(rec["frame"], rec["object_id"])
        if box is None:
            continue
        row["recoveries"] += 1
        row["correct"] += bool(box) and box_iou(rec["box"], box) >= IOU_THRESHOLD
    return row


def _ratios(row: dict) -> dict:
    row["recall"] = row["recalled"] / row["lost_in_gt"] if row["lost_in_gt"] else float("nan")
    row["precision"] = row["correct"] / row["recoveries"] if row["recoveries"] else float("nan")
    return row


def run(args: argparse.Namespace) -> int:
    root = DavisRoot(args.davis_root)
    results = Path(args.results)
    folder = ResultsFolder(results)
    if args.split or args.sequences:
        names = root.sequences(args.split, args.sequences)
    else:
        names = folder.reid_sequences()
        if not names:
            raise DataError(results, "no <seq>/reid.json found (run `vsreid predict` with re-ID enabled)")
    rows = [_ratios({"sequence": seq, **evaluate_sequence(root, seq, read_report(folder.reid_report(seq)))})
            for seq in names]
    counts = [k for k in COLUMNS[1:] if k not in ("recall", "precision")]
    rows.append(_ratios({"sequence": "TOTAL", **{k: sum(r[k] for r in rows) for k in counts}}))
    width = max(len(r["sequence"]) for r in rows)
    print(f"{'sequence':<{width}}  " + "  ".join(f"{c:>14}" for c in COLUMNS[1:]))
    for r in rows:
        print(f"{r['sequence']:<{width}}  " + "  ".join(
            f"{r[c]:>14.3f}" if isinstance(r[c], float) else f"{r[c]:>14d}" for c in COLUMNS[1:]))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in r.items()})
    atomic_write_bytes(results / "reid_results.csv", buf.getvalue().encode())
    print(f"-> {results / 'reid_results.csv'}")
    return 0
