"""Speed ratios of the inference path in one process (issue 19): box means, warp, the Lite network, start-up.

Each pair of sides runs ``--rounds`` times, interleaved; the median round counts. All inputs come from the bundled
car-shadow sample (854x480): frames 10 and 11 with DIS flows both ways, and 3 objects (the car and two shifted copies).

- Box means at inference, OpenCV running sums (``running_box_mean``) against separable ``avg_pool2d``, on the shapes
  the Lite network uses (batches of 4 crops of 321 px and their mirrors): band gate radii 10 and 30, the whole guided
  filter (radius 5), and one full frame.
- Warp + consistency with 3 objects against the original's ``get_warp_label`` (transcribed below in this bench's own
  words: float64 positions, exact bilinear weights, numpy gathers): the paper config's step (shared positions and the
  probabilities) and the Lite network's (also the photometric residual over the objects' window).
- The shipped Lite network (``checkpoints/vsreid_lite0.pt``): object-frames/s with flip for a batch of 4 crops of
  321 px, with running-sum box means against ``avg_pool2d`` ones.
- ``vsreid --help`` wall time in a fresh interpreter (target < 1 s).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch

from vsreid.data.crops import boxes_from_labels, crop_resize
from vsreid.data.flow import DISFlow
from vsreid.data.labels import read_frame, read_labels
from vsreid.data.warp import RESIDUAL_REACH, photometric_residual, warp_grid
from vsreid.engine.predictor import PatchPredictor
from vsreid.models import box
from vsreid.models.checkpoints import load_network
from vsreid.models.guided import GuidedFilter

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "samples"
WEIGHTS = REPO / "checkpoints" / "vsreid_lite0.pt"
SEQ, FRAME, CROP, CROPS = "car-shadow", 10, 321, 4


def original_warp(values: np.ndarray, flow_to_source: np.ndarray, flow_from_source: np.ndarray,
                  max_error: float = 100.0) -> np.ndarray:
    """The original VS-ReID warp as its ``get_warp_label`` computes it (same arithmetic, float64 positions): values
    (H, W, C) from the source frame onto the target grid, 0 where the forward-backward check fails."""
    h, w = values.shape[:2]
    rows, cols = np.indices((h, w))
    y, x = rows + flow_to_source[..., 1], cols + flow_to_source[..., 0]
    top, left = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    keep = (top >= 0) & (top < h - 1) & (left >= 0) & (left < w - 1)
    corner_y = np.stack([top, top, top + 1, top + 1], -1).clip(0, h - 1)
    corner_x = np.stack([left, left + 1, left, left + 1], -1).clip(0, w - 1)
    weights = np.abs((1 - np.abs(corner_y - y[..., None])) * (1 - np.abs(corner_x - x[..., None])))
    back = sum(weights[..., k, None] * flow_from_source[corner_y[..., k], corner_x[..., k]] for k in range(4))
    keep &= np.linalg.norm(back + np.stack([x, y], -1) - np.stack([cols, rows], -1), axis=2) < max_error
    ry = rows + (flow_to_source[..., 1] - back[..., 1]) / 2
    rx = cols + (flow_to_source[..., 0] - back[..., 0]) / 2
    keep &= (ry >= 0) & (ry < h - 1) & (rx >= 0) & (rx < w - 1)
    out = np.zeros_like(values)
    out[keep] = values[ry[keep].round().astype(np.int64), rx[keep].round().astype(np.int64)]
    return out


@contextmanager
def pooled_box_means():
    """Inside, :func:`vsreid.models.box.box_mean` takes the ``avg_pool2d`` path at inference too (as before issue 19)."""
    running = box.running_box_mean
    box.running_box_mean = box.pooled_box_mean
    try:
        yield
    finally:
        box.running_box_mean = running


def load_step() -> dict:
    """Frames 10 -> 11 of the sample with DIS flows both ways, the combined probability (4, H, W) float32 of 3 objects
    on frame 10, and the objects' boxes on frame 11."""
    frames = [read_frame(SAMPLE / "JPEGImages" / "480p" / SEQ / f"{t:05d}.jpg") for t in (FRAME, FRAME + 1)]
    dis = DISFlow()
    to_source, from_source = dis(frames[1], frames[0]), dis(frames[0], frames[1])
    car = cv2.GaussianBlur((read_labels(SAMPLE / "Annotations" / "480p" / SEQ / f"{FRAME:05d}.png") > 0)
                           .astype(np.float32), (0, 0), 2)
    fg = np.stack([car, np.roll(car, (-120, 0), (0, 1)), np.roll(car, (60, -300), (0, 1))])
    fg = np.minimum(fg, 0.99)
    combined = np.concatenate([np.prod(1 - fg, 0, keepdims=True), fg])
    combined /= combined.sum(0, keepdims=True)
    labels = original_warp(combined.transpose(1, 2, 0), to_source, from_source).argmax(2)
    return {"frames": frames, "to": to_source, "from": from_source, "combined": combined,
            "boxes": boxes_from_labels(labels, (1, 2, 3), 0.15)}


def residual_window(boxes: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The propagator's residual window: the objects' boxes, widened by the blur's reach, inside the frame."""
    h, w = shape
    return (max(int(boxes[:, 0].min()) - RESIDUAL_REACH, 0), max(int(boxes[:, 1].min()) - RESIDUAL_REACH, 0),
            min(int(boxes[:, 2].max()) + RESIDUAL_REACH, w), min(int(boxes[:, 3].max()) + RESIDUAL_REACH, h))


def compare(name: str, sides: dict, rounds: int, unit: str = "ms", per: float | None = None) -> dict:
    """Run the sides ``rounds`` times interleaved; print each one's median and its ratio to the first side."""
    times, outputs = {k: [] for k in sides}, {}
    for r in range(rounds):
        for k in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            start = time.perf_counter()
            outputs[k] = sides[k]()
            times[k].append(time.perf_counter() - start)
    medians = {k: float(np.median(v)) for k, v in times.items()}
    base = next(iter(sides))
    print(f"\n{name}")
    for k, m in medians.items():
        rate = f"  {per / m:6.2f} object-frames/s" if per else ""
        print(f"  {k:<44} {1e3 * m:9.1f} ms{rate}  x{medians[base] / m:.1f} vs {base}")
    return outputs


def bench_box_means(rounds: int) -> None:
    torch.manual_seed(0)
    prior = (torch.nn.functional.avg_pool2d(torch.rand(2 * CROPS, 1, CROP, CROP), 31, 1, 15) > 0.5).float()
    guide, frame = torch.rand(2 * CROPS, 3, CROP, CROP), torch.rand(1, 1, 480, 854)
    cases = [(f"band gate blur r=10 on ({2 * CROPS},1,{CROP},{CROP})", prior, 10),
             (f"band gate blur r=30 on ({2 * CROPS},1,{CROP},{CROP})", prior, 30),
             ("box mean r=10 on (1,1,480,854)", frame, 10)]
    with torch.inference_mode():
        for name, x, r in cases:
            out = compare(name, {"avg_pool2d": lambda: box.pooled_box_mean(x, r),
                                 "running sums": lambda: box.running_box_mean(x, r)}, rounds)
            print(f"  max |difference| {(out['avg_pool2d'] - out['running sums']).abs().max().item():.1e}")
        guided = GuidedFilter(5)

        def pooled_guided():
            with pooled_box_means():
                return guided(guide, prior)
        out = compare(f"guided filter r=5 on {2 * CROPS} crops of {CROP}",
                      {"avg_pool2d": pooled_guided, "running sums": lambda: guided(guide, prior)}, rounds)
        print(f"  max |difference| {(out['avg_pool2d'] - out['running sums']).abs().max().item():.1e}")


def bench_warp(step: dict, rounds: int) -> None:
    to_source, from_source, combined = step["to"], step["from"], step["combined"]
    window = residual_window(step["boxes"], combined.shape[1:])

    def paper():
        return warp_grid(to_source, from_source).pull(combined.transpose(1, 2, 0))

    def lite():
        grid = warp_grid(to_source, from_source)
        return grid.pull(combined.transpose(1, 2, 0)), photometric_residual(*step["frames"][::-1], grid, window)

    out = compare("warp + consistency, 854x480, 3 objects (4 channels)",
                  {"original get_warp_label": lambda: original_warp(combined.transpose(1, 2, 0), to_source,
                                                                    from_source),
                   "vsreid, paper network (no residual)": paper,
                   "vsreid, Lite network (+ residual)": lite}, rounds)
    differ = (out["original get_warp_label"] != out["vsreid, paper network (no residual)"]).any(2).mean()
    print(f"  pixels whose warped value differs from the original's: {100 * differ:.3f} % "
          f"(flow sampled at 1/32 px by cv2.remap)")


def bench_network(step: dict, rounds: int) -> None:
    net = load_network(WEIGHTS)
    boxes = step["boxes"]
    boxes = np.concatenate([boxes, boxes[:1]])[:CROPS]  # 4 crops: the 3 objects and the first again
    frame, prior = step["frames"][1], step["combined"].transpose(1, 2, 0)
    grid = warp_grid(step["to"], step["from"])
    warped, residual = grid.pull(prior), photometric_residual(frame, step["frames"][0], grid)
    crops = (np.stack([crop_resize(frame.astype(np.float32), b, CROP) for b in boxes]),
             np.stack([crop_resize(step["to"], b, CROP) for b in boxes]),
             np.stack([crop_resize(np.ascontiguousarray(warped[..., 1 + k % 3]), b, CROP)
                       for k, b in enumerate(boxes)]),
             np.stack([crop_resize(residual, b, CROP) for b in boxes]))
    predictor = PatchPredictor(net, flip=True, batch_size=CROPS)

    def pooled():
        with pooled_box_means():
            return predictor(*crops)

    print(f"\nLite network: {WEIGHTS.name}, {torch.get_num_threads()} torch threads")
    out = compare(f"Lite forward with flip, {CROPS} crops of {CROP} px ({2 * CROPS} network crops)",
                  {"avg_pool2d box means": pooled, "running-sum box means": lambda: predictor(*crops)}, rounds,
                  per=CROPS)
    print(f"  max |difference| of P(fg) {np.abs(out['avg_pool2d box means'] - out['running-sum box means']).max():.1e}")


def bench_help(rounds: int) -> None:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vsreid", "--help"], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    print(f"\nvsreid --help (fresh interpreter): median {np.median(times):.2f} s of {rounds}; target < 1 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per comparison (median counts)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    print(f"machine: {os.cpu_count()} cores, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), opencv {cv2.__version__} "
          f"({cv2.getNumThreads()} threads); median of {args.rounds} interleaved rounds")
    step = load_step()
    bench_box_means(args.rounds)
    bench_warp(step, args.rounds)
    bench_network(step, args.rounds)
    bench_help(args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
