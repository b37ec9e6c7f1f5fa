"""Composite sequences: real objects cut out of a DAVIS root by their masks and moved over another real sequence.

The planner, renderer and event checks are those of :mod:`vsreid.data.synthetic`. Each object shows its source frames
in turn (back and forth when the source is shorter), so it keeps its own articulation, while its source translation is
replaced by the planned trajectory (anchored at the mask centroid). The pole is synthetic; the look-alike of object 1
is the same source object at another time, mirrored. The background sequence's own object stays in it, unlabelled;
when the background sequence has annotations, a plan that starts a labelled object over that object (more than
``MAX_BACKGROUND_OVERLAP`` of its pixels in the first ``EARLY_FRAMES`` frames, where the forward pass is most easily led
astray; objects may cross it later) is drawn again (up to
``PLAN_ATTEMPTS`` plans; the first plan is the one earlier versions made, so seeds whose first plan keeps clear give
the same sequence as before).
Real masks are not convex, so ``overlap`` is recorded when it happens but not guaranteed; the other events are.

``random_composite`` can draw its sources from one split of the source root only, and from one of two disjoint parts
of it (:func:`source_part`), so that re-ID can be tuned on composites of one part and reported on the other.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import cv2
import numpy as np

from .davis import DavisRoot
from .errors import DataError
from .labels import VOID, read_frame
from .synthetic import EVENTS, Sprite, SyntheticSequence, assemble, canonical_radius, check_args

Source = str | tuple[str, int]
PARTS = ("tune", "report")
RADIUS_RANGE = (0.15, 0.19)  # real masks fill less of their bounding circle than the synthetic shapes
MAX_BACKGROUND_OVERLAP = 0.1  # share of a labelled object's pixels allowed over the background sequence's own object
EARLY_FRAMES = 5
PLAN_ATTEMPTS = 8


def composite_sequence(name: str, source_root: str | os.PathLike, object_sources: Sequence[Source],
                       background: str | tuple[str | os.PathLike, str], seed: int = 0,
                       size: tuple[int, int] = (240, 432), num_frames: int = 40, events: Sequence[str] = EVENTS,
                       min_absence: int = 5) -> SyntheticSequence:
    """Objects 1..N from ``object_sources`` (sequence names of ``source_root``, or (name, first frame)), over
    ``background`` (a sequence of ``source_root`` or (root, name)), resized to ``size`` (H, W). Each source's object is
    the union of its non-zero ids. Deterministic in ``seed``; same settings and errors as ``generate_sequence``."""
    check_args(size, num_frames, len(object_sources), events, min_absence)
    root = DavisRoot(source_root)
    sources = [(s, 0) if isinstance(s, str) else (s[0], int(s[1])) for s in object_sources]
    bg_root, bg_seq = (root, background) if isinstance(background, str) else (DavisRoot(background[0]), background[1])
    r_c = canonical_radius(size[0], RADIUS_RANGE)
    sprites, lengths = [], []
    for seq, start in sources:
        sprite, n = _real_sprite(root, seq, start, num_frames, r_c)
        sprites.append(sprite)
        lengths.append(n)
    look_start = sources[0][1] + lengths[0] // 2
    look_alike = (_real_sprite(root, sources[0][0], look_start, num_frames, r_c, mirror=True)[0]
                  if "distractor" in events else None)
    meta = {"sources": {"root": str(root.root), "objects": [{"id": i + 1, "sequence": s, "start": st}
                                                           for i, (s, st) in enumerate(sources)],
                        "look_alike": {"sequence": sources[0][0], "start": look_start, "mirrored": True},
                        "background": {"root": str(bg_root.root), "sequence": bg_seq}}}
    background_frames = _real_background(bg_root, bg_seq, size, num_frames)
    background_object = _background_object(bg_root, bg_seq, size, num_frames)
    best, best_overlap = None, np.inf
    for attempt in range(PLAN_ATTEMPTS if background_object is not None else 1):
        rng = np.random.default_rng(seed if attempt == 0 else [seed, attempt])
        try:
            seq = assemble(name, seed, "composite", rng, size, num_frames, events, min_absence, sprites, look_alike,
                           background_frames, required=[e for e in events if e != "overlap"], extra_meta=meta,
                           radius_range=RADIUS_RANGE)
        except RuntimeError:
            if attempt == 0:
                raise
            continue  # a redrawn plan missing an event: try another
        if background_object is None:
            return seq
        overlap = _overlap_with(seq.labels, background_object)
        if overlap < best_overlap:
            best, best_overlap = seq, overlap
            best.meta["background_object_overlap"] = round(float(overlap), 4)
            best.meta["plan_attempt"] = attempt
        if overlap <= MAX_BACKGROUND_OVERLAP:
            break
    return best


def _overlap_with(labels: np.ndarray, background_object: np.ndarray) -> float:
    """The largest share, over the labelled objects of ``labels`` (T, H, W), of an object's pixels in the first
    ``EARLY_FRAMES`` frames lying on ``background_object`` (T, H, W) bool."""
    early, under = labels[:EARLY_FRAMES], background_object[:EARLY_FRAMES]
    worst = 0.0
    for oid in np.unique(labels[0]):
        if oid in (0, VOID):
            continue
        mask = early == oid
        worst = max(worst, np.count_nonzero(mask & under) / max(np.count_nonzero(mask), 1))
    return worst


def _background_object(root: DavisRoot, seq: str, size: tuple[int, int], num_frames: int) -> np.ndarray | None:
    """(T, H, W) bool: the background sequence's own object in each composite frame (the frames walked as
    :func:`_real_background` walks them), or None when not every walked frame is annotated."""
    stems = root.frame_stems(seq)
    annotated = set(root.annotated_stems(seq))
    walk = _pingpong(len(stems), 0, num_frames)
    if any(stems[i] not in annotated for i in set(walk.tolist())):
        return None
    masks = {}
    for i in sorted(set(walk.tolist())):
        labels = root.read_annotation(seq, stems[i])
        masks[i] = cv2.resize(((labels > 0) & (labels != VOID)).astype(np.uint8), (size[1], size[0]),
                              interpolation=cv2.INTER_NEAREST) > 0
    return np.stack([masks[i] for i in walk])


def source_part(names: Sequence[str], part: str) -> list[str]:
    """The sequences of ``part`` ("tune" or "report"): ``names`` in sorted order, alternately to tune and to report,
    so the two parts are disjoint and differ in size by at most one."""
    if part not in PARTS:
        raise ValueError(f"part {part!r}: choose from {', '.join(PARTS)}")
    return sorted(set(names))[PARTS.index(part)::2]


def random_composite(name: str, source_root: str | os.PathLike, seed: int, num_objects: int = 3,
                     source_split: str | None = None, part: str | None = None, **kw) -> SyntheticSequence:
    """A composite whose object and background sequences (all different) and start frames are drawn from ``seed``,
    among the sequences of ``source_split`` of ``source_root`` (default: all of them), and of those only the
    ``part`` (see :func:`source_part`) when given."""
    root = DavisRoot(source_root)
    names = root.sequences(source_split)
    if part is not None:
        names = source_part(names, part)
    if len(names) < num_objects + 1:
        raise DataError(root.frames_dir, f"{len(names)} sequences; a composite of {num_objects} objects needs "
                                         f"{num_objects + 1} (objects and a background)")
    rng = np.random.default_rng(seed)
    chosen = [names[i] for i in rng.permutation(len(names))[:num_objects + 1]]
    sources = [(s, int(rng.integers(len(root.frame_paths(s))))) for s in chosen[:num_objects]]
    seq = composite_sequence(name, root.root, sources, chosen[-1], seed=seed, **kw)
    seq.meta["sources"].update(split=source_split, part=part)
    return seq


def _pingpong(n: int, start: int, length: int) -> np.ndarray:
    """Indices 0..n-1 walked forward from ``start``, bouncing at both ends, ``length`` of them."""
    if n == 1:
        return np.zeros(length, int)
    cycle = np.r_[np.arange(n), np.arange(n - 2, 0, -1)]
    return cycle[(start + np.arange(length)) % len(cycle)]


def _real_sprite(root: DavisRoot, seq: str, start: int, num_frames: int, r_c: int,
                 mirror: bool = False) -> tuple[Sprite, int]:
    """The object of ``seq`` cut out on the frames a ``num_frames`` walk from ``start`` visits, shrunk so its radius
    is at most ``r_c`` px (mirrored left-right on request), upright; also returns the number of usable frames."""
    paths = {p.stem: p for p in root.frame_paths(seq)}
    masks = {}
    for stem in root.annotated_stems(seq):
        labels = root.read_annotation(seq, stem)
        if stem in paths and ((labels > 0) & (labels != VOID)).any():
            masks[stem] = (labels > 0) & (labels != VOID)
    usable = list(masks)
    if not usable:
        raise DataError(root.annotations_dir / seq, "no annotated frame shows an object to cut out")
    walk = _pingpong(len(usable), start % len(usable), num_frames)
    visited = sorted(set(walk.tolist()))
    geometry = []
    for i in visited:
        ys, xs = np.nonzero(masks[usable[i]])
        cx, cy = xs.mean(), ys.mean()
        geometry.append((xs, ys, cx, cy, np.hypot(xs - cx, ys - cy).max() + 1))
    f = min(1.0, r_c / max(g[4] for g in geometry))
    rgba, anchors, inner, areas, reach = [], [], [], [], 0.0
    for i, (xs, ys, cx, cy, _) in zip(visited, geometry):
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        crop_rgb = read_frame(paths[usable[i]])[y0:y1, x0:x1].astype(np.float32)
        crop = np.dstack([crop_rgb, masks[usable[i]][y0:y1, x0:x1].astype(np.float32)])
        size = (max(1, round((x1 - x0) * f)), max(1, round((y1 - y0) * f)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        ax, ay = (cx - x0 + 0.5) * size[0] / (x1 - x0) - 0.5, (cy - y0 + 0.5) * size[1] / (y1 - y0) - 0.5
        if mirror:
            crop, ax = crop[:, ::-1].copy(), size[0] - 1 - ax
        crop[..., :3] *= crop[..., 3:]
        dist = cv2.distanceTransform((crop[..., 3] >= 0.5).astype(np.uint8), cv2.DIST_L2, 5)
        ix, iy = int(np.clip(round(ax), 0, size[0] - 1)), int(np.clip(round(ay), 0, size[1] - 1))
        rgba.append(crop)
        anchors.append((ax, ay))
        inner.append(float(dist[iy, ix]))
        xs_in = np.nonzero(crop[..., 3].max(axis=0) > 0)[0]
        reach = max(reach, float(np.abs(xs_in - ax).max()) + 0.5)
        areas.append(float(crop[..., 3].sum()))
    order = np.searchsorted(visited, walk)
    radius = max(g[4] for g in geometry) * f + 1
    return Sprite(rgba, anchors, order, radius, min(inner), areas, upright=True, reach=reach), len(usable)


def _real_background(root: DavisRoot, seq: str, size: tuple[int, int], num_frames: int) -> Callable[[int], np.ndarray]:
    """Frames of ``seq`` back and forth, resized to ``size``: ``f(t)`` -> (H, W, 3) float32 RGB."""
    paths = root.frame_paths(seq)
    walk = _pingpong(len(paths), 0, num_frames)
    frames = {i: cv2.resize(root.read_frame(seq, i), (size[1], size[0]), interpolation=cv2.INTER_AREA)
              for i in sorted(set(walk.tolist()))}
    return lambda t: frames[walk[t]].astype(np.float32)
