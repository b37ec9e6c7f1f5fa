"""Check a DAVIS root before running anything on it: every frame decodes completely, sizes agree, annotations are id
maps of the frame size, the first frame has an object, cached flows have the frame size.

One line per problem (`<file>: <problem>`), then a summary; exit code 2 when anything is wrong. `vsreid predict`
runs the same checks on the sequences it is given before its first network pass.
"""
from __future__ import annotations

import argparse
import sys

from tqdm.auto import tqdm

from vsreid.commands import add_split_argument
from vsreid.data.davis import DavisRoot
from vsreid.data.errors import DataError
from vsreid.data.flow import FlowCache


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="DAVIS root (JPEGImages/480p/<seq>/, Annotations/480p/<seq>/)")
    which = parser.add_mutually_exclusive_group()
    add_split_argument(which, "a split of ImageSets; default: every sequence")
    which.add_argument("--sequences", nargs="+", metavar="SEQ", help="these sequences only")
    parser.add_argument("--flow-dir", help="flow cache to check (default ROOT/Flow/480p)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    root = DavisRoot(args.root)
    names = root.sequences(args.split, args.sequences)
    flows = FlowCache(root, None, flow_dir=args.flow_dir)
    problems, frames, flow_files = [], 0, 0
    for seq in tqdm(names, desc="check", unit="seq", disable=args.no_progress):
        try:
            info = root.validate(seq, check_all_frames=True)
            frames += info.num_frames
            flow_files += flows.check_existing(seq)
        except DataError as e:
            problems.append(str(e))
            print(e, file=sys.stderr)
    print(f"check: {len(names)} sequence(s), {frames} frames, {flow_files} cached flow files: "
          + (f"{len(problems)} problem(s)" if problems else "no problem"))
    return 2 if problems else 0
