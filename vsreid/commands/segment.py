"""Segment a video or a folder of frames from one annotated frame: masks, an overlay video and a summary.

  vsreid segment clip.mp4 --mask first.png --output out

MASK is an id map of frame --mask-frame (default 0): a palette or grayscale PNG, 0 = background, 1..N the objects
(255 = void), at the video's size or any size of the same aspect ratio. Frames taller than --height rows are
processed at that height (the model was trained at 480p) and the masks scaled back. Writes OUT/masks/NNNNN.png (id
maps at the input's size, frames before --mask-frame empty), OUT/overlay.mp4 (objects tinted with the DAVIS colours
and outlined), OUT/summary.json, and prints a summary.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from vsreid.data.atomic import atomic_write_bytes
from vsreid.data.davis import frame_files
from vsreid.data.errors import DataError
from vsreid.data.labels import VOID, overlay, read_frame, read_labels, write_labels
from vsreid.data.video import read_video, video_fps, write_video
from vsreid.engine.api import Segmenter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="a video file (MP4, AVI, MOV, ...) or a folder of frame images")
    parser.add_argument("--mask", required=True, type=Path, help="id map PNG of the annotated frame")
    parser.add_argument("--mask-frame", type=int, default=0, help="index of the annotated frame (default 0)")
    parser.add_argument("--output", required=True, type=Path, help="folder for masks/, overlay.mp4, summary.json")
    parser.add_argument("--weights", default="lite0", help="shipped model name or weights file (default lite0)")
    parser.add_argument("--finetune-steps", type=int, help="online finetuning steps (default: the model's)")
    reid = parser.add_mutually_exclusive_group()
    reid.add_argument("--reid", dest="reid", action="store_true", default=None, help="apply re-ID (the default)")
    reid.add_argument("--no-reid", dest="reid", action="store_false", help="forward pass only")
    parser.add_argument("--height", type=int, default=480,
                        help="process taller frames at this height (default 480; 0 keeps the input size)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu; e.g. cuda)")
    parser.add_argument("--fps", type=float, help="overlay frame rate (default: the video's, 24 for frames)")


def _frames(source: Path) -> list[np.ndarray]:
    if source.is_dir():
        return [read_frame(p) for p in frame_files(source)]
    if not source.is_file():
        raise DataError(source, "not found (expected a video file or a folder of frames)")
    return list(read_video(source))


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    frames = _frames(args.input)
    mask = read_labels(args.mask)
    size = frames[0].shape[:2]
    if not 0 <= args.mask_frame < len(frames):
        raise DataError(args.mask, f"--mask-frame {args.mask_frame} outside the {len(frames)} frames")
    if any(f.shape[:2] != size for f in frames):
        raise DataError(args.input, "frames of different sizes")
    segmenter = Segmenter.from_pretrained(args.weights, device=args.device)
    state = segmenter.init_state(np.stack(frames), height=args.height or None)
    try:
        segmenter.add_mask(state, args.mask_frame, mask)
    except ValueError as e:
        raise DataError(args.mask, str(e)) from None
    segmenter.compute_flow(state, progress=True)  # the flow phase, with its own bar
    prepared = time.perf_counter()
    for _ in segmenter.propagate(state, finetune_steps=args.finetune_steps, reid=args.reid, progress=True):
        pass
    result = state.result
    state.close()
    segmented = time.perf_counter()

    out_masks = args.output / "masks"
    full = np.zeros((len(frames),) + size, np.uint8)
    for k, labels in enumerate(result.labels):
        full[args.mask_frame + k] = cv2.resize(labels, size[::-1], interpolation=cv2.INTER_NEAREST)
    for t in tqdm(range(len(frames)), desc="write", unit="frame", leave=False):
        write_labels(out_masks / f"{t:05d}.png", full[t])
    fps = args.fps or (video_fps(args.input) if args.input.is_file() else 24.0)
    overlay_path = write_video(args.output / "overlay.mp4",
                               (overlay(frames[t], full[t], outline=True) for t in range(len(frames))), fps)
    ids = [int(i) for i in np.unique(full) if i not in (0, VOID)]
    area = {i: [int(np.count_nonzero(full[t] == i)) for t in range(len(frames))] for i in ids}
    summary = {
        "input": str(args.input), "frames": len(frames), "size": list(size[::-1]),
        "processed_size": [state.width, state.height], "objects": ids,
        "visible_frames": {str(i): sum(a > 0 for a in area[i]) for i in ids},
        "finetune_steps": segmenter.settings.finetune_steps if args.finetune_steps is None else args.finetune_steps,
        "reid_recoveries": len(result.log.recoveries) if result.log else None,
        "seconds": {"flow_and_setup": round(prepared - started, 1), "segmentation": round(segmented - prepared, 1),
                    "writing": round(time.perf_counter() - segmented, 1)},
        "masks": str(out_masks), "overlay": str(overlay_path),
    }
    atomic_write_bytes(args.output / "summary.json", json.dumps(summary, indent=1).encode())
    print(f"segment: {len(frames)} frames of {size[1]}x{size[0]} (processed at {state.width}x{state.height}), "
          f"{len(ids)} object(s) from frame {args.mask_frame}")
    for i in ids:
        print(f"  object {i}: visible in {summary['visible_frames'][str(i)]} of {len(frames)} frames")
    if result.log is not None:
        print(f"  re-ID: {len(result.log.recoveries)} recovery(ies)")
    print(f"  time: {summary['seconds']['flow_and_setup']} s flow and setup, {summary['seconds']['segmentation']} s "
          f"segmentation (finetuning {summary['finetune_steps']} steps), {summary['seconds']['writing']} s writing")
    print(f"  masks: {out_masks}/NNNNN.png\n  overlay: {overlay_path}\n  summary: {args.output / 'summary.json'}")
    return 0
