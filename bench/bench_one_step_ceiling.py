"""How much one-step IoU the Lite network's boundary gate leaves room for, on the pairs `vsreid validate` measures.

For every one-step pair (the previous frame's ground truth warped to the next frame by the cached DIS flow, cropped
to its box enlarged by 15% at 321 px, as validation and predict crop it) this prints the full-frame IoU of:

- ``copy``: the warped prior itself (validation's baseline);
- ``crop``: the ground truth taken through the crop and pasted back (what resizing alone loses);
- ``gate R/R2``: a perfect network under the boundary gate of :class:`vsreid.models.mp2s.MP2S`: the ground truth
  where the gate opens, the prior where it stays shut (R px band, R2 px where the warp's residual exceeds 20).

The network's own one-step IoU on the same pairs comes from `vsreid validate` (README). Uses the flow cache of
`vsreid fit`/`validate` (work_dirs/flow/<root folder name>), computing flows that are missing.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml

from vsreid.data.crops import paste_back
from vsreid.data.davis import DavisRoot
from vsreid.data.samples import EvalPairs
from vsreid.lightning.data import root_flow_cache
from vsreid.lightning.module import mask_iou as iou
from vsreid.models.mp2s import band_gate
from vsreid.resources import config_path

REPO = Path(__file__).resolve().parents[1]
GATES = ((5, 30), (5, 0), (10, 30), (10, 60), (20, 60))  # (band, residual band) in crop pixels; (5, 30) is shipped
RESIDUAL_THRESHOLD = 20.0


def selection_split() -> list[str]:
    """The held-out train sequences that choose checkpoints: ``val_sequences`` of the shipped pretraining config."""
    config = yaml.safe_load(config_path("pretrain_lite").read_text())
    return list(config["data"]["init_args"]["val_sequences"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO / "data" / "DAVIS2016", help="DAVIS root")
    parser.add_argument("--sequences", nargs="+", help="default: the selection split of configs/pretrain_lite.yaml",
                        default=selection_split())
    parser.add_argument("--all-sequences", action="store_true", help="every sequence of --root instead")
    parser.add_argument("--frame-step", type=int, default=3, help="every Nth pair, as validation (default 3)")
    parser.add_argument("--crop-size", type=int, default=321)
    parser.add_argument("--flow-cache-dir", default=str(REPO / "work_dirs" / "flow"))
    args = parser.parse_args()
    root = DavisRoot(args.root)
    pairs = EvalPairs(root, None if args.all_sequences else args.sequences,
                      root_flow_cache(root, "dis", "medium", args.flow_cache_dir), size=args.crop_size,
                      frame_step=args.frame_step)
    scores: dict[str, list[float]] = {"copy": [], "crop": [], **{f"gate {a}/{b}": [] for a, b in GATES}}
    for k in range(len(pairs)):
        item = pairs[k]
        truth, box = item["target_full"], tuple(item["box"].tolist())
        target = (item["target"] == 1).astype(np.float32)
        prior = torch.from_numpy(item["prior"][None])
        residual = torch.from_numpy(item["residual"][None])
        scores["copy"].append(iou(item["prior_full"] > 0, truth))
        scores["crop"].append(iou(paste_back(target, box, truth.shape) > 0.5, truth))
        for band, residual_band in GATES:
            gate = band_gate(prior, band, residual, residual_band, RESIDUAL_THRESHOLD)[0, 0].numpy()
            mixed = gate * target + (1 - gate) * item["prior"][0]
            scores[f"gate {band}/{residual_band}"].append(iou(paste_back(mixed, box, truth.shape) > 0.5, truth))
    print(f"{len(pairs)} pairs of {root.root}")
    for name, values in scores.items():
        print(f"  {name:<12} {np.mean(values):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
