"""Convert an original VS-ReID MP2S.pth.tar into a Lightning checkpoint of VSReIDModule (same weights).

The result works with `vsreid predict -c configs/predict_davis2017.yaml --ckpt_path OUT.ckpt` and with
`VSReIDModule.load_from_checkpoint(OUT.ckpt)`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning
import torch

from vsreid.data.atomic import atomic_path
from vsreid.lightning.module import VSReIDModule
from vsreid.models.checkpoints import network_arguments
from vsreid.models.mp2s import MP2S

#: The original's training policy. Network and predict settings are left to their defaults, which are the paper's.
PAPER_TRAINING = dict(optimizer="sgd", lr=0.001, weight_decay=0.0005)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("original", type=Path, help="the released MP2S.pth.tar (a dict holding 'state_dict')")
    parser.add_argument("output", type=Path, help="the Lightning checkpoint to write (.ckpt)")


def convert(original: Path, output: Path, **config) -> Path:
    """Load ``original`` strictly into the paper-configured module and save a Lightning checkpoint atomically."""
    module = VSReIDModule(**{**PAPER_TRAINING, **config})
    net = MP2S.from_original(original, backbone=network_arguments(module.hparams)["backbone"])
    module.net.load_state_dict(net.state_dict(), strict=True)
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                  "pytorch-lightning_version": lightning.__version__, "epoch": 0, "global_step": 0,
                  "converted_from": str(original)}
    with atomic_path(output) as tmp:
        torch.save(checkpoint, tmp)
    return output


def run(args: argparse.Namespace) -> int:
    try:
        convert(args.original, args.output)
    except ValueError as err:
        print(f"vsreid convert-checkpoint: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} (MP2S ResNet-101, paper configuration)")
    return 0
