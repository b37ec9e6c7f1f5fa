"""Score result PNGs with the DAVIS 2017 semi-supervised protocol (J & F); writes the official toolkit's CSVs.

Results are <results>/<sequence>/<frame>.png id maps (palette or grayscale PNG), one per ground-truth frame; the
first and last frames are not scored. Statistics are per object; the global numbers are means over objects.
"""
from __future__ import annotations

import argparse

from vsreid.commands import add_split_argument
from vsreid.metrics.evaluation import evaluate_results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--davis-root", required=True, help="DAVIS root (JPEGImages/480p, Annotations/480p, ImageSets)")
    parser.add_argument("--results", required=True, help="folder of <sequence>/<frame>.png results; CSVs go here")
    which = parser.add_mutually_exclusive_group(required=True)
    add_split_argument(which, "split file ImageSets/2017/<NAME>.txt; NAME also names the CSVs")
    which.add_argument("--sequences", nargs="+", metavar="SEQ", help="sequences to score (CSVs named 'custom')")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    result = evaluate_results(args.davis_root, args.results, split=args.split, sequences=args.sequences,
                              progress=not args.no_progress)
    print(result.format())
    print(f"\nGlobal results saved in {result.global_csv}")
    print(f"Per-object results saved in {result.per_sequence_csv}")
    return 0
