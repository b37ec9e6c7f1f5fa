"""Re-ID gain on synthetic multi-object sequences with full occlusions, exits and re-entries.

The user's path, end to end: `vsreid synth` writes 8 sequences, `vsreid predict` (shipped model, embedded appearance
re-ID) segments them, `vsreid evaluate` scores the forward pass alone (draft) and the final result, and
`vsreid evaluate-reid` scores re-ID itself. Prints the per-sequence table and the gain (target: >= 10 J&F points).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from reid_bench_steps import draft_and_final, run  # bench/, beside this script

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "work_dirs" / "bench_reid")
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "davis_lite.yaml",
                        help="predict config to measure (default: the shipped model's)")
    args = parser.parse_args()
    root, results = args.out / "synthetic", args.out / "results"
    start = time.time()
    if not (root / "ImageSets").is_dir():
        run(["synth", "--out", str(root), "--sequences", str(args.sequences), "--seed", str(args.seed)])
    shutil.rmtree(results, ignore_errors=True)  # measure the current model: predict would resume finished sequences
    run(["predict", "-c", str(args.config), "--data.root", str(root),
         "--data.flow_dir", str(args.out / "flow"), "--output", str(results),
         "--trainer.logger.init_args.save_dir", str(args.out / "tensorboard")])
    _, _, gain = draft_and_final(root, results, lambda gain: f"   gain {gain:+.1f} J&F points (target >= +10)")
    print()
    run(["evaluate-reid", "--davis-root", str(root), "--results", str(results)])
    print(f"\n{args.sequences} sequences in {time.time() - start:.0f} s")
    return 0 if gain >= 10 else 1


if __name__ == "__main__":
    sys.exit(main())
