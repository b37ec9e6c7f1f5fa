"""vsreid.metrics and ``vsreid evaluate`` against the plain transcription of the DAVIS protocol in davis_reference."""
from __future__ import annotations

import csv
import math
import os
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import davis_reference as ref
from davis_roots import write_davis_root
from vsreid import cli
from vsreid.data.davis import DavisRoot
from vsreid.data.errors import DataError
from vsreid.data.labels import write_labels
from vsreid.metrics import (DavisJF, boundary_map, boundary_measure, db_statistics, disk, evaluate_results,
                            evaluate_sequence, jaccard_and_boundary, object_statistics, region_similarity)
from vsreid.metrics.measures import boundary_radius

GLOBAL_HEADER = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
ATOL = 1e-9


# ----------------------------------------------------------------------------------------------- data builders
def _shift(labels: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(labels)
    h, w = labels.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        labels[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def _perturb(gt: np.ndarray, n_objects: int) -> np.ndarray:
    """Per frame, in turn: erosion, dilation, shift, emptied frame, swapped ids 1 and 2 (or a shift), unchanged."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    pred = np.where(gt == 255, 0, gt).astype(np.uint8)
    for t in range(len(pred)):
        case = t % 6
        if case == 0:
            pred[t] = cv2.erode(pred[t], kernel)
        elif case == 1:
            pred[t] = cv2.dilate(pred[t], kernel)
        elif case == 2:
            pred[t] = _shift(pred[t], 4, -9)
        elif case == 3:
            pred[t] = 0
        elif case == 4:
            if n_objects >= 2:
                swapped = pred[t].copy()
                swapped[pred[t] == 1], swapped[pred[t] == 2] = 2, 1
                pred[t] = swapped
            else:
                pred[t] = _shift(pred[t], -12, 15)
    return pred


def _synthetic(rng: np.random.Generator, frames: int, height: int, width: int, n_objects: int = 3,
               void: bool = True) -> np.ndarray:
    """(T, H, W) uint8: moving ellipses and rectangles (ids 1..n, later ids on top), void bands around object 1."""
    labels = np.zeros((frames, height, width), np.uint8)
    starts = rng.uniform((0, 0), (width, height), (n_objects, 2))
    speeds = rng.uniform(-3, 3, (n_objects, 2))
    sizes = rng.uniform(0.1, 0.3, (n_objects, 2)) * (width, height)
    for t in range(frames):
        for k in range(n_objects):
            cx, cy = starts[k] + t * speeds[k]
            ax, ay = sizes[k]
            if k % 2:
                cv2.rectangle(labels[t], (int(cx - ax), int(cy - ay)), (int(cx + ax), int(cy + ay)), k + 1, -1)
            else:
                cv2.ellipse(labels[t], (int(cx), int(cy)), (int(ax), int(ay)), 15.0 * t, 0, 360, k + 1, -1)
        if void and t % 2:
            band = cv2.morphologyEx((labels[t] == 1).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
            labels[t][band > 0] = 255
    first_ids = set(np.unique(labels[0])) - {0, 255}
    for k in range(1, n_objects + 1):
        if k not in first_ids:
            labels[0, k:k + 2, 2 * k:2 * k + 3] = k
    return labels


def _make_root(path: Path, sequences: dict[str, np.ndarray], **kw) -> Path:
    """A DAVIS-layout root holding only annotations, (T, H, W) per sequence (frame folders are empty)."""
    return write_davis_root(path, {name: len(labels) for name, labels in sequences.items()}, images=False,
                            labels=lambda seq, t: sequences[seq][t], **kw).root


def _write_results(results: Path, sequences: dict[str, np.ndarray]) -> Path:
    for name, labels in sequences.items():
        for t, frame in enumerate(labels):
            write_labels(results / name / f"{t:05d}.png", frame)
    return results


def _reference(gts: dict[str, np.ndarray], preds: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """Per-object (j, f) frame values keyed ``seq_k`` and the global row, from the reference transcription."""
    per_object = {}
    for name, gt in gts.items():
        j, f = ref.evaluate_sequence(preds[name], gt)
        per_object.update({f"{name}_{k + 1}": (j[k], f[k]) for k in range(len(j))})
    return per_object, ref.global_results(per_object)


def _read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _check_csvs(results: Path, split: str, per_object: dict, expected_global: dict) -> None:
    global_rows = _read_csv(results / f"global_results-{split}.csv")
    assert global_rows[0] == GLOBAL_HEADER and len(global_rows) == 2
    assert global_rows[1] == [f"{expected_global[c]:.3f}" for c in GLOBAL_HEADER]
    rows = _read_csv(results / f"per-sequence_results-{split}.csv")
    assert rows[0] == ["Sequence", "J-Mean", "F-Mean"]
    assert [r[0] for r in rows[1:]] == list(per_object)
    for name, j_text, f_text in rows[1:]:
        j, f = per_object[name]
        assert (j_text, f_text) == (f"{np.mean(j):.3f}", f"{np.mean(f):.3f}")


def _check_result(result, per_object: dict, expected_global: dict) -> None:
    assert list(result.objects) == list(per_object)
    for row, (j, f) in zip(result.object_stats, per_object.values()):
        np.testing.assert_allclose(row, ref.statistics(j) + ref.statistics(f), rtol=0, atol=ATOL)
    for column in GLOBAL_HEADER:
        assert result.global_results[column] == pytest.approx(expected_global[column], abs=ATOL, nan_ok=True)


# ----------------------------------------------------------------------------------------------- real data
def test_cli_on_real_val_matches_reference(davis_val, tmp_path, capsys):
    root = DavisRoot(davis_val)
    sequences = ["car-shadow", "libby", "scooter-black"]
    gts = {s: root.read_annotations(s) for s in sequences}
    preds = {s: _perturb(gt, 1) for s, gt in gts.items()}
    results = _write_results(tmp_path / "results", preds)
    per_object, expected = _reference(gts, preds)

    code = cli.main(["evaluate", "--davis-root", str(davis_val), "--results", str(results),
                     "--sequences", *sequences, "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "J&F-Mean" in out and "car-shadow_1" in out and "global_results-custom.csv" in out
    _check_csvs(results, "custom", per_object, expected)

    _check_result(evaluate_results(davis_val, results, sequences=sequences, progress=False), per_object, expected)
    for s in sequences:
        j, f = evaluate_sequence(preds[s], gts[s])
        j_ref, f_ref = ref.evaluate_sequence(preds[s], gts[s])
        np.testing.assert_allclose(j, j_ref, rtol=0, atol=ATOL)
        np.testing.assert_allclose(f, f_ref, rtol=0, atol=ATOL)


def test_real_objects_composited_with_swapped_ids(davis_val, tmp_path):
    root = DavisRoot(davis_val)
    car, dog = root.read_annotations("car-shadow"), root.read_annotations("libby")[:40]
    gt = np.where(dog == 1, 2, car).astype(np.uint8)
    gt[5:9, 100:140, 300:360] = 255
    preds = {"pair": _perturb(gt, 2)}
    davis = _make_root(tmp_path / "davis", {"pair": gt})
    results = _write_results(tmp_path / "results", preds)
    per_object, expected = _reference({"pair": gt}, preds)
    _check_result(evaluate_results(davis, results, split=None, sequences=["pair"], progress=False),
                  per_object, expected)
    _check_csvs(results, "custom", per_object, expected)


# ----------------------------------------------------------------------------------------------- synthetic data
def test_synthetic_multi_object_sequences(tmp_path):
    rng = np.random.default_rng(7)
    gts = {f"synth{i}": _synthetic(rng, 14, 72, 96) for i in range(3)}
    preds = {name: _perturb(gt, 3) for name, gt in gts.items()}
    preds["synth2"][6:9] = np.where(preds["synth2"][6:9] == 3, 0, preds["synth2"][6:9])
    per_object, expected = _reference(gts, preds)
    davis = _make_root(tmp_path / "davis", gts, splits={"mini": ["synth0", "synth1", "synth2"]})
    results = _write_results(tmp_path / "results", preds)

    assert cli.main(["evaluate", "--davis-root", str(davis), "--results", str(results), "--split", "mini",
                     "--no-progress"]) == 0
    _check_csvs(results, "mini", per_object, expected)
    _check_result(evaluate_results(davis, results, split="mini", progress=False), per_object, expected)

    metric = DavisJF()
    for name in gts:
        metric.update(torch.from_numpy(preds[name]), torch.from_numpy(gts[name]))
    computed = metric.compute()
    for column in GLOBAL_HEADER:
        assert computed[column].item() == pytest.approx(expected[column], abs=ATOL)


def test_all_frames_with_void():
    gt = _synthetic(np.random.default_rng(3), 6, 40, 50)
    pred = _perturb(gt, 3)
    j, f = evaluate_sequence(pred, gt, semi_supervised=False)
    j_ref, f_ref = ref.evaluate_sequence(pred, gt, semi_supervised=False)
    assert j.shape == (3, 6)
    np.testing.assert_allclose(j, j_ref, rtol=0, atol=ATOL)
    np.testing.assert_allclose(f, f_ref, rtol=0, atol=ATOL)


def test_measures_across_canvas_chunks(monkeypatch):
    gt = _synthetic(np.random.default_rng(9), 30, 45, 61, 1, void=False) > 0
    pred = _perturb(gt.astype(np.uint8), 1) > 0
    expected = jaccard_and_boundary(pred, gt)
    monkeypatch.setattr("vsreid.metrics.measures._CANVAS_PIXELS", 3000)
    j, f = jaccard_and_boundary(pred, gt)
    np.testing.assert_array_equal(j, expected[0])
    np.testing.assert_array_equal(f, expected[1])
    np.testing.assert_allclose(f, [ref.f_measure(p, g) for p, g in zip(pred, gt)], rtol=0, atol=ATOL)


def test_measures_on_random_masks():
    rng = np.random.default_rng(0)
    for trial in range(60):
        t, h, w = int(rng.integers(1, 4)), int(rng.integers(1, 70)), int(rng.integers(1, 70))
        pred, gt = (rng.random((2, t, h, w)) < rng.random((2, 1, 1, 1))) if trial % 2 else \
            (_synthetic(rng, 2 * t, h, w, 2, void=False)[::2] > 0, _synthetic(rng, t, h, w, 2, void=False) > 0)
        void = rng.random((t, h, w)) < 0.1 if trial % 3 == 0 else None
        bound_th = (0.008, 0.05, 0.3, 2)[trial % 4]
        j_ref = [ref.jaccard(pred[i], gt[i], None if void is None else void[i]) for i in range(t)]
        f_ref = [ref.f_measure(pred[i], gt[i], None if void is None else void[i], bound_th) for i in range(t)]
        np.testing.assert_allclose(region_similarity(pred, gt, void), j_ref, rtol=0, atol=ATOL)
        np.testing.assert_allclose(boundary_measure(pred, gt, void, bound_th), f_ref, rtol=0, atol=ATOL)
        j, f = jaccard_and_boundary(pred, gt, void, bound_th)
        np.testing.assert_allclose(j, j_ref, rtol=0, atol=ATOL)
        np.testing.assert_allclose(f, f_ref, rtol=0, atol=ATOL)


# ----------------------------------------------------------------------------------------------- edge cases
def test_disk_boundary_map_and_radius():
    assert disk(2).tolist() == [[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]]
    for r in range(12):
        np.testing.assert_array_equal(disk(r), ref.disk(r))
    assert boundary_radius((480, 854)) == 8 and boundary_radius((480, 910)) == 9
    assert boundary_radius((1080, 1920)) == 18 and boundary_radius((10, 10), 3) == 3
    rng = np.random.default_rng(1)
    for shape in [(1, 1), (1, 7), (6, 1), (37, 53)]:
        seg = rng.random(shape) < 0.5
        np.testing.assert_array_equal(boundary_map(seg), ref.boundary_map(seg))
    dot = np.zeros((5, 6), bool)
    dot[2, 3] = dot[4, 5] = True
    assert list(zip(*np.nonzero(boundary_map(dot)))) == [(1, 2), (1, 3), (2, 2), (2, 3), (3, 4), (3, 5), (4, 4)]


@pytest.mark.parametrize("case", ["empty_gt_frames", "empty_prediction", "border", "odd_size", "three_frames",
                                  "non_contiguous_ids", "fewer_predicted_ids"])
def test_edge_cases_match_reference(case):
    rng = np.random.default_rng(5)
    size = (37, 53) if case == "odd_size" else (30, 40)
    gt = _synthetic(rng, 3 if case == "three_frames" else 8, *size)
    pred = _perturb(gt, 3)
    if case == "empty_gt_frames":
        gt[2:5] = np.where(gt[2:5] == 2, 0, gt[2:5])
        gt[6] = 0
    elif case == "empty_prediction":
        pred[:] = 0
    elif case == "border":
        gt[:, :, :5] = 1
        gt[:, -3:, :] = 2
        pred[:, :, -4:] = 3
        pred[:, :2, :] = 1
    elif case == "non_contiguous_ids":
        gt[gt == 2] = 0
        pred[pred == 2] = 0
    elif case == "fewer_predicted_ids":
        pred[pred == 3] = 0
    j, f = evaluate_sequence(pred, gt)
    j_ref, f_ref = ref.evaluate_sequence(pred, gt)
    assert j.shape == j_ref.shape == (3, len(gt) - 2)
    np.testing.assert_allclose(j, j_ref, rtol=0, atol=ATOL)
    np.testing.assert_allclose(f, f_ref, rtol=0, atol=ATOL)
    if case == "empty_prediction":
        assert np.all(j[np.array([(gt[1:-1] == k).any(axis=(1, 2)) for k in (1, 2, 3)])] == 0)
    if case == "non_contiguous_ids":
        assert np.all(j[1] == 1) and np.all(f[1] == 1)


def test_decay_wraps_after_256_frames():
    gt = _synthetic(np.random.default_rng(2), 300, 24, 32, 2, void=False)
    pred = _perturb(gt, 2)
    j, f = evaluate_sequence(pred, gt)
    j_ref, f_ref = ref.evaluate_sequence(pred, gt)
    np.testing.assert_allclose(j, j_ref, rtol=0, atol=ATOL)
    np.testing.assert_allclose(f, f_ref, rtol=0, atol=ATOL)
    stats = object_statistics(j, f)
    for row, jk, fk in zip(stats, j, f):
        np.testing.assert_allclose(row, ref.statistics(jk) + ref.statistics(fk), rtol=0, atol=ATOL)
    assert np.isnan(stats[:, 2]).all() and np.isnan(stats[:, 5]).all()
    values = np.random.default_rng(0).random(600)
    for n in (1, 2, 5, 100, 255, 256, 257, 300, 511, 512, 600):
        np.testing.assert_allclose(db_statistics(values[:n]), ref.statistics(values[:n]), rtol=0, atol=ATOL)
    assert not math.isnan(db_statistics(values[:512])[2])


def test_more_predicted_ids_than_ground_truth(tmp_path, capsys):
    gt = _synthetic(np.random.default_rng(4), 5, 20, 30, 2, void=False)
    pred = gt.copy()
    pred[2, :3, :3] = 3
    with pytest.raises(DataError, match=r"^dance: .*object id 3 .* 2 object"):
        evaluate_sequence(pred, gt, name="dance")
    davis = _make_root(tmp_path / "davis", {"dance": gt})
    results = _write_results(tmp_path / "results", {"dance": pred})
    assert cli.main(["evaluate", "--davis-root", str(davis), "--results", str(results), "--sequences", "dance",
                     "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dance" in err and "object id 3" in err


def test_missing_and_mismatched_result_files(tmp_path, capsys):
    gt = _synthetic(np.random.default_rng(6), 5, 20, 30, 2, void=False)
    davis = _make_root(tmp_path / "davis", {"seq": gt})
    results = _write_results(tmp_path / "results", {"seq": gt})
    (results / "seq" / "00000.png").unlink()
    (results / "seq" / "00004.png").unlink()
    assert evaluate_results(davis, results, sequences=["seq"], progress=False).global_results["J-Mean"] == 1.0
    (results / "seq" / "00002.png").unlink()
    assert cli.main(["evaluate", "--davis-root", str(davis), "--results", str(results), "--sequences", "seq",
                     "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(results / "seq" / "00002.png") in err and "missing" in err
    write_labels(results / "seq" / "00002.png", np.zeros((21, 30), np.uint8))
    with pytest.raises(DataError, match="00002.png: result size 30x21 differs"):
        evaluate_results(davis, results, sequences=["seq"], progress=False)


def test_csvs_are_recomputed_not_reread(tmp_path):
    gt = _synthetic(np.random.default_rng(8), 6, 20, 30, 2, void=False)
    davis = _make_root(tmp_path / "davis", {"seq": gt})
    results = _write_results(tmp_path / "results", {"seq": gt})
    first = evaluate_results(davis, results, progress=False)
    assert _read_csv(first.global_csv)[1][0] == "1.000"
    _write_results(results, {"seq": np.zeros_like(gt)})
    second = evaluate_results(davis, results, sequences=["seq"], progress=False)
    assert second.global_results["J-Mean"] < 0.5
    assert _read_csv(second.global_csv)[1][1] == f"{second.global_results['J-Mean']:.3f}"
    assert sorted(p.name for p in results.iterdir()) == ["global_results-custom.csv",
                                                         "per-sequence_results-custom.csv", "seq"]


# ----------------------------------------------------------------------------------------------- DDP
def _ddp_worker(rank: int, port: int, sequences: list, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    uneven, one_sided = DavisJF(), DavisJF()
    for pred, gt in (sequences[:2] if rank == 0 else sequences[2:]):
        uneven.update(pred, gt)
    for pred, gt in (sequences if rank == 0 else []):
        one_sided.update(pred, gt)
    results = {name: {k: v.item() for k, v in m.compute().items()}
               for name, m in (("uneven", uneven), ("one_sided", one_sided))}
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.ddp
def test_davis_jf_under_two_process_ddp(tmp_path):
    rng = np.random.default_rng(11)
    sequences = []
    for frames in (7, 9, 5):
        gt = _synthetic(rng, frames, 40, 48, 3)
        sequences.append((torch.from_numpy(_perturb(gt, 3)), torch.from_numpy(gt)))
    single = DavisJF()
    for pred, gt in sequences:
        single.update(pred, gt)
    expected = {k: v.item() for k, v in single.compute().items()}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(port, sequences, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for name in ("uneven", "one_sided"):
            assert got[name] == pytest.approx(expected, abs=1e-12)
