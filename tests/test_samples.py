"""Crops and boxes, flow-aware augmentation, synthetic mask deformation, and the training / validation samples."""
from __future__ import annotations

import shutil
import time

import cv2
import numpy as np
import pytest

from vsreid.data import DavisRoot, write_labels
from vsreid.data.augment import Augmentation, Augmenter
from vsreid.data.labels import VOID, read_frame
from vsreid.data.crops import boxes_from_labels, crop_resize, object_box, paste_back, scale_box
from vsreid.data.deform import deform_mask, tps_apply, tps_fit
from vsreid.data.flow import DISFlow, FlowCache
from vsreid.data.samples import EvalPairs, FirstFrameSamples, PropagationSamples
from vsreid.data.warp import photometric_residual, warp_grid


def reference_boxes(label, num_objects, enlarge, ratio):
    """The box rule as the method notes state it, written plainly: per object id k+1, sort its row and column
    coordinates, take the ``1-ratio`` and ``ratio`` order statistics as [x1, x2) and [y1, y2), grow each side by
    ``enlarge`` times the extent, clip (x1 to [0, W-1], x2 to [x1+1, W], likewise y) and truncate; absent -> 0,0,1,1."""
    h, w = label.shape
    out = []
    for k in range(num_objects):
        rows, cols = np.nonzero(label == k + 1)
        if rows.size == 0:
            out.append([0, 0, 1, 1])
            continue
        rows, cols = sorted(rows.tolist()), sorted(cols.tolist())
        lo, hi = int((rows.__len__() - 1) * (1 - ratio)), int((rows.__len__() - 1) * ratio)
        x1, x2, y1, y2 = cols[lo], cols[hi] + 1, rows[lo], rows[hi] + 1
        grow_x, grow_y = enlarge * (x2 - x1), enlarge * (y2 - y1)
        left = min(max(x1 - grow_x, 0), w - 1)
        right = min(max(x2 + grow_x, left + 1), w)
        top = min(max(y1 - grow_y, 0), h - 1)
        bottom = min(max(y2 + grow_y, top + 1), h)
        out.append([int(left), int(top), int(right), int(bottom)])
    return np.array(out, int)


def random_labels(rng, h=60, w=80, n=4):
    """Blobs, scattered pixels, border-touching objects and an absent id."""
    lab = np.zeros((h, w), np.uint8)
    for i in range(1, n):
        kind = i % 3
        if kind == 0:
            lab[rng.random((h, w)) < 0.01] = i
        else:
            y, x = rng.integers(0, h), rng.integers(0, w)
            lab[max(0, y - rng.integers(0, 20)):y + rng.integers(1, 20), max(0, x - rng.integers(0, 30)):
                x + rng.integers(1, 30)] = i
    lab[rng.integers(0, h), rng.integers(0, w)] = 255  # a void pixel is no object
    return lab  # id n is absent


# ----------------------------------------------------------------------------------------------------- crops
@pytest.mark.parametrize("ratio", [1.0, 0.99, 0.9])
def test_object_box_follows_the_original_rule(ratio):
    rng = np.random.default_rng(1)
    for _ in range(40):
        lab = random_labels(rng)
        ids = range(4)
        for enlarge in (False, True):
            expected = reference_boxes(lab, 4, 0.15 if enlarge else 0.0, ratio)
            got = boxes_from_labels(lab, [i + 1 for i in ids], 0.15 if enlarge else 0.0, ratio)
            assert got.dtype == np.int64 and np.array_equal(got, expected)
            assert object_box(lab == 1, 0.15 if enlarge else 0.0, ratio) == tuple(expected[0])
    assert object_box(np.zeros((5, 7), bool)) == (0, 0, 1, 1)
    single = np.zeros((5, 7), bool)
    single[4, 6] = True
    assert object_box(single, 0.0) == (6, 4, 7, 5)
    assert object_box(single) == (5, 3, 7, 5)  # 6 - 0.15 truncated; x2 clipped to W


def test_scale_box_rounds_like_the_original():
    assert scale_box((10, 20, 30, 41), 2.25, 2.25) == (int(0.5 + 22.5), 45, int(0.5 + 67.5), int(0.5 + 92.25))


def test_crop_resize_and_paste_back():
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.random((50, 70, 3)).astype(np.float32), (0, 0), 6)
    box = (10, 5, 40, 45)
    same = crop_resize(img, box, 40)[:, 5:35]  # box height 40, size 40: no resampling in y; x is resampled
    assert same.shape == (40, 30, 3)
    exact = crop_resize(img, (10, 5, 50, 45), 40)  # 40 x 40 box at size 40: identity
    assert np.array_equal(exact, img[5:45, 10:50])
    back = paste_back(exact, (10, 5, 50, 45), img.shape[:2], fill=-1.0)
    assert np.array_equal(back[5:45, 10:50], img[5:45, 10:50]) and (back[:5] == -1).all() and (back[:, :10] == -1).all()
    up = crop_resize(img, box, 97)
    down = paste_back(up, box, img.shape[:2])
    assert np.abs(down[5:45, 10:40] - img[5:45, 10:40]).max() < 0.02  # smooth image: resize there and back
    prob = paste_back(np.full((9, 9, 2), 0.5, np.float32), box, img.shape[:2], fill=(1.0, 0.0))
    assert prob.shape == (50, 70, 2) and (prob[0, 0] == [1, 0]).all() and (prob[20, 20] == 0.5).all()
    one = crop_resize(img[..., :1], box, 11)
    assert one.shape == (11, 11, 1)
    mask = crop_resize(img[..., 0] > 0.5, box, 13, cv2.INTER_NEAREST)
    assert mask.dtype == bool and mask.shape == (13, 13)


# ----------------------------------------------------------------------------------------------------- augmentation
def texture(rng, h, w):
    """A smooth multi-scale random texture, float32 (H, W) in about [0, 1]."""
    out = sum(cv2.resize(rng.random((h // s + 2, w // s + 2)).astype(np.float32), (w, h),
                         interpolation=cv2.INTER_CUBIC) for s in (4, 9, 23))
    return cv2.GaussianBlur(out / 3, (0, 0), 1.0)


@pytest.mark.parametrize("config", [
    Augmentation(p_flip=1.0, p_rotate=0.0, scale_range=(1.0, 1.0)),
    Augmentation(p_flip=0.0, p_rotate=0.0, scale_range=(1.3, 1.3)),
    Augmentation(p_flip=0.0, p_rotate=1.0, max_angle=20.0, scale_range=(1.0, 1.0)),
    Augmentation(p_flip=1.0, p_rotate=1.0, max_angle=12.0, scale_range=(0.8, 1.2))])
def test_augmented_flow_still_maps_the_augmented_frames(config):
    """A flow that maps frame B onto frame A still does after albumentations moved A, B and the flow alike, and it
    does only because the vectors were corrected."""
    rng = np.random.default_rng(3)
    augmenter = Augmenter(config, size=140)
    side = augmenter.canvas
    frame_a = texture(rng, side, side)
    a = np.deg2rad(3.0)
    motion = np.array([[1.02 * np.cos(a), -np.sin(a), 4.0], [np.sin(a), 1.02 * np.cos(a), -2.5], [0, 0, 1]])
    frame_b = cv2.warpAffine(frame_a, motion[:2], (side, side), flags=cv2.INTER_CUBIC)  # p of A is at motion @ p
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).astype(np.float64)
    back = np.linalg.inv(motion)
    flow = ((grid @ back[:2, :2].T + back[:2, 2]) - grid).astype(np.float32)  # exact flow B -> A on B's grid

    img_b = np.repeat(frame_b[..., None], 3, -1)
    zeros = np.zeros((side, side), np.float32)
    out = augmenter(np.random.default_rng(0), img_b, np.zeros((side, side), np.uint8), zeros, zeros, flow,
                    image2=np.repeat(frame_a[..., None], 3, -1))
    a2, f = out["image2"][..., 0], out["flow"]
    s = augmenter.size
    augmenter.geometric.set_random_seed(int(np.random.default_rng(0).integers(2**31)))  # the same draw again
    plain = augmenter.geometric(image=img_b, mask=np.zeros((side, side), np.uint8), prior=zeros, residual=zeros,
                                flow=flow)
    b2, uncorrected = plain["image"][..., 0], plain["flow"]  # B without photometric changes; vectors as they were
    assert not np.allclose(f, uncorrected)  # every config here changes the vectors
    out_grid = np.stack(np.meshgrid(np.arange(s), np.arange(s)), -1).astype(np.float32)
    inside = np.zeros((s, s), bool)
    inside[25:-25, 25:-25] = True

    def residual(field):
        mx, my = out_grid[..., 0] + field[..., 0], out_grid[..., 1] + field[..., 1]
        return np.abs(cv2.remap(a2, mx, my, cv2.INTER_CUBIC) - b2)[inside].mean()

    flat = np.abs(a2 - b2)[inside].mean()
    assert residual(f) < 0.01 and residual(f) < 0.2 * flat, (residual(f), flat)
    assert residual(f) < 0.3 * residual(uncorrected)


def test_augmenter_ranges_fill_and_photometric():
    config = Augmentation(p_blur=1.0, p_flip=0.0, p_rotate=0.0, scale_range=(0.5, 0.5))
    augmenter = Augmenter(config, size=20)
    rng = np.random.default_rng(0)
    p = augmenter.canvas
    img = rng.random((p, p, 3)).astype(np.float32)
    labels = np.full((p, p), 3, np.uint8)
    ones = np.ones((p, p), np.float32)
    out = augmenter(rng, img, labels, ones, ones, np.ones((p, p, 2), np.float32))
    assert out["image"].dtype == np.float32 and out["image"].shape == (20, 20, 3)
    assert 0 <= out["image"].min() and out["image"].max() <= 1
    assert (out["labels"] == 3).all() and (out["prior"] == 1).all()  # the canvas covers what a shrunk crop reads
    small = Augmenter(config, size=20)
    small.pad = 0  # without that margin, the border comes from outside: void labels, zero prior
    out = small(rng, img[:20, :20], labels[:20, :20], ones[:20, :20], ones[:20, :20], np.ones((20, 20, 2), np.float32))
    assert out["labels"][0, 0] == VOID and out["labels"][10, 10] == 3
    assert out["prior"][0, 0] == 0 and out["prior"][10, 10] == 1
    assert np.allclose(out["flow"][10, 10], 0.5)  # vectors scaled with the frame


# ----------------------------------------------------------------------------------------------------- deformation
def test_tps_interpolates_its_control_points():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    dst = src + rng.uniform(-5, 5, (5, 2))
    assert np.allclose(tps_apply(tps_fit(src, dst), src, src), dst, atol=1e-6)


def test_deform_mask_changes_the_mask_moderately():
    rng = np.random.default_rng(0)
    ious = []
    for k in range(60):
        mask = np.zeros((240, 320), np.uint8)
        axes = (int(rng.integers(25, 90)), int(rng.integers(25, 90)))
        cv2.ellipse(mask, (int(rng.integers(60, 260)), int(rng.integers(60, 180))), axes, float(rng.uniform(0, 180)),
                    0, 360, 1, -1)
        mask = mask.astype(bool)
        out = deform_mask(mask, np.random.default_rng(k))
        assert out.shape == mask.shape and out.dtype == bool and out.any()
        ious.append((mask & out).sum() / (mask | out).sum())
        assert np.array_equal(out, deform_mask(mask, np.random.default_rng(k)))  # deterministic
    ious = np.array(ious)
    assert 0.5 < ious.min() and ious.max() < 0.97 and 0.65 < np.median(ious) < 0.92, ious


def test_deform_mask_erosion_share_removes_the_size_bias_of_the_original():
    mask = np.zeros((200, 240), bool)
    cv2.ellipse(mask.view(np.uint8), (120, 100), (70, 50), 20.0, 0, 360, 1, -1)

    def ratios(share):
        return np.array([deform_mask(mask, np.random.default_rng(k), erode_share=share).sum() / mask.sum()
                         for k in range(40)])

    original, unbiased = ratios(0.0), ratios(0.5)
    assert np.median(original) > 1.05 and (original < 1).mean() < 0.3  # the original's final dilation inflates every prior
    assert 0.95 < np.median(unbiased) < 1.05 and (unbiased < 1).mean() > 0.45


def test_deform_mask_never_empties_and_keeps_empty_masks_empty():
    for side in (1, 2, 4, 9):
        mask = np.zeros((40, 40), bool)
        mask[5:5 + side, 30:30 + side] = True
        for k in range(20):
            assert deform_mask(mask, np.random.default_rng(k)).any()
    assert not deform_mask(np.zeros((8, 8), bool), np.random.default_rng(0)).any()


# ----------------------------------------------------------------------------------------------------- tiny DAVIS root
H, W, T = 72, 96, 6
VELOCITY = {1: (2, 0), 2: (0, 1)}  # object id -> (dx, dy) per frame


def tiny_labels(t: int) -> np.ndarray:
    lab = np.zeros((H, W), np.uint8)
    lab[20:44, 10 + 2 * t:34 + 2 * t] = 1
    lab[40 + t:60 + t, 60:80] = 2
    lab[40 + t:42 + t, 60:80] = 255  # a void band at object 2's top edge
    return lab


def tiny_flow(t: int, step: int) -> np.ndarray:
    """The exact flow t -> t + step on frame t's grid."""
    lab = tiny_labels(t)
    flow = np.zeros((H, W, 2), np.float32)
    for obj, (dx, dy) in VELOCITY.items():
        flow[lab == obj] = (step * dx, step * dy)
    flow[lab == 255] = (0, step)
    return flow


@pytest.fixture
def tiny_root(make_davis_root, tmp_path) -> DavisRoot:
    return make_davis_root(tmp_path, ("a", "b"), frames=T, size=(H, W), labels=lambda seq, t: tiny_labels(t),
                           flow=lambda seq, t, step: tiny_flow(t, step))


def check_sample(sample, size):
    assert sample["image"].shape == (3, size, size) and sample["image"].dtype == np.float32
    assert sample["flow"].shape == (2, size, size) and sample["flow"].dtype == np.float32
    assert sample["prior"].shape == (1, size, size) and sample["prior"].dtype == np.float32
    assert sample["residual"].shape == (1, size, size) and sample["residual"].dtype == np.float32
    assert sample["residual"].min() >= 0
    assert sample["target"].shape == (size, size) and sample["target"].dtype == np.int64
    assert 0 <= sample["image"].min() and sample["image"].max() <= 1
    assert 0 <= sample["prior"].min() and sample["prior"].max() <= 1
    assert set(np.unique(sample["target"])) <= {0, 1, 255} and (sample["target"] == 1).any()


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def interior(mask, pixels=3):
    """The mask eroded by ``pixels``: away from the edges where bilinear flow and nearest labels disagree."""
    kernel = np.ones((2 * pixels + 1,) * 2, np.uint8)
    return cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)


def test_video_pairs_use_the_flow_toward_the_source_frame(tiny_root):
    ds = PropagationSamples([(tiny_root, None)], [FlowCache(tiny_root, None)], size=97, samples_per_epoch=40,
                            p_deform=0.0, augment=False, jitter=0.0, seed=5)
    for i in range(len(ds)):
        s = ds[i]
        check_sample(s, 97)
        fg = s["target"] == 1
        assert iou(s["prior"][0] > 0.5, fg) > 0.85  # the warped ground truth lands on the object
        assert s["residual"].mean() > 20  # frames of independent noise: the warp explains nothing
        u, v = s["flow"][0][interior(fg)], s["flow"][1][interior(fg)]
        assert (np.allclose(np.abs(u), 2) and np.allclose(v, 0)) or (np.allclose(u, 0) and np.allclose(np.abs(v), 1))


def test_pasted_donor_moves_with_its_own_flow_and_occludes(tiny_root):
    """A donor object pasted over a pair carries its flows along: its pixels in frame t point, through the composite
    flow, at its pixels in the composite source frame; frame pixels change only under it; it occludes the object."""
    from vsreid.data.samples import _Pair

    ds = PropagationSamples([(tiny_root, None)], [FlowCache(tiny_root, None)], size=97, samples_per_epoch=40,
                            p_deform=0.0, augment=False, jitter=0.0, seed=4, p_occluder=1.0)
    flows = FlowCache(tiny_root, None)
    donor_id, visible, occluded, landed = 254, 0, 0, []
    for k in range(30):
        t = 1 + k % (T - 1)
        pair = _Pair(read_frame(tiny_root.frame_paths("a")[t]), read_frame(tiny_root.frame_paths("a")[t - 1]),
                     tiny_labels(t), tiny_labels(t - 1), flows.backward("a", t), flows.forward("a", t - 1))
        out = ds._with_donor(pair, 1, np.random.default_rng(k), step=1, gap=1, deformed=False)
        if out is None:
            continue
        changed = out.labels == donor_id
        visible += changed.any()
        assert np.array_equal(out.frame[~changed], pair.frame[~changed])  # pixels change only under the donor
        occluded += (out.labels == 1).sum() < (pair.labels == 1).sum()
        ys, xs = np.nonzero(changed)
        tx = np.clip(np.round(xs + out.to_source[ys, xs, 0]).astype(int), 0, W - 1)
        ty = np.clip(np.round(ys + out.to_source[ys, xs, 1]).astype(int), 0, H - 1)
        landed.append((out.source_labels[ty, tx] == donor_id).mean() if xs.size else 1.0)
    assert visible >= 20 and occluded >= 5
    assert np.mean(landed) > 0.93, landed  # 0.96; 0.88 when the donor keeps the flow of what it covers  # the donor's pixels follow its own pasted flow onto its source pixels
    for i in range(len(ds)):
        check_sample(ds[i], 97)


def test_object_moved_onto_another_sequence_gets_the_flows_of_the_composite(tiny_root):
    """With ``p_background`` an object is cut out of its pair by its masks and put, in the same place, over frames of
    another sequence: inside it the pixels are its own, away from it those of the other sequence, its labels are the
    object alone, and the flows are computed again on the composite frames (none back to the source when the prior
    is deformed)."""
    from vsreid.data.samples import _Pair

    ds = PropagationSamples([(tiny_root, None)], [FlowCache(tiny_root, None)], size=97, samples_per_epoch=20,
                            p_deform=0.0, augment=False, jitter=0.0, seed=5, p_background=1.0)
    frames = {seq: np.stack([read_frame(p) for p in tiny_root.frame_paths(seq)]) for seq in ("a", "b")}
    flows = FlowCache(tiny_root, None)
    for k, deformed in enumerate((False, True, False)):
        t = 1 + k
        pair = _Pair(frames["a"][t], frames["a"][t - 1], tiny_labels(t), tiny_labels(t - 1), flows.backward("a", t),
                     flows.forward("a", t - 1))
        out = ds._on_background(pair, 1, "a", np.random.default_rng(k), step=1, gap=1, deformed=deformed)
        obj, away = interior(tiny_labels(t) == 1, 2), ~cv2.dilate((tiny_labels(t) == 1).astype(np.uint8),
                                                                     np.ones((7, 7), np.uint8)).astype(bool)
        assert np.array_equal(out.frame[obj], pair.frame[obj])
        assert any(np.array_equal(out.frame[away], bg[away]) for bg in frames["b"])
        assert not any(np.array_equal(out.frame[away], fr[away]) for fr in frames["a"])
        assert np.array_equal(out.labels, np.where(tiny_labels(t) == 1, 1, 0))
        assert np.array_equal(out.source_labels, np.where(tiny_labels(t - 1) == 1, 1, 0))
        assert out.to_source.shape == (H, W, 2) and not np.array_equal(out.to_source, pair.to_source)
        assert (out.from_source is None) == deformed
    for i in range(len(ds)):
        check_sample(ds[i], 97)


def test_longer_gaps_chain_the_flows(tiny_root):
    ds = PropagationSamples([(tiny_root, None)], [FlowCache(tiny_root, None)], size=97, samples_per_epoch=60,
                            p_deform=0.0, augment=False, jitter=0.0, seed=3, max_gap=3)
    gaps = set()
    for i in range(len(ds)):
        s = ds[i]
        check_sample(s, 97)
        fg = s["target"] == 1
        assert iou(s["prior"][0] > 0.5, fg) > 0.7  # exact chained flows still land the prior on the object
        u, v = s["flow"][0][interior(fg)], s["flow"][1][interior(fg)]
        gap = np.abs(u).mean() / 2 if np.abs(u).mean() > 0.5 else np.abs(v).mean()  # object 1: 2 px/frame, 2: 1
        assert gap in (1, 2, 3) and (np.allclose(np.abs(u), 2 * gap) or np.allclose(np.abs(v), gap))
        gaps.add(gap)
    assert gaps == {1, 2, 3}
    with pytest.raises(ValueError, match="max_gap"):
        PropagationSamples([(tiny_root, None)], [FlowCache(tiny_root, None)], max_gap=0)


def test_flip_negates_u_and_crop_resize_keeps_vectors(tiny_root):
    flip = Augmentation(p_flip=1.0, p_rotate=0.0, scale_range=(1.0, 1.0), p_blur=0.0)
    kwargs = dict(size=97, samples_per_epoch=20, p_deform=0.0, seed=1)  # the same draws with and without flip
    plain = PropagationSamples([(tiny_root, ["a"])], [FlowCache(tiny_root, None)], augment=False, **kwargs)
    flipped = PropagationSamples([(tiny_root, ["a"])], [FlowCache(tiny_root, None)], augment=flip, **kwargs)
    for i in range(20):
        a, b = plain[i], flipped[i]
        assert (a["target"][:, ::-1] == b["target"]).mean() > 0.99
        assert np.abs(a["prior"][0][:, ::-1] - b["prior"][0]).mean() < 0.01
        inner = interior(a["target"] == 1, 5)  # a frame pixel spans up to ~4 crop pixels here
        u, v = a["flow"][0][inner], a["flow"][1][inner]
        assert np.allclose(np.abs(u), 2) or np.allclose(np.abs(v), 1)  # vectors not scaled by the crop resize
        assert np.allclose(-a["flow"][0][:, ::-1][inner[:, ::-1]], b["flow"][0][inner[:, ::-1]], atol=1e-3)
        assert np.allclose(a["flow"][1][:, ::-1][inner[:, ::-1]], b["flow"][1][inner[:, ::-1]], atol=1e-3)


def test_sample_sources_shapes_and_determinism(tiny_root):
    flows = [FlowCache(tiny_root, None)]
    ds = PropagationSamples([(tiny_root, None)], flows, size=65, samples_per_epoch=30, p_static=0.5, seed=2)
    first = [ds[i] for i in range(len(ds))]
    for s in first:
        check_sample(s, 65)
    again = PropagationSamples([(tiny_root, None)], lambda r: FlowCache(r, None), size=65, samples_per_epoch=30,
                               p_static=0.5, seed=2)
    assert all(np.array_equal(x[k], again[i][k]) for i, x in enumerate(first) for k in x)
    ds.set_epoch(1)
    assert not all(np.array_equal(first[i]["image"], ds[i]["image"]) for i in range(5))
    static = PropagationSamples([(tiny_root, None)], flows, size=65, samples_per_epoch=20, p_static=1.0, seed=0)
    samples = [static[i] for i in range(20)]
    assert all(not s["flow"].any() and not s["residual"].any() for s in samples)
    deformed = PropagationSamples([(tiny_root, None)], flows, size=65, samples_per_epoch=5, p_deform=1.0, seed=0)
    assert all(not deformed[i]["residual"].any() for i in range(5))  # no warp, no residual
    assert any(not s["prior"].any() for s in samples) and any(s["prior"].any() for s in samples)

    ff = FirstFrameSamples(tiny_root, ["a"], flows[0], size=65, samples_per_epoch=10, seed=0, augment=False,
                           jitter=0.0)
    for i in range(10):
        s = ff[i]
        check_sample(s, 65)
        u = s["flow"][0][interior(s["target"] == 1)]
        assert np.allclose(u, -2) or np.allclose(u, 0)  # -(0.flo): the approximate backward flow of frame 0
        assert not s["residual"].any()
    shutil.rmtree(tiny_root.annotations_dir / "b")
    write_labels(tiny_root.annotations_dir / "b" / "00000.png", tiny_labels(0))
    with pytest.raises(ValueError, match="not annotated"):
        FirstFrameSamples(tiny_root, ["b"], flows[0], frames={"b": [0, 3]})
    with pytest.raises(ValueError, match="consecutive"):
        PropagationSamples([(tiny_root, ["b"])], [FlowCache(tiny_root, None)])


def test_eval_pairs(tiny_root):
    ev = EvalPairs(tiny_root, ["a"], FlowCache(tiny_root, None), size=33)
    assert len(ev) == 2 * (T - 1)
    assert [(seq, t, obj) for seq, t, obj in ev.items[:2]] == [("a", 1, 1), ("a", 1, 2)]
    for i in range(len(ev)):
        item = ev[i]
        check_sample(item, 33)
        obj = item["object_id"]
        assert item["target_full"].shape == (H, W) and item["prior_full"].dtype == np.uint8
        assert tuple(item["box"]) == object_box(item["prior_full"] > 0, 0.15)
        assert np.array_equal(item["target_full"] == 1, tiny_labels(item["t"]) == obj)
        assert iou(item["prior_full"] > 0, item["target_full"] == 1) > 0.8
        assert np.array_equal(item["prior"][0], crop_resize((item["prior_full"] > 0).astype(np.float32),
                                                            tuple(item["box"]), 33))
        store, t = ev.store, item["t"]
        residual = photometric_residual(store.frame("a", t), store.frame("a", t - 1),
                                        warp_grid(tiny_flow(t, -1), tiny_flow(t - 1, 1)))
        assert np.allclose(item["residual"][0], crop_resize(residual, tuple(item["box"]), 33), atol=1e-3)


# ----------------------------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def rollerblade(tmp_path_factory, davis_train):
    """The real ``rollerblade`` train sequence with DIS (fast) flows computed into a temporary folder."""
    root = DavisRoot(davis_train)
    cache = FlowCache(root, DISFlow("fast"), flow_dir=tmp_path_factory.mktemp("flow"))
    cache.fill("rollerblade", progress=False)
    return root, cache


def test_real_samples_and_timing(rollerblade):
    root, cache = rollerblade
    kwargs = dict(size=321, samples_per_epoch=40, p_static=0.1, seed=0)
    ds = PropagationSamples([(root, ["rollerblade"])], [cache], **kwargs)
    start = time.perf_counter()
    samples = [ds[i] for i in range(len(ds))]
    cold = (time.perf_counter() - start) / len(ds) * 1000
    for s in samples:
        check_sample(s, 321)
    start = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    warm = (time.perf_counter() - start) / len(ds) * 1000
    print(f"\nPropagationSamples S=321, cached flow files: {cold:.1f} ms/sample (frames decoded), "
          f"{warm:.1f} ms/sample (frames in the LRU)")
    assert all(np.array_equal(s["prior"], ds[i]["prior"]) for i, s in enumerate(samples[:5]))

    ev = EvalPairs(root, ["rollerblade"], cache, size=97, frame_step=10)
    assert len(ev) == 4
    ious = []
    for i in range(len(ev)):
        item = ev[i]
        check_sample(item, 97)
        ious.append(iou(item["prior_full"] > 0, item["target_full"] == 1))
    assert min(ious) > 0.3, ious  # the copy-the-prior baseline on a fast-moving sequence
    ff = FirstFrameSamples(root, ["rollerblade"], cache, size=97, samples_per_epoch=3)
    check_sample(ff[0], 97)
