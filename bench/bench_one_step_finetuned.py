"""One-step IoU of the shipped network before and after the shipped predict's online finetuning, per sequence.

For every one-step pair of a sequence (the previous frame's ground truth warped to the next frame, cropped as
validation and predict crop it; `EvalPairs`) this prints the full-frame IoU of:

- ``copy``: the warped prior itself (validation's baseline);
- ``shipped``: the shipped network as `predict` runs it without finetuning (predict's band, flip);
- ``finetuned``: the same after the sequence's online finetuning on its first frame (the shipped steps, scope and
  samples), i.e. the copy that `predict` propagates that sequence with.

Issue 14 asks for one-step IoU at least 7 points above ``copy``; this says whether online finetuning brings it.
Uses the flow cache of `vsreid fit`/`validate` (work_dirs/flow/<root folder name>), computing flows that are missing.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench_one_step_ceiling import selection_split  # bench/, beside this script
from vsreid import Segmenter
from vsreid.data.crops import paste_back
from vsreid.data.davis import DavisRoot
from vsreid.data.samples import EvalPairs
from vsreid.engine.segmenter import sequence_propagator
from vsreid.engine.source import SequenceSource
from vsreid.lightning.data import root_flow_cache
from vsreid.lightning.module import mask_iou as iou

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO / "data" / "DAVIS2016", help="DAVIS root")
    parser.add_argument("--sequences", nargs="+", help="default: the selection split of configs/pretrain_lite.yaml",
                        default=selection_split())
    parser.add_argument("--frame-step", type=int, default=1, help="every Nth pair (default 1: all)")
    parser.add_argument("--weights", default="lite0", help="shipped weights name or a weights file (default lite0)")
    parser.add_argument("--finetune-seed", type=int, default=0,
                        help="seed of the finetuning samples and dropout (default 0, as predict)")
    parser.add_argument("--flow-cache-dir", default=str(REPO / "work_dirs" / "flow"))
    args = parser.parse_args()
    root = DavisRoot(args.root)
    segmenter = Segmenter.from_pretrained(args.weights)
    cache = root_flow_cache(root, "dis", segmenter.flow_preset, args.flow_cache_dir)
    totals: dict[str, list[float]] = {"copy": [], "shipped": [], "finetuned": []}
    for seq in args.sequences:
        source = SequenceSource(root, seq, cache)
        started = time.perf_counter()
        runs = (("shipped", replace(segmenter.settings, finetune_steps=0)), ("finetuned", segmenter.settings))
        predictors = {name: sequence_propagator(segmenter.net, source, settings,
                                                finetune_seed=args.finetune_seed).predictor for name, settings in runs}
        seconds = time.perf_counter() - started
        pairs = EvalPairs(root, [seq], cache, size=segmenter.settings.propagation.crop_size,
                          frame_step=args.frame_step)
        scores: dict[str, list[float]] = {name: [] for name in totals}
        for k in range(len(pairs)):
            item = pairs[k]
            truth, box = item["target_full"], tuple(item["box"].tolist())
            scores["copy"].append(iou(item["prior_full"] > 0, truth))
            crops = (item["image"].transpose(1, 2, 0)[None] * 255, item["flow"].transpose(1, 2, 0)[None],
                     item["prior"], item["residual"])
            for name, predictor in predictors.items():
                scores[name].append(iou(paste_back(predictor(*crops)[0], box, truth.shape) > 0.5, truth))
        for name, values in scores.items():
            totals[name] += values
        print(f"{seq}: {len(pairs)} pairs, " + ", ".join(f"{n} {np.mean(v):.4f}" for n, v in scores.items())
              + f" (finetuning {seconds:.0f} s)", flush=True)
    print(f"all {len(totals['copy'])} pairs of {root.root}: "
          + ", ".join(f"{n} {np.mean(v):.4f}" for n, v in totals.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
