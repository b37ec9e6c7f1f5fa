"""DAVIS layer: label PNG I/O, split files, and one-line errors for each kind of bad input."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vsreid.data import DataError, DavisRoot, davis_palette, read_labels, write_frame, write_labels


def make_root(tmp_path: Path, seq: str = "seq", frames: int = 4, size=(24, 32), labels=None) -> Path:
    """A tiny DAVIS root: textured frames and a 2-object annotation on every frame."""
    rng = np.random.default_rng(0)
    h, w = size
    for t in range(frames):
        write_frame(tmp_path / "JPEGImages/480p" / seq / f"{t:05d}.jpg", rng.integers(0, 255, (h, w, 3), np.uint8))
        lab = np.zeros((h, w), np.uint8) if labels is None else labels.copy()
        if labels is None:
            lab[2:10, 3 + t:12 + t] = 1
            lab[14:20, 20:28] = 2
        write_labels(tmp_path / "Annotations/480p" / seq / f"{t:05d}.png", lab)
    return tmp_path


def test_palette_roundtrip_and_colours(tmp_path):
    lab = np.arange(24 * 32, dtype=np.uint32).reshape(24, 32).astype(np.uint8)
    write_labels(tmp_path / "a.png", lab)
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == "P"
        assert np.array_equal(np.array(im.getpalette()[:12]).reshape(4, 3), [[0, 0, 0], [128, 0, 0], [0, 128, 0],
                                                                              [128, 128, 0]])
    assert np.array_equal(read_labels(tmp_path / "a.png"), lab)
    assert davis_palette()[255].tolist() == [224, 224, 192]
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary file left behind


def test_grayscale_ids_and_davis2016_binary(tmp_path):
    Image.fromarray(np.array([[0, 1], [2, 255]], np.uint8), mode="L").save(tmp_path / "ids.png")
    assert read_labels(tmp_path / "ids.png").tolist() == [[0, 1], [2, 255]]
    Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8), mode="L").save(tmp_path / "bin.png")
    assert read_labels(tmp_path / "bin.png").tolist() == [[0, 1], [1, 0]]


def test_split_files_2017_and_2016(tmp_path):
    root = make_root(tmp_path, "b")
    make_root(tmp_path, "a")
    (root / "ImageSets/2017").mkdir(parents=True)
    (root / "ImageSets/2017/val.txt").write_text("b\na\n")
    (root / "ImageSets/480p").mkdir(parents=True)
    (root / "ImageSets/480p/train.txt").write_text(
        "/JPEGImages/480p/a/00000.jpg /Annotations/480p/a/00000.png\n"
        "/JPEGImages/480p/a/00001.jpg /Annotations/480p/a/00001.png\n"
        "/JPEGImages/480p/b/00000.jpg /Annotations/480p/b/00000.png\n")
    r = DavisRoot(root)
    assert r.sequences() == ["a", "b"]
    assert r.sequences("val") == ["b", "a"]
    assert r.sequences("train") == ["a", "b"]
    assert r.sequences(sequences=["b"]) == ["b"]
    assert r.sequences("train", ["b"]) == ["b"]
    make_root(tmp_path, "c")
    with pytest.raises(DataError, match=r"ImageSets/480p/train.txt: c not in split 'train'"):
        r.sequences("train", ["b", "c"])
    with pytest.raises(DataError, match="split 'test' not found"):
        r.sequences("test")


def test_valid_sequence_info(tmp_path):
    info = DavisRoot(make_root(tmp_path)).validate("seq", check_all_frames=True, require_all_annotations=True)
    assert (info.num_frames, info.height, info.width, info.object_ids) == (4, 24, 32, (1, 2))
    assert info.contiguous


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_rgb_annotation(tmp_path):
    root = make_root(tmp_path)
    Image.new("RGB", (32, 24), (128, 0, 0)).save(root / "Annotations/480p/seq/00002.png")
    with pytest.raises(DataError) as e:
        DavisRoot(root).validate("seq")
    assert one_line(e) == f"{root}/Annotations/480p/seq/00002.png: RGB image, expected a palette or grayscale id map"


def test_opaque_grayscale_alpha_annotation_reads_as_grayscale(tmp_path):
    """The official DAVIS 2016 package has one LA-mode mask (bear/00077.png) with a fully opaque alpha."""
    mask = np.zeros((24, 32), np.uint8)
    mask[5:10, 5:12] = 255
    path = tmp_path / "la.png"
    Image.fromarray(np.stack([mask, np.full_like(mask, 255)], -1), mode="LA").save(path)
    assert np.array_equal(read_labels(path), (mask == 255).astype(np.uint8))
    Image.fromarray(np.stack([mask, np.full_like(mask, 7)], -1), mode="LA").save(path)
    with pytest.raises(DataError, match="transparent pixels"):
        read_labels(path)


def test_annotation_size_differs_from_frame(tmp_path):
    root = make_root(tmp_path)
    write_labels(root / "Annotations/480p/seq/00001.png", np.zeros((24, 30), np.uint8))
    with pytest.raises(DataError) as e:
        DavisRoot(root).validate("seq")
    assert one_line(e).endswith("seq/00001.png: annotation size 30x24 differs from its frame 32x24")


def test_missing_frame(tmp_path):
    root = make_root(tmp_path, frames=5)
    (root / "JPEGImages/480p/seq/00002.jpg").unlink()
    (root / "Annotations/480p/seq/00002.png").unlink()
    with pytest.raises(DataError) as e:
        DavisRoot(root).validate("seq")
    assert one_line(e) == f"{root}/JPEGImages/480p/seq: missing frames 00002 (frame numbers must have no gaps)"


def test_extra_annotation(tmp_path):
    root = make_root(tmp_path)
    write_labels(root / "Annotations/480p/seq/00009.png", np.zeros((24, 32), np.uint8))
    with pytest.raises(DataError) as e:
        DavisRoot(root).validate("seq")
    assert one_line(e).endswith("seq/00009.png: annotation without a frame (extra frame)")


def test_missing_annotation_when_required(tmp_path):
    root = make_root(tmp_path)
    (root / "Annotations/480p/seq/00003.png").unlink()
    DavisRoot(root).validate("seq")  # only the first frame is needed for prediction
    with pytest.raises(DataError) as e:
        DavisRoot(root).validate("seq", require_all_annotations=True)
    assert one_line(e).endswith("seq/00003.png: annotation missing for this frame")


@pytest.mark.parametrize("content, problem", [
    (b"", "unreadable image (not a valid JPEG/PNG)"), (b"not a jpeg at all", "unreadable image (not a valid JPEG/PNG)"),
    (b"\xff\xd8\xff\xe0garbage", "truncated JPEG (no end-of-image marker)"), ("half", "truncated JPEG (no end-of-image marker)")])
def test_unreadable_jpeg(tmp_path, content, problem):
    root = make_root(tmp_path)
    path = root / "JPEGImages/480p/seq/00002.jpg"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if content == "half" else content)
    DavisRoot(root).validate("seq")  # only the first frame is decoded by default
    with pytest.raises(DataError) as e:
        DavisRoot(root).validate("seq", check_all_frames=True)
    assert one_line(e).endswith(f"seq/00002.jpg: {problem}")


def test_unreadable_first_jpeg(tmp_path):
    root = make_root(tmp_path)
    (root / "JPEGImages/480p/seq/00000.jpg").write_bytes(b"nope")
    with pytest.raises(DataError) as e:
        DavisRoot(root).validate("seq")
    assert one_line(e).endswith("seq/00000.jpg: unreadable image (not a valid JPEG/PNG)")


def test_empty_first_frame_mask(tmp_path):
    root = make_root(tmp_path)
    lab = np.zeros((24, 32), np.uint8)
    lab[:3] = 255  # void only
    write_labels(root / "Annotations/480p/seq/00000.png", lab)
    with pytest.raises(DataError) as e:
        DavisRoot(root).validate("seq")
    assert one_line(e).endswith("seq/00000.png: first-frame mask is empty (no object to segment)")


def test_missing_first_frame_annotation(tmp_path):
    root = make_root(tmp_path)
    (root / "Annotations/480p/seq/00000.png").unlink()
    with pytest.raises(DataError) as e:
        DavisRoot(root).validate("seq")
    assert one_line(e).endswith("seq/00000.png: first-frame annotation missing")


def test_254_objects_accepted(tmp_path):
    lab = (np.arange(24 * 32) % 256).reshape(24, 32).astype(np.uint8)  # ids 1..254, 0 and 255 (void)
    assert DavisRoot(make_root(tmp_path, labels=lab)).validate("seq").object_ids == tuple(range(1, 255))


def test_more_than_254_objects_rejected(tmp_path, monkeypatch):
    """8-bit id maps hold at most 254 objects (255 is void), so the limit is lowered to reach the check."""
    import vsreid.data.davis as davis

    root = make_root(tmp_path)
    monkeypatch.setattr(davis, "MAX_OBJECTS", 1)
    with pytest.raises(DataError) as e:
        DavisRoot(root).validate("seq")
    assert one_line(e).endswith("seq/00000.png: 2 objects, at most 1 are supported")


def test_non_contiguous_ids_reported_and_kept(tmp_path, caplog):
    lab = np.zeros((24, 32), np.uint8)
    lab[2:8, 2:8] = 1
    lab[10:16, 10:16] = 3
    root = make_root(tmp_path, labels=lab)
    with caplog.at_level(logging.WARNING):
        info = DavisRoot(root).validate("seq")
    assert info.object_ids == (1, 3) and not info.contiguous
    assert "non-contiguous object ids [1, 3]" in caplog.text


def test_not_a_davis_root(tmp_path):
    with pytest.raises(DataError, match="expected a DAVIS root"):
        DavisRoot(tmp_path)
    with pytest.raises(DataError, match="sequence folder not found"):
        DavisRoot(make_root(tmp_path)).sequences(sequences=["nope"])


def test_real_val_subset_is_valid(davis_val):
    root = DavisRoot(davis_val)
    assert len(root.sequences()) == 9
    info = root.validate("car-shadow", check_all_frames=True, require_all_annotations=True)
    assert (info.num_frames, info.height, info.width, info.object_ids) == (40, 480, 854, (1,))
