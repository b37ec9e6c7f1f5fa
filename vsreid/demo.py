"""``make demo``: segment the bundled sample end to end and print its J&F with and without re-ID.

Steps: make a synthetic 3-object sequence whose objects disappear and come back; for the two real DAVIS sequences
of the bundled sample (``data/samples``, shipped in the package) and the synthetic one: optical flow (DIS), online
finetuning on the first frame (the shipped config's steps), the forward pass, re-ID recovery, palette PNGs, an
overlay video, and the DAVIS evaluation of the forward pass alone ("without re-ID") and of the final result ("with
re-ID").
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from vsreid.cli import main as vsreid_main
from vsreid.data.davis import DavisRoot
from vsreid.data.labels import overlay, overlay_strip, read_frame, read_labels, write_frame
from vsreid.data.results import ResultsFolder
from vsreid.data.synthetic_roots import write_synthetic_root
from vsreid.data.video import write_video
from vsreid.metrics.evaluation import evaluate_results
from vsreid.resources import config_path, sample_root


def _predict(root: Path, output: Path, flow_dir: Path, logs: Path, finetune_steps: int | None) -> None:
    steps = [] if finetune_steps is None else ["--finetune_steps", str(finetune_steps)]
    code = vsreid_main(["predict", "-c", str(config_path("davis_lite")), "--data.root", str(root),
                        "--data.flow_dir", str(flow_dir), "--output", str(output),
                        "--trainer.logger.init_args.save_dir", str(logs)] + steps)
    if code:
        raise SystemExit(code)


def _overlay_video(root: DavisRoot, seq: str, results: Path, path: Path, fps: int = 8) -> Path:
    """MP4 with the forward pass alone (left) and the final result after re-ID (right) over the frames."""
    folder = ResultsFolder(results)

    def tiles():
        for frame_path in root.frame_paths(seq):
            rgb = read_frame(frame_path)
            draft = read_labels(folder.draft_dir(seq) / f"{frame_path.stem}.png")
            final = read_labels(folder.sequence_dir(seq) / f"{frame_path.stem}.png")
            yield np.concatenate([overlay(rgb, draft), overlay(rgb, final)], axis=1)

    return write_video(path, tiles(), fps)


def _picture_row(root: DavisRoot, seq: str, results: Path, width: int) -> np.ndarray:
    """Four outlined overlays of the final result side by side, scaled to ``width`` px, the sequence named."""
    frames = root.frame_paths(seq)
    labels = [read_labels(ResultsFolder(results).sequence_dir(seq) / f"{p.stem}.png") for p in frames]
    strip = overlay_strip(lambda t: read_frame(frames[t]), labels)
    row = cv2.resize(strip, (width, round(strip.shape[0] * width / strip.shape[1])), interpolation=cv2.INTER_AREA)
    for colour, thickness in (((0, 0, 0), 4), ((255, 255, 255), 1)):
        cv2.putText(row, seq, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, colour, thickness, cv2.LINE_AA)
    return row


def _table(rows: list[tuple[str, float, float]]) -> str:
    lines = [f"{'sequence':<30}{'J&F without re-ID':>20}{'J&F with re-ID':>18}"]
    lines += [f"{name:<30}{a:>20.1f}{b:>18.1f}" for name, a, b in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vsreid.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("work_dirs") / "demo",
                        help="where everything is written (default work_dirs/demo in the current folder)")
    parser.add_argument("--finetune-steps", type=int, default=None,
                        help="online finetuning steps per sequence (default: the shipped config's)")
    parser.add_argument("--picture", type=Path, default=None,
                        help="also write a JPEG of four frames of every sequence's result (the README picture)")
    args = parser.parse_args(argv)
    start = time.time()
    out = args.out
    synthetic = out / "synthetic"
    if not (synthetic / "ImageSets" / "2017" / "val.txt").is_file():
        write_synthetic_root(synthetic, 1, seed=7, size=(240, 432), num_frames=40, num_objects=3)
    rows, picture = [], []
    for name, root_path in (("samples", sample_root()), ("synthetic", synthetic)):
        results = out / "results" / name
        print(f"\n== {name}: {root_path}", flush=True)
        _predict(root_path, results, out / "flow" / name, out / "tensorboard", args.finetune_steps)
        root = DavisRoot(root_path)
        without = evaluate_results(root, ResultsFolder(results).draft_root, progress=False)
        final = evaluate_results(root, results, progress=False)
        for seq in root.sequences():
            _overlay_video(root, seq, results, out / "videos" / f"{seq}.mp4")
            picture.append(_picture_row(root, seq, results, width=1600))
            a = [s for n, s in zip(without.objects, without.object_stats) if n.rsplit("_", 1)[0] == seq]
            b = [s for n, s in zip(final.objects, final.object_stats) if n.rsplit("_", 1)[0] == seq]
            rows.append((seq, 50 * np.mean([s[0] + s[3] for s in a]), 50 * np.mean([s[0] + s[3] for s in b])))
        rows.append((f"mean over {name} objects", 100 * without.global_results["J&F-Mean"],
                     100 * final.global_results["J&F-Mean"]))
    print("\n" + _table(rows))
    print(f"\nresults (palette PNGs, reid.json, DAVIS CSVs): {out / 'results'}")
    print(f"overlay videos (left: forward pass, right: with re-ID): {out / 'videos'}")
    print(f"TensorBoard: tensorboard --logdir {out / 'tensorboard'}")
    if args.picture is not None:
        print(f"picture: {write_frame(args.picture, np.concatenate(picture, axis=0), quality=85)}")
    print(f"demo finished in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
