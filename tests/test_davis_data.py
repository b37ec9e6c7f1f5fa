"""DAVIS layer: label PNG I/O, split files, and one-line errors for each kind of bad input."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from vsreid.data import DataError, DavisRoot, davis_palette, read_labels, write_labels


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


def test_split_files_2017_and_2016(make_davis_root, tmp_path):
    root = make_davis_root(tmp_path, ["b", "a"], splits={"val": ["b", "a"]}).root
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
    make_davis_root(tmp_path, ["c"])
    with pytest.raises(DataError, match=r"ImageSets/480p/train.txt: c not in split 'train'"):
        r.sequences("train", ["b", "c"])
    with pytest.raises(DataError, match="split 'test' not found"):
        r.sequences("test")


def test_valid_sequence_info(make_davis_root, tmp_path):
    info = make_davis_root(tmp_path).validate("seq", check_all_frames=True, require_all_annotations=True)
    assert (info.num_frames, info.height, info.width, info.object_ids) == (4, 24, 32, (1, 2))
    assert info.contiguous


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_rgb_annotation(make_davis_root, tmp_path):
    root = make_davis_root(tmp_path).root
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


def test_annotation_size_differs_from_frame(make_davis_root, tmp_path):
    root = make_davis_root(tmp_path).root
    write_labels(root / "Annotations/480p/seq/00001.png", np.zeros((24, 30), np.uint8))
    with pytest.raises(DataError) as e:
        DavisRoot(root).validate("seq")
    assert one_line(e).endswith("seq/00001.png: annotation size 30x24 differs from its frame 32x24")


def test_missing_frame(make_davis_root, tmp_path):
    root = make_davis_root(tmp_path, frames=5).root
    (root / "JPEGImages/480p/seq/00002.jpg").unlink()
    (root / "Annotations/480p/seq/00002.png").unlink()
    with pytest.raises(DataError) as e:
        DavisRoot(root).validate("seq")
    assert one_line(e) == f"{root}/JPEGImages/480p/seq: missing frames 00002 (frame numbers must have no gaps)"


def test_extra_annotation(make_davis_root, tmp_path):
    root = make_davis_root(tmp_path).root
    write_labels(root / "Annotations/480p/seq/00009.png", np.zeros((24, 32), np.uint8))
    with pytest.raises(DataError) as e:
        DavisRoot(root).validate("seq")
    assert one_line(e).endswith("seq/00009.png: annotation without a frame (extra frame)")


def test_missing_annotation_when_required(make_davis_root, tmp_path):
    root = make_davis_root(tmp_path).root
    (root / "Annotations/480p/seq/00003.png").unlink()
    DavisRoot(root).validate("seq")  # only the first frame is needed for prediction
    with pytest.raises(DataError) as e:
        DavisRoot(root).validate("seq", require_all_annotations=True)
    assert one_line(e).endswith("seq/00003.png: annotation missing for this frame")


@pytest.mark.parametrize("content, problem", [
    (b"", "unreadable image (not a valid JPEG/PNG)"), (b"not a jpeg at all", "unreadable image (not a valid JPEG/PNG)"),
    (b"\xff\xd8\xff\xe0garbage", "truncated JPEG (no end-of-image marker)"), ("half", "truncated JPEG (no end-of-image marker)")])
def test_unreadable_jpeg(make_davis_root, tmp_path, content, problem):
    root = make_davis_root(tmp_path).root
    path = root / "JPEGImages/480p/seq/00002.jpg"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if content == "half" else content)
    DavisRoot(root).validate("seq")  # only the first frame is decoded by default
    with pytest.raises(DataError) as e:
        DavisRoot(root).validate("seq", check_all_frames=True)
    assert one_line(e).endswith(f"seq/00002.jpg: {problem}")


def test_unreadable_first_jpeg(make_davis_root, tmp_path):
    root = make_davis_root(tmp_path).root
    (root / "JPEGImages/480p/seq/00000.jpg").write_bytes(b"nope")
    with pytest.raises(DataError) as e:
        DavisRoot(root).validate("seq")
    assert one_line(e).endswith("seq/00000.jpg: unreadable image (not a valid JPEG/PNG)")


def test_empty_first_frame_mask(make_davis_root, tmp_path):
    root = make_davis_root(tmp_path).root
    lab = np.zeros((24, 32), np.uint8)
    lab[:3] = 255  # void only
    write_labels(root / "Annotations/480p/seq/00000.png", lab)
    with pytest.raises(DataError) as e:
        DavisRoot(root).validate("seq")
    assert one_line(e).endswith("seq/00000.png: first-frame mask is empty (no object to segment)")


def test_missing_first_frame_annotation(make_davis_root, tmp_path):
    root = make_davis_root(tmp_path).root
    (root / "Annotations/480p/seq/00000.png").unlink()
    with pytest.raises(DataError) as e:
        DavisRoot(root).validate("seq")
    assert one_line(e).endswith("seq/00000.png: first-frame annotation missing")


def test_254_objects_accepted(make_davis_root, tmp_path):
    lab = (np.arange(24 * 32) % 256).reshape(24, 32).astype(np.uint8)  # ids 1..254, 0 and 255 (void)
    assert make_davis_root(tmp_path, labels=lambda seq, t: lab).validate("seq").object_ids == tuple(range(1, 255))


def test_more_than_254_objects_rejected(make_davis_root, tmp_path, monkeypatch):
    """8-bit id maps hold at most 254 objects (255 is void), so the limit is lowered to reach the check."""
    import vsreid.data.davis as davis

    root = make_davis_root(tmp_path).root
    monkeypatch.setattr(davis, "MAX_OBJECTS", 1)
    with pytest.raises(DataError) as e:
        DavisRoot(root).validate("seq")
    assert one_line(e).endswith("seq/00000.png: 2 objects, at most 1 are supported")


def test_non_contiguous_ids_reported_and_kept(make_davis_root, tmp_path, caplog):
    lab = np.zeros((24, 32), np.uint8)
    lab[2:8, 2:8] = 1
    lab[10:16, 10:16] = 3
    root = make_davis_root(tmp_path, labels=lambda seq, t: lab).root
    with caplog.at_level(logging.WARNING):
        info = DavisRoot(root).validate("seq")
    assert info.object_ids == (1, 3) and not info.contiguous
    assert "non-contiguous object ids [1, 3]" in caplog.text


def test_not_a_davis_root(make_davis_root, tmp_path):
    with pytest.raises(DataError, match="expected a DAVIS root"):
        DavisRoot(tmp_path)
    with pytest.raises(DataError, match="sequence folder not found"):
        make_davis_root(tmp_path).sequences(sequences=["nope"])


def test_real_val_subset_is_valid(davis_val):
    root = DavisRoot(davis_val)
    assert len(root.sequences()) == 9
    info = root.validate("car-shadow", check_all_frames=True, require_all_annotations=True)
    assert (info.num_frames, info.height, info.width, info.object_ids) == (40, 480, 854, (1,))


def test_tools_take_split_alias_underscores_and_list_forms(make_davis_root, tmp_path, capsys):
    """`--split` with `--set` (the DAVIS toolkit's spelling) as its alias, every option with `_` as well as `-`, and
    `--sequences` as tools take it (`a b`) or as the Lightning commands do (`[a,b]`, `a,b`)."""
    from vsreid.cli import main

    root = make_davis_root(tmp_path / "root", ["a", "b", "c"], frames=2, splits={"val": ["b", "a"]}).root
    runs = {"--split val": 2, "--set val": 2, "--sequences a c": 2, "--sequences [a,c]": 2, "--sequences a,c": 2,
            "--sequences [b]": 1, "": 3}
    for options, count in runs.items():
        for spelling in ("--flow-dir", "--flow_dir"):
            assert main(["check", str(root), *options.split(), spelling, str(tmp_path / "flow"), "--no_progress"]) == 0
            assert capsys.readouterr().out.startswith(f"check: {count} sequence(s), {2 * count} frames"), options
    with pytest.raises(SystemExit):
        main(["check", str(root), "--set", "val", "--sequences", "a"])  # one or the other
