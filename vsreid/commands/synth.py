"""Generate synthetic multi-object sequences (DAVIS layout, ground truth on every frame, recorded events).

Each sequence holds 2-4 labelled objects, a pole that hides object 1 for >= --min-absence frames, object 2 leaving the
frame and coming back, an overlap, a scale change and an unlabelled look-alike of object 1 (see vsreid.data.synthetic).
Sequence i uses seed S+i, so the same command writes the same bytes. With --composite-from, the objects and the
background are real ones cut out of that DAVIS root; --composite-split restricts them to one of its splits and
--composite-part to one of two disjoint halves of it (tune / report: sequences in name order, alternately). --frames
and --objects take a range A-B, drawn per sequence from its seed. --events reappear adds an optional event: the last
object vanishes in place and reappears far away. Per-sequence events: ROOT/synthetic/<name>.json.
"""
from __future__ import annotations

import argparse
import sys

from tqdm.auto import tqdm

from vsreid.commands import add_split_argument, positive_int
from vsreid.data.composite import PARTS
from vsreid.data.synthetic import ALL_EVENTS, EVENTS, check_args
from vsreid.data.synthetic_roots import write_synthetic_root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="ROOT", help="DAVIS root to write into")
    parser.add_argument("--sequences", type=positive_int, default=4, help="number of sequences (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first sequence (default 0)")
    parser.add_argument("--frames", type=_count, default=40, help="frames per sequence, N or a range A-B (default 40)")
    parser.add_argument("--height", type=positive_int, default=240, help="frame height in px (default 240)")
    parser.add_argument("--width", type=positive_int, default=432, help="frame width in px (default 432)")
    parser.add_argument("--objects", type=_count, default=3,
                        help="labelled objects, 2-4, N or a range A-B (default 3)")
    parser.add_argument("--min-absence", type=positive_int, default=5,
                        help="frames an object stays hidden or out of view (default 5)")
    parser.add_argument("--events", type=_events, default=EVENTS,
                        help=f"comma-separated subset of {','.join(ALL_EVENTS)} (default {','.join(EVENTS)})")
    add_split_argument(parser, "split file ImageSets/2017/<NAME>.txt listing the sequences (default val)", default="val")
    parser.add_argument("--composite-from", metavar="DAVIS_ROOT",
                        help="cut real objects and backgrounds out of this DAVIS root instead of drawing them")
    parser.add_argument("--composite-split", metavar="NAME",
                        help="with --composite-from: only sequences of this split of it (e.g. train)")
    parser.add_argument("--composite-part", choices=PARTS,
                        help="with --composite-from: only this half of its (split's) sequences; the halves are "
                             "disjoint (tune re-ID on one, report on the other)")


def _count(text: str) -> int | tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        value = (positive_int(lo), positive_int(hi)) if sep else positive_int(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"{text!r}: expected N or A-B, each at least 1") from None
    if sep and value[0] > value[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: empty range")
    return value


def _events(text: str) -> tuple[str, ...]:
    names = tuple(e.strip() for e in text.split(",") if e.strip())
    unknown = [e for e in names if e not in ALL_EVENTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown events {unknown}; choose from {','.join(ALL_EVENTS)}")
    return names


def run(args: argparse.Namespace) -> int:
    size = (args.height, args.width)
    frames, objects = (v if isinstance(v, tuple) else (v, v) for v in (args.frames, args.objects))
    composite = {}
    try:
        for n in sorted(set(objects)):
            check_args(size, frames[0], n, args.events, args.min_absence)
        if args.composite_from is not None:
            composite = {"composite_from": args.composite_from, "source_split": args.composite_split,
                         "part": args.composite_part}
        elif args.composite_split or args.composite_part:
            raise ValueError("--composite-split and --composite-part need --composite-from")
    except ValueError as e:
        print(f"vsreid synth: error: {e}", file=sys.stderr)
        return 2
    with tqdm(total=args.sequences, desc="synth", unit="seq") as bar:
        def done(seq) -> None:
            bar.write(seq.summary())
            bar.update(1)

        names = write_synthetic_root(args.out, args.sequences, args.seed, split=args.split, progress=done, size=size,
                                     num_frames=args.frames, num_objects=args.objects, events=args.events,
                                     min_absence=args.min_absence, **composite)
    print(f"synth: wrote {len(names)} sequences to {args.out} (listed in ImageSets/2017/{args.split}.txt, "
          f"events in synthetic/<name>.json)")
    return 0
