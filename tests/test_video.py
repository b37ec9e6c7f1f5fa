"""``vsreid import-video``: a video file becomes a DAVIS-layout sequence (frames and optional first-frame mask)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from vsreid.cli import main
from vsreid.data.davis import DavisRoot
from vsreid.data.errors import DataError
from vsreid.data.labels import read_frame, read_labels, write_labels
from vsreid.data.video import import_video, scaled_size

LEVELS = [20 * i for i in range(12)]  # the grey level of each source frame


def write_video(folder, width=200, height=150):
    """A 12-frame video whose frame i is uniform grey LEVELS[i]; mp4v .mp4, or MJPG .avi if mp4v is missing."""
    for fourcc, name in (("mp4v", "clip.mp4"), ("MJPG", "clip.avi")):
        path = folder / name
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (width, height))
        if writer.isOpened():
            for level in LEVELS:
                writer.write(np.full((height, width, 3), level, np.uint8))
            writer.release()
            if path.is_file() and path.stat().st_size > 0:
                return path
    pytest.skip("this OpenCV build can write neither mp4v .mp4 nor MJPG .avi videos")


@pytest.fixture
def video(tmp_path):
    return write_video(tmp_path)


def test_scaled_size_keeps_aspect_and_even_width():
    assert scaled_size(150, 200, 480) == (480, 640)
    assert scaled_size(1080, 1920, 480) == (480, 854)
    assert scaled_size(101, 150, 480) == (480, 712)


def test_import_all_frames(tmp_path, video, capsys):
    out = tmp_path / "root"
    assert main(["import-video", str(video), "--out", str(out), "--name", "clip"]) == 0
    assert "12 frames of 640x480" in capsys.readouterr().out
    root = DavisRoot(out)
    assert root.all_sequences() == ["clip"]
    paths = root.frame_paths("clip")
    assert [p.name for p in paths] == [f"{i:05d}.jpg" for i in range(12)]
    frames = [read_frame(p) for p in paths]
    assert all(f.shape == (480, 640, 3) for f in frames)
    assert np.allclose([f.mean() for f in frames], LEVELS, atol=8)
    assert sorted(p.name for p in (out / "JPEGImages" / "480p").iterdir()) == ["clip"]  # no temporary folder left
    assert not (out / "Annotations").exists()


def test_every_and_max_frames(tmp_path, video):
    result = import_video(video, tmp_path / "root", "clip", height=96, every=3, max_frames=3, progress=False)
    assert (result.num_frames, result.height, result.width) == (3, 96, 128)
    frames = [read_frame(p) for p in DavisRoot(tmp_path / "root").frame_paths("clip")]
    assert np.allclose([f.mean() for f in frames], LEVELS[0:9:3], atol=8)


def test_first_frame_mask_is_resized_with_nearest_neighbour(tmp_path, video):
    labels = np.zeros((150, 200), np.uint8)
    labels[30:90, 40:100], labels[100:140, 120:190] = 1, 2
    mask = write_labels(tmp_path / "mask.png", labels)
    assert main(["import-video", str(video), "--out", str(tmp_path / "root"), "--name", "clip",
                 "--mask", str(mask)]) == 0
    root = DavisRoot(tmp_path / "root")
    written = read_labels(root.annotation_path("clip", "00000"))
    assert written.shape == (480, 640)
    assert set(np.unique(written)) == {0, 1, 2}
    assert np.array_equal(written, cv2.resize(labels, (640, 480), interpolation=cv2.INTER_NEAREST))
    assert root.validate("clip").object_ids == (1, 2)


def test_mask_with_another_aspect_ratio_is_rejected(tmp_path, video):
    mask = write_labels(tmp_path / "mask.png", np.ones((100, 100), np.uint8))
    with pytest.raises(DataError, match=r"mask.png: mask is 100x100, its aspect ratio differs from the video's 200x"):
        import_video(video, tmp_path / "root", "clip", mask=mask, progress=False)
    assert not (tmp_path / "root" / "JPEGImages" / "480p" / "clip").exists()


def test_empty_mask_is_rejected(tmp_path, video):
    mask = write_labels(tmp_path / "mask.png", np.zeros((90, 160), np.uint8))
    with pytest.raises(DataError, match=r"mask.png: mask is empty \(no object to segment\)"):
        import_video(video, tmp_path / "root", "clip", mask=mask, progress=False)
    assert not (tmp_path / "root" / "JPEGImages" / "480p" / "clip").exists()


def test_a_non_video_file_is_a_one_line_error(tmp_path, capsys):
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video\n")
    assert main(["import-video", str(fake), "--out", str(tmp_path / "root"), "--name", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"vsreid import-video: error: {fake}: not a readable video "
                   "(OpenCV/FFmpeg could not decode a frame)"]
    assert not (tmp_path / "root").exists()


def test_missing_video_and_existing_sequence(tmp_path, video):
    with pytest.raises(DataError, match="nope.mp4: file not found"):
        import_video(tmp_path / "nope.mp4", tmp_path / "root", "clip", progress=False)
    import_video(video, tmp_path / "root", "clip", max_frames=2, progress=False)
    with pytest.raises(DataError, match="clip: sequence folder already exists and is not empty"):
        import_video(video, tmp_path / "root", "clip", progress=False)
