"""Re-ID gain on composites of real DAVIS-2016 train objects over real train backgrounds.

The user's path, end to end: `vsreid synth --composite-from DAVIS_ROOT --composite-split train --composite-part PART`
writes composites whose objects and backgrounds all come from one half of the train split (PART = tune or report; the
halves share no source sequence), with an exit and re-entry, a full occlusion, a vanishing object that reappears
elsewhere (`reappear`), a look-alike, a scale change and usually an overlap; `vsreid predict` (shipped model, embedded
appearance re-ID) segments them, `vsreid evaluate` scores the forward pass alone (draft = without re-ID) and the final
result (with re-ID), and `vsreid evaluate-reid` scores re-ID itself and says why it fails (lost detected, candidate
recall, precision, re-initialisation IoU).

Tune re-ID with `--split tune`; report with `--split report` (never tune on it). By default the composites are
predicted WITHOUT online finetuning (`--finetune-steps 0`; the shipped config does 27 steps), so that the bench is
affordable on a CPU; pass `--finetune-steps 27` to measure the shipped configuration. Targets (report split): gain
>= +10 J&F, recall of lost objects >= 0.6, precision of accepted recoveries >= 0.8; the exit code is 0 when all hold.
"""
from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from pathlib import Path

from reid_bench_steps import draft_and_final, per_sequence, run  # bench/, beside this script

REPO = Path(__file__).resolve().parents[1]
SEEDS = {"tune": 1000, "report": 2000}  # the parts differ in their source sequences; the seeds differ too
EVENTS = "occlusion,exit,overlap,scale,distractor,reappear"
TARGETS = {"gain": 10.0, "recall": 0.6, "precision": 0.8}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=tuple(SEEDS), required=True,
                        help="which half of the train split the composites are cut from")
    parser.add_argument("--davis-root", type=Path, default=REPO / "data" / "DAVIS2016",
                        help="DAVIS-2016 root with the train split (default: data/DAVIS2016 of the repository)")
    parser.add_argument("--source-split", default="train", help="split of --davis-root to cut from (default train)")
    parser.add_argument("--out", type=Path, default=REPO / "work_dirs" / "bench_reid_real")
    parser.add_argument("--sequences", type=int, default=3, help="composites to write (default 3)")
    parser.add_argument("--frames", default="50", help="frames per composite, N or A-B in 50-100 (default 50)")
    parser.add_argument("--objects", default="3", help="labelled objects, N or A-B in 2-4 (default 3)")
    parser.add_argument("--finetune-steps", type=int, default=0,
                        help="online finetuning steps per sequence (default 0; the shipped config does 27)")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "davis_lite.yaml",
                        help="predict config to measure (default: the shipped model's)")
    parser.add_argument("--predict-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for `vsreid predict` (repeat), e.g. --model.reid_score_threshold=0.6")
    parser.add_argument("--no-predict", action="store_true",
                        help="score the results already in OUT/<split>/results instead of predicting again")
    args = parser.parse_args()
    out = args.out / args.split
    root, results = out / "composites", out / "results"
    start = time.time()
    if not (root / "ImageSets").is_dir():
        run(["synth", "--out", str(root), "--sequences", str(args.sequences), "--seed", str(SEEDS[args.split]),
             "--frames", args.frames, "--objects", args.objects, "--events", EVENTS,
             "--composite-from", str(args.davis_root), "--composite-split", args.source_split,
             "--composite-part", args.split])
    made = time.time()
    if not args.no_predict:
        shutil.rmtree(results, ignore_errors=True)  # measure the current model: predict would resume finished ones
        run(["predict", "-c", str(args.config), "--data.root", str(root), "--data.flow_dir", str(out / "flow"),
             "--output", str(results), "--finetune_steps", str(args.finetune_steps),
             "--trainer.logger.init_args.save_dir", str(out / "tensorboard"), *args.predict_arg])
    predicted = time.time()
    draft, final, gain = draft_and_final(root, results)
    print()
    run(["evaluate-reid", "--davis-root", str(root), "--results", str(results)])
    total = next(r for r in csv.DictReader((results / "reid_results.csv").open()) if r["sequence"] == "TOTAL")
    measured = {"gain": gain, "recall": float(total["recall"]), "precision": float(total["precision"])}
    print(f"\n{args.split} split, {len(per_sequence(final))} composites, finetuning steps {args.finetune_steps}:")
    print(f"  J&F without re-ID {100 * draft.global_results['J&F-Mean']:.1f}, with re-ID "
          f"{100 * final.global_results['J&F-Mean']:.1f}: gain {gain:+.1f} (target >= +{TARGETS['gain']:.0f})")
    print(f"  recall of lost objects {measured['recall']:.3f} (target >= {TARGETS['recall']}), precision of accepted "
          f"recoveries {measured['precision']:.3f} (target >= {TARGETS['precision']})")
    print(f"  why: lost detected {float(total['lost_detected']):.3f} (drifted masks caught "
          f"{float(total['drift_caught']):.3f}); right candidate best-scored {float(total['recall_top1']):.3f}, "
          f"candidate centre on the object {float(total['recall_centre']):.3f}; accepted box centred on the object "
          f"{float(total['precision_centre']):.3f}; re-initialisation IoU {float(total['reinit_iou']):.3f}")
    print(f"  time: {time.time() - start:.0f} s (composites {made - start:.0f} s, predict "
          + ("skipped: --no-predict)" if args.no_predict else f"{predicted - made:.0f} s)"))
    return 0 if all(measured[k] >= TARGETS[k] for k in TARGETS) else 1


if __name__ == "__main__":
    sys.exit(main())
