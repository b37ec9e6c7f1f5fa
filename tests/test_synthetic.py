"""Synthetic and composite sequences: determinism, DAVIS layout, the promised events in the ground truth, the CLI."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vsreid.cli import main
from vsreid.data import DavisRoot
from vsreid.data.composite import composite_sequence, random_composite, source_part
from vsreid.data.synthetic import ALL_EVENTS, EVENTS, generate_sequence, min_frames, read_meta, write_sequence
from vsreid.data.synthetic_roots import write_synthetic_root

SIZE = (96, 176)
K = 5
T = min_frames(K)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> tuple[Path, list[str]]:
    path = tmp_path_factory.mktemp("synth")
    return path, write_synthetic_root(path, 2, seed=11, size=SIZE, num_frames=T, min_absence=K)


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def _check_events(labels: np.ndarray, meta: dict, events) -> None:
    """The events listed in ``meta`` are really in the id maps ``labels`` (T, H, W)."""
    ids = range(1, len(meta["objects"]) + 1)
    area = {i: (labels == i).sum(axis=(1, 2)) for i in ids}
    for o in meta["objects"]:
        assert area[o["id"]].tolist() == o["area"]
    found, k = meta["events"], meta["min_absence"]
    guaranteed = set(events) - {"overlap"} if meta["mode"] == "composite" else set(events)
    assert guaranteed <= set(found)
    for name in ("occlusion", "exit"):
        if name in found:
            i, (s, e) = found[name]["object"], found[name]["absent"]
            a = area[i]
            assert e - s >= k and not a[s:e].any() and a[s - 1] > 0 and a[e] > 0
            assert a[e:].max() * 10 >= a[0]  # found again above the 1/10 "lost" threshold
            before, after = labels[s - 1] == i, labels[e] == i
            if name == "occlusion":  # vanished and came back inside the frame
                assert not _touches_border(before) and not _touches_border(after)
            elif meta["mode"] == "composite":  # out of view throughout (a detached part of a real mask, e.g. a
                assert not any(meta["objects"][i - 1]["in_frame_area"][s:e])  # racket, may show without a border)
            else:  # left and came back across the border
                assert _touches_border(before) and _touches_border(after)
    if "reappear" in found:  # vanished inside the frame, back inside it far away
        i, (s, e) = found["reappear"]["object"], found["reappear"]["absent"]
        a = area[i]
        assert e - s >= k and not a[s:e].any() and a[s - 1] > 0 and a[e] > 0
        before, after = labels[s - 1] == i, labels[e] == i
        assert not _touches_border(before) and not _touches_border(after)
        (y0, x0), (y1, x1) = np.argwhere(before).mean(axis=0), np.argwhere(after).mean(axis=0)
        assert np.hypot(x1 - x0, y1 - y0) >= 0.4 * labels.shape[2]
    if "overlap" in found:
        front, back = found["overlap"]["front"], found["overlap"]["back"]
        for t in found["overlap"]["frames"]:
            f, b = labels[t] == front, labels[t] == back
            assert f.any() and b.any()
            grown = f.copy()
            grown[1:] |= f[:-1]
            grown[:-1] |= f[1:]
            grown[:, 1:] |= f[:, :-1]
            grown[:, :-1] |= f[:, 1:]
            assert (grown & b).any()  # the two objects touch where one hides the other
    if "scale" in found:
        o = meta["objects"][found["scale"]["object"] - 1]
        assert max(o["full_area"]) >= 2 * min(o["full_area"])


def test_same_seed_same_bytes_different_seed_differs(root, tmp_path):
    path, names = root
    assert names == ["synth-11", "synth-12"]
    again = write_synthetic_root(tmp_path, 2, seed=11, size=SIZE, num_frames=T, min_absence=K)
    assert again == names
    assert _files(tmp_path) == _files(path)
    first = _files(path)
    for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
        for t in (0, T // 2):
            a, b = (first[f"{kind}/480p/{n}/{t:05d}.{ext}"] for n in names)
            assert a != b


def test_davis_layout(root):
    path, names = root
    davis = DavisRoot(path)
    assert davis.sequences("val") == names
    for name in names:
        info = davis.validate(name, check_all_frames=True, require_all_annotations=True)
        assert (info.num_frames, info.height, info.width) == (T, *SIZE)
        assert info.object_ids == (1, 2, 3) and info.contiguous
        labels = davis.read_annotations(name)
        assert set(np.unique(labels)) <= {0, 1, 2, 3}
        assert davis.read_frame(name, 0).std() > 20  # textured, not flat colours


def test_events_in_ground_truth(root):
    path, names = root
    for name in names:
        meta = read_meta(path, name)
        _check_events(DavisRoot(path).read_annotations(name), meta, EVENTS)
        assert meta["events"]["occlusion"]["object"] == 1 and meta["events"]["exit"]["object"] == 2
        assert meta["events"]["distractor"]["while_absent"]


def test_distractor_is_an_unlabelled_look_alike():
    seq = generate_sequence("d", 3, size=SIZE, num_frames=T, num_objects=4, min_absence=K)
    masks = seq.distractor_masks[0]
    assert seq.distractor_masks.shape == (1, T, *SIZE)
    assert not seq.labels[masks].any()
    t = seq.meta["events"]["distractor"]["while_absent"][0]
    assert masks[t].sum() > 0 and not (seq.labels[t] == 1).any()
    look = seq.frames[t][masks[t]].mean(axis=0)
    dist = {i: np.linalg.norm(seq.frames[0][seq.labels[0] == i].mean(axis=0) - look) for i in range(1, 5)}
    assert min(dist, key=dist.get) == 1


@pytest.mark.parametrize("num_objects", [2, 3, 4])
def test_events_hold_over_seeds(num_objects):
    for seed in range(3):
        seq = generate_sequence("s", seed, size=SIZE, num_frames=T + 3 * seed, num_objects=num_objects,
                                min_absence=K - seed)
        assert set(np.unique(seq.labels[0])) == set(range(num_objects + 1))
        _check_events(seq.labels, seq.meta, EVENTS)


def test_default_size_and_event_subset():
    seq = generate_sequence("big", 0)
    assert seq.frames.shape == (40, 240, 432, 3) and seq.labels.dtype == np.uint8
    _check_events(seq.labels, seq.meta, EVENTS)
    only = generate_sequence("exit", 0, size=SIZE, num_frames=T, num_objects=2, events=("exit",), min_absence=K)
    assert "exit" in only.meta["events"] and "occluder" not in only.meta["depth_order"]
    assert only.distractor_masks.shape == (0, T, *SIZE) and only.meta["distractors"] == []


@pytest.mark.parametrize("kw, message", [({"num_frames": 20}, "at least"), ({"num_objects": 5}, "2 to 4"),
                                         ({"size": (96, 120)}, "width"), ({"events": ("teleport",)}, "unknown")])
def test_bad_settings(kw, message):
    with pytest.raises(ValueError, match=message):
        generate_sequence("x", 0, **({"size": SIZE, "num_frames": T, "min_absence": K} | kw))


def test_cli(tmp_path, capsys):
    out = tmp_path / "root"
    args = ["synth", "--out", str(out), "--sequences", "1", "--seed", "4", "--frames", str(T), "--height", "96",
            "--width", "176", "--objects", "2", "--min-absence", str(K), "--events", "occlusion,exit",
            "--split", "train"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "synth-4: 34 frames 176x96, 2 objects; occlusion obj1" in printed and "wrote 1 sequences" in printed
    davis = DavisRoot(out)
    assert davis.sequences("train") == ["synth-4"]
    assert davis.validate("synth-4", check_all_frames=True, require_all_annotations=True).object_ids == (1, 2)
    assert main(["synth", "--out", str(out), "--frames", "10"]) == 2
    assert "at least" in capsys.readouterr().err


def test_composite_of_real_objects(davis_train, tmp_path):
    seq = composite_sequence("comp", davis_train, [("surf", 0), ("tennis", 10), "scooter-gray"], "boat", seed=1,
                             size=SIZE, num_frames=T, min_absence=K)
    assert set(np.unique(seq.labels[0])) == {0, 1, 2, 3}
    _check_events(seq.labels, seq.meta, EVENTS)
    assert not seq.labels[seq.distractor_masks[0]].any()
    assert [o["sequence"] for o in seq.meta["sources"]["objects"]] == ["surf", "tennis", "scooter-gray"]
    write_sequence(tmp_path, seq)
    info = DavisRoot(tmp_path).validate("comp", check_all_frames=True, require_all_annotations=True)
    assert info.object_ids == (1, 2, 3) and read_meta(tmp_path, "comp")["mode"] == "composite"


def test_composite_keeps_objects_off_the_background_object(davis_train, monkeypatch):
    """A plan that puts an object over the background sequence's own object is drawn again: the kept plan overlaps
    it least; a plan that keeps clear is the first one (the sequence earlier versions made for the seed)."""
    from vsreid.data import composite

    def make():
        return composite_sequence("comp", davis_train, [("surf", 0), ("tennis", 10), "scooter-gray"], "boat", seed=1,
                                  size=SIZE, num_frames=T, min_absence=K)

    monkeypatch.setattr(composite, "MAX_BACKGROUND_OVERLAP", 1.0)
    first = make()
    assert first.meta["plan_attempt"] == 0
    monkeypatch.setattr(composite, "MAX_BACKGROUND_OVERLAP", -1.0)  # never clear enough: every plan is drawn
    least = make()
    assert least.meta["background_object_overlap"] <= first.meta["background_object_overlap"]
    background = composite._background_object(DavisRoot(davis_train), "boat", SIZE, T)
    assert composite._overlap_with(least.labels, background) == pytest.approx(least.meta["background_object_overlap"],
                                                                              abs=1e-4)
    _check_events(least.labels, least.meta, EVENTS)


def test_cli_composite(davis_train, tmp_path, capsys):
    args = ["synth", "--out", str(tmp_path), "--sequences", "1", "--seed", "2", "--frames", str(T), "--height", "96",
            "--width", "176", "--objects", "2", "--min-absence", str(K), "--composite-from", str(davis_train)]
    assert main(args) == 0
    assert "composite-2: 34 frames 176x96, 2 objects" in capsys.readouterr().out
    assert DavisRoot(tmp_path).validate("composite-2", require_all_annotations=True).object_ids == (1, 2)


@pytest.mark.parametrize("num_objects", [3, 4])
def test_reappear_event_over_seeds(num_objects):
    """The optional event: the last object vanishes in the frame and reappears far away, on top of all the others."""
    for seed in range(3):
        seq = generate_sequence("r", seed, size=SIZE, num_frames=T + 5 * seed, num_objects=num_objects,
                                events=ALL_EVENTS, min_absence=K)
        assert seq.meta["events"]["reappear"]["object"] == num_objects
        _check_events(seq.labels, seq.meta, ALL_EVENTS)
    with pytest.raises(ValueError, match="3 or 4"):
        generate_sequence("r", 0, size=SIZE, num_frames=T, num_objects=2, events=ALL_EVENTS, min_absence=K)


def test_default_events_leave_sequences_unchanged():
    """Asking for the optional event changes nothing when it is not asked for: the default frames stay the same."""
    plain = generate_sequence("s", 5, size=SIZE, num_frames=T, min_absence=K)
    again = generate_sequence("s", 5, size=SIZE, num_frames=T, events=EVENTS, min_absence=K)
    assert np.array_equal(plain.frames, again.frames) and "reappear" not in plain.meta["events"]


@pytest.fixture(scope="module")
def train_split_root(davis_train, tmp_path_factory) -> Path:
    """The real train subset behind a split file ``train`` that lists all but one of its sequences."""
    path = tmp_path_factory.mktemp("split")
    for folder in ("JPEGImages", "Annotations"):
        (path / folder).symlink_to(Path(davis_train) / folder)
    names = DavisRoot(davis_train).sequences()
    (path / "ImageSets/2017").mkdir(parents=True)
    (path / "ImageSets/2017/train.txt").write_text("".join(f"{n}\n" for n in names[:-1]))
    return path


def test_composite_sources_from_one_part_of_one_split(train_split_root):
    """Objects and background come only from the requested split and part; the two parts are disjoint."""
    listed = DavisRoot(train_split_root).sequences("train")
    tune, report = source_part(listed, "tune"), source_part(listed, "report")
    assert not set(tune) & set(report) and sorted(tune + report) == sorted(listed)
    used = {"tune": set(), "report": set()}
    for part in used:
        for seed in range(3):
            seq = random_composite(f"c{seed}", train_split_root, seed, num_objects=3, source_split="train", part=part,
                                   size=SIZE, num_frames=T, min_absence=K, events=ALL_EVENTS)
            src = seq.meta["sources"]
            used[part] |= {o["sequence"] for o in src["objects"]} | {src["background"]["sequence"]}
            assert (src["split"], src["part"]) == ("train", part)
            _check_events(seq.labels, seq.meta, ALL_EVENTS)
    assert used["tune"] <= set(tune) and used["report"] <= set(report)
    with pytest.raises(ValueError, match="part"):
        source_part(listed, "test")


def test_cli_composite_ranges_split_and_part(train_split_root, tmp_path, capsys):
    args = ["synth", "--out", str(tmp_path), "--sequences", "2", "--seed", "7", "--frames", f"{T}-{T + 6}",
            "--height", "96", "--width", "176", "--objects", "3-4", "--min-absence", str(K),
            "--events", ",".join(ALL_EVENTS), "--composite-from", str(train_split_root), "--composite-split", "train",
            "--composite-part", "report"]
    assert main(args) == 0
    assert "reappear obj" in capsys.readouterr().out
    report = set(source_part(DavisRoot(train_split_root).sequences("train"), "report"))
    for name in ("composite-7", "composite-8"):
        meta = read_meta(tmp_path, name)
        assert T <= meta["num_frames"] <= T + 6 and len(meta["objects"]) in (3, 4)
        assert {o["sequence"] for o in meta["sources"]["objects"]} <= report
        _check_events(DavisRoot(tmp_path).read_annotations(name), meta, ALL_EVENTS)
    assert main(["synth", "--out", str(tmp_path), "--objects", "2", "--events", "reappear"]) == 2
    assert "3 or 4" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path), "--composite-part", "tune"]) == 2
    assert "need --composite-from" in capsys.readouterr().err
