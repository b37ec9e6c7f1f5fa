"""Evaluate re-ID against the ground truth, and say where it fails.

Reads DIR/<seq>/reid.json (written by `vsreid predict` with re-ID), the draft DIR/draft/<seq>/ and final DIR/<seq>/
id maps, and the DAVIS annotations. Frames without an annotation are skipped. In the order re-ID can fail:

1. Lost detected. ``off`` = (frame, object) pairs of frames 1..T-2 where the draft (forward pass alone) is off the
   object: the object is absent from the ground truth, or the draft has no mask for it (``off_empty``), or less than
   half of the draft mask lies on it; such a mask lies mostly on the background (``off_bg``, which includes unlabelled
   look-alikes) or on another labelled object (``off_obj``). ``lost_detected`` = fraction of ``off`` pairs re-ID
   marked lost (reid.json "lost": draft empty, or dropped as drifted); ``drift_caught`` = the same fraction over the
   pairs with a drifted mask (off_bg + off_obj) only; ``false_lost`` counts pairs marked lost whose draft mask was
   mostly on the object.
2. Candidate recall. Over the pairs marked lost: "correctly lost" counts those where the object is truly absent;
   over the others (``lost_in_gt``), recall = fraction with a candidate box (top 5 by score) of IoU >= 0.5 with the
   tight ground-truth box; ``recall_top1`` = the best-scored candidate is that box; ``recall_accept`` = it is, and
   scores above the recovery threshold (reid.json "score_threshold", default 0.5), so the recovery loop may take it;
   ``recall_centre`` = a candidate's box centre lies inside the tight ground-truth box (the right object, even when
   the box's shape is off).
3. Precision = fraction of accepted recoveries whose box has IoU >= 0.5 with the object's ground-truth box; a wrong
   box on another labelled object's box (IoU >= 0.5) counts in ``wrong_on_obj``; ``precision_centre`` = fraction
   whose box centre lies inside the object's tight ground-truth box.
4. Re-initialisation: ``reinit_iou`` = mean mask IoU, on each recovery's frame, of the final mask of the object with
   the ground truth (0 when the object is absent there); ``reinit_iou_correct`` the same over correct recoveries.

Prints a per-sequence table and writes DIR/reid_results.csv. Without a draft folder the breakdown columns of step 1 are
left empty (NaN); without final id maps, those of step 4.
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
from vsreid.data.labels import read_labels
from vsreid.data.results import ResultsFolder
from vsreid.engine.reid.recovery import RecoveryConfig

IOU_THRESHOLD = 0.5
COUNTS = ("off", "off_empty", "off_bg", "off_obj", "off_marked", "drifted", "drifted_marked", "false_lost",
          "lost", "lost_in_gt", "recalled", "recalled_top1", "recalled_accept", "recalled_centre", "correctly_lost",
          "recoveries", "correct", "wrong_on_obj", "correct_centre",
          "reinit_frames", "reinit_iou_sum", "reinit_iou_correct_sum")
RATIOS = {"lost_detected": ("off_marked", "off"), "drift_caught": ("drifted_marked", "drifted"),
          "recall": ("recalled", "lost_in_gt"), "recall_top1": ("recalled_top1", "lost_in_gt"),
          "recall_accept": ("recalled_accept", "lost_in_gt"), "recall_centre": ("recalled_centre", "lost_in_gt"),
          "precision": ("correct", "recoveries"), "precision_centre": ("correct_centre", "recoveries"),
          "reinit_iou": ("reinit_iou_sum", "reinit_frames"),
          "reinit_iou_correct": ("reinit_iou_correct_sum", "correct")}
COLUMNS = ("sequence", "off", "off_empty", "off_bg", "off_obj", "lost_detected", "drift_caught", "false_lost",
           "lost", "lost_in_gt", "recalled", "recall", "recall_top1", "recall_accept", "recall_centre",
           "correctly_lost", "recoveries", "correct", "wrong_on_obj", "precision", "precision_centre", "reinit_iou",
           "reinit_iou_correct")


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


class _IdMaps:
    """Id maps (H, W) uint8 of one sequence's frames in one folder, read per frame on demand; None where the frame has
    no file there. ``box`` gives the tight box of an object: (x1, y1, x2, y2), () when absent, None when unread."""

    def __init__(self, folder: Path, stems: list[str], present: set[str] | None = None):
        self.folder, self.stems = folder, stems
        self.present = {p.stem for p in folder.glob("*.png")} if present is None else present
        self._labels: dict[int, np.ndarray | None] = {}

    def __bool__(self) -> bool:
        return bool(self.present)

    def labels(self, t: int) -> np.ndarray | None:
        if t not in self._labels:
            stem = self.stems[t] if 0 <= t < len(self.stems) else None
            self._labels[t] = read_labels(self.folder / f"{stem}.png") if stem in self.present else None
        return self._labels[t]

    def box(self, t: int, object_id: int):
        labels = self.labels(t)
        if labels is None:
            return None
        mask = labels == object_id
        return object_box(mask, box_enlargement=0.0) if mask.any() else ()


def _centre_inside(box, truth) -> bool:
    """Whether the centre of ``box`` (x1, y1, x2, y2) lies inside the box ``truth``."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return truth[0] <= cx < truth[2] and truth[1] <= cy < truth[3]


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def evaluate_sequence(root: DavisRoot, seq: str, report: dict, results: Path | None = None) -> dict:
    """Counts of one sequence (the CSV row without the ratios); ``results`` is the prediction folder holding the draft
    and final id maps (without it, the lost-detected and re-initialisation counts stay 0)."""
    stems = root.frame_stems(seq)
    gt = _IdMaps(root.annotations_dir / seq, stems, set(root.annotated_stems(seq)))
    folder = ResultsFolder(results) if results is not None else None
    draft = _IdMaps(folder.draft_dir(seq), stems) if folder else None
    final = _IdMaps(folder.sequence_dir(seq), stems) if folder else None
    threshold = report.get("score_threshold")
    threshold = RecoveryConfig().score_threshold if threshold is None else threshold
    row = dict.fromkeys(COUNTS, 0)
    marked = {(int(t), int(oid)) for t, oid in report["lost"]}
    ids = [int(i) for i in report.get("object_ids", sorted({oid for _, oid in marked}))]
    if draft:
        for t in range(1, len(stems) - 1):
            truth, guess = gt.labels(t), draft.labels(t)
            if truth is None or guess is None:
                continue
            for oid in ids:
                mask, on = guess == oid, truth == oid
                size = np.count_nonzero(mask)
                off = not on.any() or size == 0 or np.count_nonzero(mask & on) < 0.5 * size
                if not off:
                    row["false_lost"] += (t, oid) in marked
                    continue
                row["off"] += 1
                row["off_marked"] += (t, oid) in marked
                if size == 0:
                    row["off_empty"] += 1
                    continue
                row["drifted"] += 1
                row["drifted_marked"] += (t, oid) in marked
                under = truth[mask & ~on]
                row["off_obj" if np.count_nonzero((under > 0) & (under != 255)) > 0.5 * size else "off_bg"] += 1
    for t, oid in sorted(marked):
        box = gt.box(t, oid)
        if box is None:
            continue
        row["lost"] += 1
        if not box:
            row["correctly_lost"] += 1
            continue
        row["lost_in_gt"] += 1
        cands = report["candidates"].get(f"{t}:{oid}", [])
        right = [box_iou(c[:4], box) >= IOU_THRESHOLD for c in cands]
        best = int(np.argmax([c[4] for c in cands])) if cands else None
        row["recalled"] += any(right)
        row["recalled_top1"] += best is not None and right[best]
        row["recalled_accept"] += best is not None and right[best] and cands[best][4] > threshold
        row["recalled_centre"] += any(_centre_inside(c[:4], box) for c in cands)
    for rec in report["recoveries"]:
        t, oid = rec["frame"], rec["object_id"]
        box = gt.box(t, oid)
        if box is None:
            continue
        row["recoveries"] += 1
        correct = bool(box) and box_iou(rec["box"], box) >= IOU_THRESHOLD
        row["correct"] += correct
        row["correct_centre"] += bool(box) and _centre_inside(rec["box"], box)
        if not correct:
            others = [gt.box(t, o) for o in ids if o != oid]
            row["wrong_on_obj"] += any(b and box_iou(rec["box"], b) >= IOU_THRESHOLD for b in others)
        labels = final.labels(t) if final else None
        if labels is not None:
            iou = _mask_iou(labels == oid, gt.labels(t) == oid) if box else 0.0
            row["reinit_frames"] += 1
            row["reinit_iou_sum"] += iou
            row["reinit_iou_correct_sum"] += iou if correct else 0.0
    if not draft:
        for key in ("off", "off_empty", "off_bg", "off_obj", "false_lost"):
            row[key] = float("nan")
    return row


def _ratios(row: dict) -> dict:
    for name, (num, den) in RATIOS.items():
        row[name] = row[num] / row[den] if row[den] else float("nan")
    return row


def score_reports(root: DavisRoot, results: Path, names: list[str]) -> list[dict]:
    """The CSV rows (counts and ratios) of sequences ``names`` of results folder ``results``, then their TOTAL row."""
    folder = ResultsFolder(results)
    rows = [_ratios({"sequence": seq, **evaluate_sequence(root, seq, read_report(folder.reid_report(seq)), results)})
            for seq in names]
    rows.append(_ratios({"sequence": "TOTAL", **{k: sum(r[k] for r in rows) for k in COUNTS}}))
    return rows


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
    rows = score_reports(root, results, names)
    width = max(len(r["sequence"]) for r in rows)
    for title, keys in (("1 lost detected", COLUMNS[1:8]), ("2 candidate recall", COLUMNS[8:16]),
                        ("3 precision, 4 re-initialisation", COLUMNS[16:])):
        print(f"{title}\n{'sequence':<{width}}  " + "  ".join(f"{c:>{max(len(c), 9)}}" for c in keys))
        for r in rows:
            print(f"{r['sequence']:<{width}}  " + "  ".join(
                f"{r[c]:>{max(len(c), 9)}.3f}" if isinstance(r[c], float) else f"{r[c]:>{max(len(c), 9)}d}"
                for c in keys))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in r.items()})
    atomic_write_bytes(results / "reid_results.csv", buf.getvalue().encode())
    print(f"-> {results / 'reid_results.csv'}")
    return 0
