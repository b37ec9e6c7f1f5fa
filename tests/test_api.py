"""The Python API (``vsreid.Segmenter``): no Lightning import, and the same masks as ``vsreid predict`` from frames in
memory and from a video file."""
from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO
from davis_roots import write_davis_root
from vsreid.cli import main
from vsreid.commands.export_model import export
from vsreid.data.labels import read_frame, read_labels, write_labels
from vsreid.data.video import read_video
from vsreid.engine import Segmenter

FRAMES = 8  # the first frames of the bundled libby: the whole method (finetuning, forward pass, re-ID) stays quick
STEPS = 2  # finetuning steps, the same for predict and the API


def test_importing_the_api_does_not_import_lightning():
    code = "import sys; from vsreid import Segmenter; print(any(m.startswith('lightning') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The shipped weights re-exported with the shipped predict config's settings recorded."""
    out = tmp_path_factory.mktemp("weights") / "lite0.pt"
    return export(REPO / "checkpoints" / "vsreid_lite0.pt", out, predict_config=REPO / "configs" / "davis_lite.yaml")


def _root(folder, frames: list[np.ndarray], first_mask: np.ndarray, lossless: bool):
    """A DAVIS root with sequence "libby": ``frames`` (PNG when ``lossless``, else the bundled JPEG files)."""
    bundled = REPO / "data/samples/JPEGImages/480p/libby"
    image = (lambda seq, t, rng: frames[t]) if lossless else (lambda seq, t, rng: bundled / f"{t:05d}.jpg")
    return write_davis_root(folder, {"libby": len(frames)}, image=image, frame_ext="png",
                            labels=lambda seq, t: first_mask if t == 0 else None).root


def _predict(root, out, weights) -> list[bytes]:
    code = main(["predict", "-c", str(REPO / "configs" / "davis_lite.yaml"), "--data.root", str(root),
                 "--data.sequences", "[libby]", "--output", str(out), "--finetune_steps", str(STEPS),
                 "--model.init_from", str(weights), "--trainer.logger.init_args.save_dir", str(out.parent / "logs")])
    assert code == 0
    return [p.read_bytes() for p in sorted((out / "libby").glob("*.png"))]


def _api(segmenter, video, first_mask, folder) -> list[bytes]:
    state = segmenter.init_state(video)
    segmenter.add_mask(state, frame=0, mask=first_mask)
    streamed = list(segmenter.propagate(state, finetune_steps=STEPS, reid=True))
    state.close()
    assert [t for t, _ in streamed] == list(range(FRAMES)) * 2  # forward pass, then the re-ID-corrected frames
    assert all(np.array_equal(ids, state.result.labels[t]) for t, ids in streamed[FRAMES:])
    for t, labels in enumerate(state.result.labels):
        write_labels(folder / f"{t:05d}.png", labels)
    return [p.read_bytes() for p in sorted(folder.glob("*.png"))]


def test_api_on_an_array_and_on_a_video_matches_predict(tmp_path, weights):
    paths = sorted((REPO / "data/samples/JPEGImages/480p/libby").glob("*.jpg"))[:FRAMES]
    frames = np.stack([read_frame(p) for p in paths])
    first = read_labels(REPO / "data/samples/Annotations/480p/libby/00000.png")
    segmenter = Segmenter.from_pretrained(weights)
    assert segmenter.settings.propagation.crop_size == 321 and segmenter.net.boundary_band == 10  # as recorded

    expected = _predict(_root(tmp_path / "jpeg", list(frames), first, lossless=False), tmp_path / "out1", weights)
    assert len(expected) == FRAMES
    assert _api(segmenter, frames, first, tmp_path / "api-array") == expected

    video = tmp_path / "libby.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 24, (frames.shape[2], frames.shape[1]))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v videos")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    decoded = list(read_video(video))
    assert len(decoded) == FRAMES
    from_video = _predict(_root(tmp_path / "decoded", decoded, first, lossless=True), tmp_path / "out2", weights)
    assert _api(segmenter, video, first, tmp_path / "api-video") == from_video


def test_api_errors_and_a_later_mask_frame(tmp_path, weights):
    segmenter = Segmenter.from_pretrained(weights)
    with pytest.raises(ValueError, match="expected a .T, H, W, 3. uint8 RGB array"):
        segmenter.init_state(np.zeros((4, 10, 10), np.uint8))
    frames = np.stack([read_frame(p) for p in sorted((REPO / "data/samples/JPEGImages/480p/libby").glob("*.jpg"))[:4]])
    state = segmenter.init_state(frames, work_dir=tmp_path / "work")
    with pytest.raises(ValueError, match="add_mask"):
        next(segmenter.propagate(state))
    with pytest.raises(ValueError, match="mask is empty"):
        segmenter.add_mask(state, 0, np.zeros(frames.shape[1:3], np.uint8))
    mask = read_labels(REPO / "data/samples/Annotations/480p/libby/00002.png")
    segmenter.add_mask(state, frame=2, mask=mask)
    out = list(segmenter.propagate(state, finetune_steps=0, reid=False))
    assert [t for t, _ in out] == [2, 3] and np.array_equal(out[0][1], mask)
    assert sorted(os.listdir(tmp_path / "work" / "JPEGImages" / "480p" / "video-from-00002")) == ["00000.png",
                                                                                                "00001.png"]
