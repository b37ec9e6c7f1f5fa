"""Wall clock of ``vsreid evaluate`` against the official DAVIS 2017 toolkit on the bundled 2 sequences (issue 19).

Both tools score the same masks: the bench builds, in a temporary folder, a DAVIS-2017-layout root (symlinks to the
bundled car-shadow and libby, ``ImageSets/2017/val.txt`` listing them) and a results folder of perturbed ground truth
(per frame in turn: eroded, dilated, shifted, emptied, unchanged), written as palette PNGs like DAVIS results.
Each command runs in a fresh interpreter (subprocess, wall clock, start-up and imports included):

- vsreid: ``python -m vsreid evaluate --davis-root ROOT --results RES --split val --no-progress``
- official: ``OFFICIAL_PYTHON OFFICIAL/evaluation_method.py --task semi-supervised --results_path RES
  --davis_path ROOT``, the checkout of ``davis2017-evaluation`` given by ``--official`` run with the interpreter
  given by ``--official-python`` (its own environment: numpy, scipy, pandas, scikit-image, OpenCV, Pillow, tqdm).
  Without both options the official side is skipped and vsreid is still timed.

The official script re-reads its CSVs when they exist in the results folder, and both tools write the same two CSV
names there, so they are deleted before every run. One untimed warm-up run per side, then ``--rounds`` interleaved
rounds (the order alternates); the median round counts. The J&F-Mean each tool writes (CSV, 3 decimals) must agree
to 0.1 point (0.001); the bench also says whether the two tools' CSVs are byte-identical. Also timed, the same way:
``import vsreid.cli, vsreid.commands.evaluate`` (what the command imports before it reads a frame) and a bare
interpreter. Target: official / vsreid >= 3x.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from vsreid.data.labels import read_labels, write_labels

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "samples"
SEQUENCES = ("car-shadow", "libby")
SPLIT = "val"
CSVS = (f"global_results-{SPLIT}.csv", f"per-sequence_results-{SPLIT}.csv")
TOLERANCE = 1e-3


def build_root(tmp: Path) -> Path:
    """A DAVIS 2017 root of symlinks to the bundled sequences, with the split file the official toolkit needs."""
    root = tmp / "DAVIS"
    for kind in ("JPEGImages", "Annotations"):
        (root / kind / "480p").mkdir(parents=True)
        for seq in SEQUENCES:
            (root / kind / "480p" / seq).symlink_to(SAMPLE / kind / "480p" / seq, target_is_directory=True)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / f"{SPLIT}.txt").write_text("".join(f"{seq}\n" for seq in SEQUENCES))
    return root


def perturb(labels: np.ndarray, t: int) -> np.ndarray:
    """Frame ``t``'s id map changed by case ``t % 5``: eroded, dilated, shifted, emptied, unchanged."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    case = t % 5
    if case == 0:
        return cv2.erode(labels, kernel)
    if case == 1:
        return cv2.dilate(labels, kernel)
    if case == 2:
        return np.roll(labels, (6, -11), axis=(0, 1))
    if case == 3:
        return np.zeros_like(labels)
    return labels.copy()


def build_results(root: Path, tmp: Path) -> Path:
    """``RES/<seq>/<frame>.png`` for every annotated frame: the perturbed ground truth as palette PNGs."""
    results = tmp / "results"
    for seq in SEQUENCES:
        for t, path in enumerate(sorted((root / "Annotations" / "480p" / seq).glob("*.png"))):
            write_labels(results / seq / path.name, perturb(read_labels(path), t))
    return results


def clear_csvs(results: Path) -> None:
    for name in CSVS:
        (results / name).unlink(missing_ok=True)


def read_csvs(results: Path) -> tuple[float, str]:
    """J&F-Mean of the global CSV a tool just wrote, and the text of both CSVs."""
    with open(results / CSVS[0], newline="") as f:
        jf = float(next(csv.DictReader(f))["J&F-Mean"])
    return jf, "".join((results / name).read_text() for name in CSVS)


def run_timed(command: list[str], cwd: Path) -> tuple[float, str]:
    """Wall seconds of ``command`` in a fresh process and its stdout; raises with its output when it fails."""
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return seconds, proc.stdout


def evaluate_once(command: list[str], results: Path, cwd: Path) -> tuple[float, tuple[float, str]]:
    """(wall seconds, (J&F-Mean, CSV text)) of one evaluation from a results folder without CSVs."""
    clear_csvs(results)
    seconds, stdout = run_timed(command, cwd)
    if not all((results / name).is_file() for name in CSVS):  # the official script exits with 0 on bad results
        raise RuntimeError(f"{' '.join(command)} did not write {' and '.join(CSVS)}:\n{stdout}")
    return seconds, read_csvs(results)


def commands(args: argparse.Namespace, root: Path, results: Path) -> dict[str, list[str]]:
    """The timed evaluation commands, the official one only when its checkout and interpreter are given."""
    sides = {"vsreid": [sys.executable, "-m", "vsreid", "evaluate", "--davis-root", str(root), "--results",
                        str(results), "--split", SPLIT, "--no-progress"]}
    if args.official and args.official_python:
        sides["official"] = [args.official_python, str(Path(args.official) / "evaluation_method.py"), "--task",
                             "semi-supervised", "--results_path", str(results), "--davis_path", str(root)]
    return sides


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", metavar="DIR", help="checkout of davis2017-evaluation (evaluation_method.py)")
    parser.add_argument("--official-python", metavar="PYTHON", help="interpreter with the official toolkit's needs")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores ({affinity} usable), "
          f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}; OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")
    with tempfile.TemporaryDirectory(prefix="bench_evaluate_") as tmp:
        tmp = Path(tmp)
        root = build_root(tmp)
        results = build_results(root, tmp)
        frames = sum(len(list((root / "Annotations" / "480p" / s).glob("*.png"))) for s in SEQUENCES)
        print(f"data: {', '.join(SEQUENCES)} ({frames} frames, {frames - 2 * len(SEQUENCES)} scored), 854x480, "
              f"1 object each; results: perturbed ground truth")
        sides = commands(args, root, results)
        if "official" not in sides:
            print("official: skipped: give --official DIR and --official-python PYTHON to time the DAVIS toolkit")
        imports = {"vsreid imports": [sys.executable, "-c", "import vsreid.cli, vsreid.commands.evaluate"],
                   "bare interpreter": [sys.executable, "-c", "pass"]}
        times: dict[str, list[float]] = {name: [] for name in [*sides, *imports]}
        scores: dict[str, tuple[float, str]] = {}
        for name, command in sides.items():  # warm-up: file cache, .pyc files; checks that each side runs
            scores[name] = evaluate_once(command, results, tmp)[1]
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(sides)[::-1]
            for name in order:
                seconds, scores[name] = evaluate_once(sides[name], results, tmp)
                times[name].append(seconds)
            for name, command in imports.items():
                times[name].append(run_timed(command, tmp)[0])
        clear_csvs(results)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\nwall clock, fresh interpreter, median of {args.rounds} interleaved rounds:")
    for name, values in times.items():
        rounds = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:<17} {median[name]:6.2f} s   (rounds: {rounds})")
    print("\nJ&F-Mean: " + ", ".join(f"{name} {jf:.3f}" for name, (jf, _) in scores.items()))
    if "official" not in sides:
        return 0
    ratio = median["official"] / median["vsreid"]
    agree = abs(scores["official"][0] - scores["vsreid"][0]) <= TOLERANCE
    print(f"speed-up official / vsreid: {ratio:.2f}x (target >= 3x: {'met' if ratio >= 3 else 'NOT met'})")
    print(f"J&F agreement within {TOLERANCE}: {'yes' if agree else 'NO'}; both CSVs byte-identical: "
          f"{'yes' if scores['official'][1] == scores['vsreid'][1] else 'no'}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
