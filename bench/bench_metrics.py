"""Time vsreid's J & F (``jaccard_and_boundary``) against the per-frame reference transcription on the same masks.

Masks: 3 real DAVIS val sequences (854x480) with perturbed predictions when the shared data is present
(``$VSREID_SHARED_DATA`` or ``../shared/data``), synthetic 854x480 ellipses otherwise; plus one synthetic case with
objects covering most of the frame (the least favourable case for vsreid's bounding-box cropping).
Each side runs ``--rounds`` times, interleaved; the best round counts. Target: vsreid >= 5x faster on the first
(typical DAVIS) case.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import davis_reference as ref  # noqa: E402
from vsreid.metrics.measures import jaccard_and_boundary  # noqa: E402

SEQUENCES = ("car-shadow", "libby", "scooter-black")


def perturb(gt: np.ndarray) -> np.ndarray:
    """Binary (T, H, W) prediction: erosion, dilation, shift, emptied frame, unchanged, in turn."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    pred = gt.astype(np.uint8)
    for t in range(len(pred)):
        case = t % 5
        if case == 0:
            pred[t] = cv2.erode(pred[t], kernel)
        elif case == 1:
            pred[t] = cv2.dilate(pred[t], kernel)
        elif case == 2:
            pred[t] = np.roll(pred[t], (6, -11), axis=(0, 1))
        elif case == 3:
            pred[t] = 0
    return pred.astype(bool)


def synthetic(frames: int, scale: float, seed: int) -> np.ndarray:
    """(T, 480, 854) bool: one ellipse moving and turning, semi-axes ``scale`` times the frame size."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((frames, 480, 854), np.uint8)
    for t in range(frames):
        centre = (int(427 + 40 * np.sin(t / 7) + rng.integers(-3, 4)), int(240 + 20 * np.cos(t / 5)))
        cv2.ellipse(masks[t], centre, (int(scale * 854), int(scale * 480)), 3.0 * t, 0, 360, 1, -1)
    return masks.astype(bool)


def load_cases() -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    data = Path(os.environ.get("VSREID_SHARED_DATA", REPO.parent / "shared" / "data")) / "davis2016-val-subset"
    if data.is_dir():
        from vsreid.data.davis import DavisRoot

        root = DavisRoot(data)
        gts = [root.read_annotations(s) == 1 for s in SEQUENCES]
        typical = "real DAVIS val: " + ", ".join(f"{s} ({len(g)})" for s, g in zip(SEQUENCES, gts))
    else:
        gts = [synthetic(n, 0.15, seed) for seed, n in enumerate((40, 49, 43))]
        typical = "synthetic (shared data absent): 3 sequences, ellipses ~15% of the frame"
    large = [synthetic(40, 0.45, 7)]
    return {typical: [(perturb(g), g) for g in gts],
            "synthetic large objects (~60% of the frame), 40 frames": [(perturb(g), g) for g in large]}


def run_reference(case):
    return [(np.array([ref.jaccard(p, g) for p, g in zip(pred, gt)]),
             np.array([ref.f_measure(p, g) for p, g in zip(pred, gt)])) for pred, gt in case]


def run_vsreid(case):
    return [jaccard_and_boundary(pred, gt) for pred, gt in case]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores ({affinity} usable), "
          f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, opencv {cv2.__version__} "
          f"({cv2.getNumThreads()} threads); target: speed-up >= 5x on the typical DAVIS case")
    for name, case in load_cases().items():
        frames = sum(len(gt) for _, gt in case)
        best = {"reference": np.inf, "vsreid": np.inf}
        outputs = {}
        for _ in range(args.rounds):
            for side, fn in (("reference", run_reference), ("vsreid", run_vsreid)):
                start = time.perf_counter()
                outputs[side] = fn(case)
                best[side] = min(best[side], time.perf_counter() - start)
        diff = max(np.abs(a - b).max() for r, v in zip(outputs["reference"], outputs["vsreid"]) for a, b in zip(r, v))
        print(f"\n{name}: {frames} frames, 854x480, J and F per frame")
        for side in best:
            print(f"  {side:<10} {best[side]:7.3f} s  {1e3 * best[side] / frames:6.2f} ms/frame")
        print(f"  speed-up   {best['reference'] / best['vsreid']:.1f}x, max |difference| {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
