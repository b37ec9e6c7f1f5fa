"""Export the network of a Lightning checkpoint as a compact weights file (half precision by default).

The file holds {'state_dict', 'network', 'source'} and is what `--model.init_from` reads, e.g. the shipped
checkpoints/vsreid_lite0.pt. Half precision halves the size; weights are cast back to float32 when loaded.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from vsreid.data.atomic import atomic_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a Lightning checkpoint of VSReIDModule (.ckpt)")
    parser.add_argument("output", type=Path, help="the weights file to write (.pt)")
    parser.add_argument("--float32", action="store_true", help="keep float32 instead of half precision")


def export(checkpoint: Path, output: Path, half: bool = True) -> Path:
    from vsreid.models.checkpoints import read_network

    state, network = read_network(checkpoint)
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    with atomic_path(output) as tmp:
        torch.save({"state_dict": state, "network": network or {}, "source": checkpoint.name}, tmp)
    return output


def run(args: argparse.Namespace) -> int:
    try:
        path = export(args.checkpoint, args.output, half=not args.float32)
    except ValueError as err:
        print(f"vsreid export-model: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0
