"""Re-ID rule sets compared on one forward pass per sequence.

Each sequence of a DAVIS root is propagated once by the shipped model (with the online finetuning its weights record,
or as `--finetune-steps N`, `--finetune-lr`, `--finetune-seed` set it), then recovered from that same draft under
every rule set of a JSON file (default bench/reid_rules.json): {"name": {RecoveryConfig field: value, ...,
"provider": {AppearanceReID argument: value}, "propagation": {PropagationConfig field: value}}}; an empty rule set
is the shipped one. Propagation fields
apply to the recovery's re-initialisations and re-propagations only (e.g. ``refine_iterations``): the draft is the
shipped forward pass. Prints J&F per sequence of the draft (without re-ID) and of each rule
set, with each rule set's re-ID seconds and its accepted recoveries scored as `vsreid evaluate-reid` scores them
(right ones: box IoU >= 0.5 with the ground truth; precision; recall of lost objects). Each rule set's folder
OUT/<name> is a results folder of its own (final id maps, reid.json, draft/), so `vsreid evaluate-reid --results
OUT/<name>` gives its whole breakdown. One forward pass serves all rule sets: this is how the shipped re-ID
settings were compared on train data (the selection split of data/DAVIS2016 and the tune composites of
bench/bench_reid_real.py). Never choose settings on the val subset or the report split.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from reid_bench_steps import per_sequence  # bench/, beside this script
from vsreid import Segmenter
from vsreid.commands.evaluate_reid import score_reports
from vsreid.data.atomic import atomic_write_bytes
from vsreid.data.davis import DavisRoot
from vsreid.data.flow import FlowCache, make_flow_estimator
from vsreid.data.labels import write_labels
from vsreid.data.results import ResultsFolder
from vsreid.engine.finetune import FINETUNE_SCOPES
from vsreid.engine.propagator import Propagator
from vsreid.engine.reid import AppearanceReID
from vsreid.engine.reid.recovery import recover
from vsreid.engine.reid.report import build_report
from vsreid.engine.segmenter import sequence_propagator
from vsreid.engine.source import SequenceSource
from vsreid.metrics.evaluation import evaluate_results
from vsreid.models.mixed_precision import PRECISIONS

REPO = Path(__file__).resolve().parents[1]
DRAFT = "draft"
#: Options that replace the recorded :class:`vsreid.engine.segmenter.SegmentSettings` field of their name.
SETTING_OPTIONS = ("finetune_steps", "finetune_batch_size", "finetune_lr", "finetune_crop_size", "finetune_precision",
                   "finetune_scope", "inference_precision", "prior_weight")


def write_sequence(folder: Path, stems: list[str], labels) -> None:
    """Id maps ``labels[t]`` (H, W) uint8 of every frame as ``folder/<stem>.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, frame_labels in zip(stems, labels, strict=True):
        write_labels(folder / f"{stem}.png", frame_labels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="DAVIS root (train data only)")
    parser.add_argument("--sequences", nargs="+", help="these sequences of --root only (default: all)")
    parser.add_argument("--rules", type=Path, default=REPO / "bench" / "reid_rules.json",
                        help="JSON file of named rule sets (default bench/reid_rules.json)")
    parser.add_argument("--finetune-steps", type=int, default=None,
                        help="online finetuning steps (default: the shipped weights' recorded steps, 27)")
    parser.add_argument("--finetune-lr", type=float, default=None,
                        help="online finetuning learning rate (default: the shipped weights' recorded 1.11e-4)")
    parser.add_argument("--finetune-seed", type=int, default=0,
                        help="seed of the finetuning samples and dropout (default 0, as predict)")
    parser.add_argument("--finetune-batch-size", type=int, default=None,
                        help="samples per finetuning step (default: the shipped weights' recorded 4)")
    parser.add_argument("--finetune-crop-size", type=int, default=None,
                        help="side of the finetuning samples' crops in pixels (default: the shipped weights' recorded "
                             "one, else the propagation crop size)")
    parser.add_argument("--finetune-precision", choices=PRECISIONS, default=None,
                        help="arithmetic of online finetuning (default: the shipped weights' recorded one)")
    parser.add_argument("--finetune-scope", choices=tuple(FINETUNE_SCOPES), default=None,
                        help="what online finetuning trains (default: the shipped weights' recorded scope)")
    parser.add_argument("--inference-precision", choices=PRECISIONS, default=None,
                        help="arithmetic of the network's forward passes (default: the shipped weights' recorded one)")
    parser.add_argument("--prior-weight", type=float, default=None,
                        help="share of the prior mixed into P(fg) (default: the shipped weights' recorded one)")
    parser.add_argument("--weights", default="lite0", help="shipped weights name or a weights file (default lite0)")
    parser.add_argument("--out", type=Path, default=REPO / "work_dirs" / "bench_reid_rules")
    parser.add_argument("--flow-dir", type=Path, help="flow cache (default OUT/flow)")
    args = parser.parse_args()
    try:
        rules = json.loads(args.rules.read_text())
    except (OSError, ValueError) as err:
        parser.error(f"{args.rules}: not a readable JSON file of rule sets ({err})")
    if DRAFT in rules:
        parser.error(f"{args.rules}: '{DRAFT}' names the forward pass alone; give the rule set another name")
    root = DavisRoot(args.root)
    sequences = root.sequences(sequences=args.sequences)
    segmenter = Segmenter.from_pretrained(args.weights)
    given = {name: getattr(args, name) for name in SETTING_OPTIONS if getattr(args, name) is not None}
    settings = replace(segmenter.settings, **given)  # the recorded settings where an option is not given
    parsed = {}  # name -> (AppearanceReID arguments, RecoveryConfig, PropagationConfig), checked before any sequence
    for name, rule_set in rules.items():
        fields = dict(rule_set)
        provider = fields.pop("provider", {})
        propagation = fields.pop("propagation", {})
        try:
            AppearanceReID(**provider)
            parsed[name] = provider, replace(settings.recovery, **fields), replace(settings.propagation, **propagation)
        except (TypeError, ValueError) as err:
            parser.error(f"{args.rules}: rule set {name!r}: {err}")
    flows = FlowCache(root, make_flow_estimator("dis", preset=segmenter.flow_preset),
                      flow_dir=args.flow_dir or args.out / "flow")
    seconds = dict.fromkeys(rules, 0.0)
    for seq in sequences:
        source = SequenceSource(root, seq, flows)
        stems = root.frame_stems(seq)
        first = root.read_annotation(seq, stems[0])
        ids = root.validate(seq).object_ids
        propagator = sequence_propagator(segmenter.net, source, settings, progress=True,
                                         finetune_seed=args.finetune_seed)
        draft = propagator.start(source, first, ids)
        for _ in tqdm(propagator.forward_frames(source, draft), total=source.num_frames - 1, desc=seq,
                      unit="frame", leave=False):
            pass
        draft_labels = np.stack([draft.labels(t) for t in range(len(stems))])  # (T, H, W), written once a folder
        write_sequence(args.out / DRAFT / seq, stems, draft_labels)
        for name, (provider, recovery, propagation) in parsed.items():
            reid = AppearanceReID(**provider)
            recovering = Propagator(propagator.predictor, propagation)
            state = copy.deepcopy(draft)
            start = time.perf_counter()
            reid.prepare(source, first, ids)
            log = recover(recovering, source, state, reid, recovery)
            seconds[name] += time.perf_counter() - start
            folder = ResultsFolder(args.out / name)
            write_sequence(folder.sequence_dir(seq), stems, (state.labels(t) for t in range(len(stems))))
            write_sequence(folder.draft_dir(seq), stems, draft_labels)
            report = build_report(seq, draft_labels, reid, log, ids, recovery.score_threshold)
            atomic_write_bytes(folder.reid_report(seq), json.dumps(report).encode())
            print(f"{seq} {name}: {len(log.recoveries)} recoveries, {len(log.drifted)} drifted, "
                  f"{len(log.restored)} put back, {len(log.undone)} undone", flush=True)
    names = [DRAFT, *rules]
    results = {name: evaluate_results(root, args.out / name, sequences=sequences, progress=False) for name in names}
    scores = {name: per_sequence(result) for name, result in results.items()}
    print(f"\nJ&F, finetuning steps {settings.finetune_steps} of {settings.finetune_batch_size} samples at lr "
          f"{settings.finetune_lr:g} ({settings.finetune_crop_size or settings.propagation.crop_size} px, scope "
          f"{settings.finetune_scope}, {settings.finetune_precision}; inference "
          f"{settings.inference_precision}, prior weight {settings.prior_weight:g}), "
          f"seed {args.finetune_seed}, "
          f"rules {args.rules.name}")
    print(f"{'sequence':<20}" + "".join(f"{name:>12}" for name in names))
    for seq in sequences:
        print(f"{seq:<20}" + "".join(f"{scores[name][seq]:>12.1f}" for name in names))
    print(f"{'mean (objects)':<20}"
          + "".join(f"{100 * results[name].global_results['J&F-Mean']:>12.1f}" for name in names))
    print(f"{'re-ID seconds':<20}{'':>12}" + "".join(f"{seconds[name]:>12.0f}" for name in rules))
    totals = {name: score_reports(root, args.out / name, sequences)[-1] for name in rules}
    print(f"{'recoveries right':<20}{'':>12}"
          + "".join(f"{totals[name]['correct']:>7d} / {totals[name]['recoveries']:<2d}" for name in rules))
    for key in ("precision", "recall", "reinit_iou"):
        print(f"{key:<20}{'':>12}" + "".join(f"{totals[name][key]:>12.3f}" for name in rules))
    return 0


if __name__ == "__main__":
    sys.exit(main())
