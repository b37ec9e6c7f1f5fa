"""An installed (not editable) vsreid works from any folder: the shipped configs, weights and sample come with it,
`vsreid segment` turns an MP4 and a first-frame mask into masks and an overlay video, `vsreid predict -c davis_lite`
runs, and nothing is written into the data."""
from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO
from vsreid.data.labels import read_frame, read_labels

FRAMES = 8


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package built from this checkout and installed into a folder of its own (``pip install --target``,
    which leaves this environment's installation alone; dependencies from this environment); returns (the
    environment to run it with, the folder of its ``vsreid`` script)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(REPO)], check=True, capture_output=True, timeout=600)
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    return env, target / "bin"


def test_installed_package_segments_a_video_and_predicts_from_an_empty_folder(installed, tmp_path):
    env, bin_dir = installed
    work = tmp_path / "empty"
    work.mkdir()
    where = subprocess.run([sys.executable, "-c", "import vsreid, vsreid.resources as r; print(vsreid.__file__); "
                            "print(r.config_path('davis_lite')); print(r.weights_path('lite0'))"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(not p.startswith(str(REPO)) for p in where), where  # the installed copy, not this checkout

    frames = [read_frame(p) for p in sorted((REPO / "data/samples/JPEGImages/480p/libby").glob("*.jpg"))[:FRAMES]]
    video = tmp_path / "libby.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 12, frames[0].shape[1::-1])
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v videos")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    mask = REPO / "data/samples/Annotations/480p/libby/00000.png"
    proc = subprocess.run([str(bin_dir / "vsreid"), "segment", str(video), "--mask", str(mask), "--output", "out",
                           "--finetune-steps", "0"], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    masks = sorted((work / "out" / "masks").glob("*.png"))
    assert len(masks) == FRAMES and (work / "out" / "overlay.mp4").stat().st_size > 0
    assert "segment: 8 frames of 854x480" in proc.stdout and "overlay:" in proc.stdout
    first = read_labels(masks[1])
    assert first.shape == (480, 854) and 0.5 < (first == 1).sum() / (read_labels(mask) == 1).sum() < 2

    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True,
                            text=True).stdout
    proc = subprocess.run([str(bin_dir / "vsreid"), "predict", "-c", "davis_lite", "--data.root",
                           str(REPO / "data" / "samples"), "--data.sequences", "[libby]", "--output", "out2",
                           "--finetune_steps", "0", "--reid", "false"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((work / "out2" / "libby").glob("*.png"))) == 49 and "J&F" in proc.stdout
    assert subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True,
                          text=True).stdout == status, "predict wrote into the checkout (flow, logs...)"
