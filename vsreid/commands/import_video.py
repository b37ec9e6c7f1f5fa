"""Import a video file as a DAVIS-layout sequence (JPEGImages/480p/SEQ/00000.jpg ..., optional first-frame mask).

Frames are resized to --height rows keeping the aspect ratio (width rounded to even). --mask is an id map (palette or
grayscale PNG) of the first imported frame; it is resized with nearest neighbour to Annotations/480p/SEQ/00000.png.
"""
from __future__ import annotations

import argparse

from vsreid.commands import positive_int
from vsreid.data.video import import_video


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="video file (MP4, AVI, ... anything OpenCV/FFmpeg decodes)")
    parser.add_argument("--out", required=True, help="DAVIS root to write into")
    parser.add_argument("--name", required=True, help="sequence name")
    parser.add_argument("--height", type=positive_int, default=480, help="frame height in pixels (default 480)")
    parser.add_argument("--every", type=positive_int, default=1, help="keep every N-th frame (default 1: all)")
    parser.add_argument("--max-frames", type=positive_int, help="stop after this many written frames")
    parser.add_argument("--mask", help="first-frame mask (id map PNG)")


def run(args: argparse.Namespace) -> int:
    result = import_video(args.video, args.out, args.name, height=args.height, every=args.every,
                          max_frames=args.max_frames, mask=args.mask)
    print(f"import-video: {result.num_frames} frames of {result.width}x{result.height} -> {result.frames_dir}"
          + (f", mask -> {result.mask_path}" if result.mask_path else ""))
    return 0
