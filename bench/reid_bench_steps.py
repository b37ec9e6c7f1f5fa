"""Steps the re-ID benches share: running a `vsreid` command in-process and scoring results without and with re-ID."""
from __future__ import annotations

from pathlib import Path

from vsreid.cli import main as vsreid
from vsreid.data.davis import DavisRoot
from vsreid.data.results import ResultsFolder
from vsreid.metrics.evaluation import evaluate_results


def run(args: list[str]) -> None:
    """``vsreid ARGS`` in this process; exits the bench when the command fails."""
    code = vsreid(args)
    if code:
        raise SystemExit(f"vsreid {' '.join(args)} exited with {code}")


def per_sequence(result) -> dict[str, float]:
    """sequence -> J&F-Mean in percent, averaged over its objects, of an ``evaluate_results`` result."""
    scores: dict[str, list[float]] = {}
    for name, stats in zip(result.objects, result.object_stats):
        scores.setdefault(name.rsplit("_", 1)[0], []).append(50 * (stats[0] + stats[3]))
    return {seq: sum(v) / len(v) for seq, v in scores.items()}


def draft_and_final(root: Path, results: Path, mean_suffix=lambda gain: "") -> tuple[object, object, float]:
    """Score the forward pass alone (draft) and the final results of ``results`` against DAVIS root ``root``, print
    J&F per sequence and the mean over objects without and with re-ID (then ``mean_suffix(gain)``), and return
    (draft result, final result, gain in J&F points)."""
    draft = evaluate_results(DavisRoot(root), ResultsFolder(results).draft_root, progress=False)
    final = evaluate_results(DavisRoot(root), results, progress=False)
    before, after = per_sequence(draft), per_sequence(final)
    print(f"\n{'sequence':<16}{'without re-ID':>15}{'with re-ID':>12}")
    for seq in before:
        print(f"{seq:<16}{before[seq]:>15.1f}{after[seq]:>12.1f}")
    gain = 100 * (final.global_results["J&F-Mean"] - draft.global_results["J&F-Mean"])
    print(f"{'mean (objects)':<16}{100 * draft.global_results['J&F-Mean']:>15.1f}"
          f"{100 * final.global_results['J&F-Mean']:>12.1f}{mean_suffix(gain)}")
    return draft, final, gain
