"""J&F of the shipped model on the DAVIS 2016 val subset, with and without online finetuning and re-ID.

Reproduces the README's results table: `vsreid predict` (configs/davis_lite.yaml) over the 9 val-subset sequences
without finetuning and with the config's finetuning (or `--finetune-steps N`), then `vsreid evaluate` of the forward
pass alone (draft) and of the final result (with re-ID). Prints per-sequence J-Mean and J&F, and how many sequences
finetuning improved.
The data folder defaults to ../shared/data/davis2016-val-subset (override with --root or VSREID_SHARED_DATA).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from vsreid.cli import main as vsreid
from vsreid.data.davis import DavisRoot
from vsreid.data.results import ResultsFolder
from vsreid.metrics.evaluation import evaluate_results

REPO = Path(__file__).resolve().parents[1]


def per_sequence(result) -> dict[str, tuple[float, float]]:
    """sequence -> (J-Mean, J&F-Mean) in percent, averaged over its objects."""
    rows: dict[str, list] = {}
    for name, s in zip(result.objects, result.object_stats):
        rows.setdefault(name.rsplit("_", 1)[0], []).append((100 * s[0], 50 * (s[0] + s[3])))
    return {k: tuple(sum(x) / len(v) for x in zip(*v)) for k, v in rows.items()}


def main() -> int:
    shared = Path(os.environ.get("VSREID_SHARED_DATA", REPO.parent / "shared" / "data"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=shared / "davis2016-val-subset")
    parser.add_argument("--out", type=Path, default=REPO / "work_dirs" / "bench_val")
    parser.add_argument("--finetune-steps", type=int, default=None,
                        help="finetuning steps of the second run (default: the config's, 27 for the shipped model)")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "davis_lite.yaml",
                        help="predict config to measure (default: the shipped model's)")
    parser.add_argument("--sequences", nargs="+", help="these sequences of --root only (default: all)")
    parser.add_argument("--only", choices=("no-finetuning", "finetuning"), help="run one of the two predicts only")
    args = parser.parse_args()
    if not args.root.is_dir():
        print(f"skipped: {args.root} not found (set VSREID_SHARED_DATA)")
        return 0
    given = args.finetune_steps
    tuned = "finetuning (the config's steps)" if given is None else f"finetuning {given} steps"
    runs = {"no finetuning": 0, tuned: given}
    if args.only:
        runs = {k: v for k, v in runs.items() if k.startswith(args.only.replace("-", " "))}
    scores, seconds = {}, {}
    for name, steps in runs.items():
        out = args.out / ("finetune-config" if steps is None else f"finetune{steps}")
        shutil.rmtree(out, ignore_errors=True)  # measure the current model: predict would resume finished sequences
        start = time.time()
        code = vsreid(["predict", "-c", str(args.config), "--data.root", str(args.root),
                       "--data.flow_dir", str(args.out / "flow"), "--output", str(out),
                       "--trainer.logger.init_args.save_dir", str(args.out / "tensorboard")]
                      + ([] if steps is None else ["--finetune_steps", str(steps)])
                      + (["--data.sequences", "[" + ",".join(args.sequences) + "]"] if args.sequences else []))
        if code:
            return code
        seconds[name] = time.time() - start
        root = DavisRoot(args.root)
        scores[name] = {"draft": evaluate_results(root, ResultsFolder(out).draft_root, sequences=args.sequences,
                                                  progress=False),
                        "final": evaluate_results(root, out, sequences=args.sequences, progress=False)}
    rows = {name: per_sequence(scores[name]["final"]) for name in runs}
    print(f"\n{'sequence':<16}" + "".join(f"{n + ': J':>36}{'J&F':>8}" for n in runs))
    for seq in next(iter(rows.values())):
        print(f"{seq:<16}" + "".join(f"{rows[n][seq][0]:>36.1f}{rows[n][seq][1]:>8.1f}" for n in runs))
    for n in runs:
        d, f = scores[n]["draft"].global_results, scores[n]["final"].global_results
        print(f"{n}: J&F {100 * f['J&F-Mean']:.1f} (J {100 * f['J-Mean']:.1f}, F {100 * f['F-Mean']:.1f}); "
              f"without re-ID {100 * d['J&F-Mean']:.1f}; {seconds[n]:.0f} s")
    if len(runs) == 2:
        base, tuned_rows = rows.values()
        better = sum(tuned_rows[s][0] > base[s][0] for s in base)
        print(f"finetuning improves J on {better} of {len(base)} sequences")
    return 0


if __name__ == "__main__":
    sys.exit(main())
