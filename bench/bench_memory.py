"""Peak memory of the whole method on a 100-frame, 5-object 480p sequence (target: at most 1.5 GB).

Runs the shipped CPU model with its recorded settings (online finetuning, flow preset, re-ID) on a generated
sequence, and prints peak resident memory next to what the original code's full-frame float64 state alone would need
for the same sequence. ``--finetune-steps 0`` measures without finetuning.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from vsreid.data.labels import read_labels, write_frame, write_labels
from vsreid.engine import Segmenter

WEIGHTS = Path(__file__).resolve().parents[1] / "checkpoints" / "vsreid_lite0.pt"
T, H, W, N = 100, 480, 854, 5


def make_sequence(root: Path) -> None:
    """Five striped discs of distinct colours crossing a smooth, scrolling background; one leaves the frame for 20
    frames and comes back (so the re-ID recovery has work to do)."""
    rng = np.random.default_rng(0)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (H, W + 200, 3)).astype(np.float32), (0, 0), 20)
    background = np.clip(128 + 25 * noise / noise.std(), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[-60:60, -60:60]
    textures = []
    for i in range(N):
        hsv = np.zeros((120, 120, 3), np.uint8)
        hsv[..., 0] = 36 * i  # OpenCV hue 0-179
        hsv[..., 1] = 200
        hsv[..., 2] = (170 + 60 * np.sin((xx * np.cos(i) + yy * np.sin(i)) / (4 + i))).astype(np.uint8)
        textures.append(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))
    for t in range(T):
        frame = background[:, t:t + W].copy()
        labels = np.zeros((H, W), np.uint8)
        for i in range(N):
            cx = int(100 + 150 * i + 40 * np.sin(t / 9 + i)) + (600 if i == 4 and 40 <= t < 60 else 0)
            cy = int(120 + 60 * (i % 3) + 30 * np.cos(t / 7 + i))
            mask = np.zeros((H, W), np.uint8)
            cv2.circle(mask, (cx, cy), 45, 1, -1)
            ys, xs = np.nonzero(mask)
            frame[ys, xs] = textures[i][ys - cy + 60, xs - cx + 60]
            labels[mask > 0] = i + 1
        write_frame(root / "JPEGImages/480p/bench" / f"{t:05d}.jpg", frame)
        if t == 0:
            write_labels(root / "Annotations/480p/bench/00000.png", labels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finetune-steps", type=int, default=None, help="default: the shipped settings'")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_sequence(root)
        segmenter = Segmenter.from_pretrained(WEIGHTS)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        start = time.time()
        state = segmenter.init_state(root / "JPEGImages/480p/bench", work_dir=root / "work")
        segmenter.add_mask(state, 0, read_labels(root / "Annotations/480p/bench/00000.png"))
        for _ in segmenter.propagate(state, finetune_steps=args.finetune_steps, reid=True):
            pass
        result = state.result
        seconds = time.time() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GiB
    original_state = T * H * W * 2 * N * 8 / 2**30
    print(f"machine: {os.cpu_count()} cores; torch {torch.__version__}; weights: {WEIGHTS.name}")
    steps = segmenter.settings.finetune_steps if args.finetune_steps is None else args.finetune_steps
    print(f"sequence: {T} frames, {N} objects, {W}x{H}; flow {segmenter.flow_preset}, {steps} finetuning steps "
          f"(scope {segmenter.settings.finetune_scope}), forward pass + re-ID in {seconds:.0f} s "
          f"({len(result.log.recoveries)} recoveries, {len(result.log.drifted)} drifted predictions dropped)")
    print(f"peak resident memory: {peak:.2f} GiB (after imports and model: {before:.2f} GiB); target <= 1.5 GB")
    print(f"the original's float64 state for this sequence alone: {original_state:.2f} GiB "
          f"(ratio original / vsreid peak: {original_state / peak:.1f}x)")
    return 0 if peak * 2**30 <= 1.5e9 else 1


if __name__ == "__main__":
    sys.exit(main())
