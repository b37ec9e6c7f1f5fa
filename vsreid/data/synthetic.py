"""Synthetic multi-object sequences in DAVIS layout, with ground truth on every frame and the events it proves.

A sequence is a textured background under a moving camera (translation, slight zoom), 2-4 labelled textured objects
(ellipses, blobs, polygons; each its own colour and pattern) moving on smooth trajectories in a random depth order, an
unlabelled textured pole in front of everything, and an unlabelled look-alike of object 1. With T frames and
K = ``min_absence``, the schedule puts these events in every sequence (each can be left out through ``events``):

- ``occlusion``: object 1 goes behind the pole, has 0 visible pixels for >= K frames, and comes out on the other side;
- ``exit``: object 2 leaves through the top or bottom border, is out of view for >= K frames, then comes back;
- ``overlap``: objects 1 and 3 (2 when N = 2) overlap near the end, the larger one behind, both partly visible;
- ``scale``: that same object grows or shrinks from 0.8x to 1.3x (area ratio >= 2);
- ``distractor``: the look-alike walks in while object 1 is hidden and stays a few frames after it reappears.

One more event is optional (not in the default ``EVENTS``; request it through ``events``, 3-4 objects):

- ``reappear``: the last object vanishes where it is, as if fully occluded by something unseen, while object 2 is out
  of view (>= K frames), and reappears on the other side of the pole, at least 0.4 W from where it vanished.

Events are measured on the rendered ground truth, not taken from the plan, and a sequence missing one is an error.
Written layout (:func:`write_sequence`)::

    ROOT/JPEGImages/480p/<name>/NNNNN.jpg     frames, JPEG quality 92
    ROOT/Annotations/480p/<name>/NNNNN.png    palette id maps on every frame, ids 1..N
    ROOT/ImageSets/2017/<split>.txt           the sequences of the root
    ROOT/synthetic/<name>.json                ``SyntheticSequence.meta``

The same seed gives bitwise-identical files. ``vsreid.data.composite`` reuses planner and renderer with real objects.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from .atomic import atomic_write_bytes
from .labels import write_frame, write_labels

EVENTS = ("occlusion", "exit", "overlap", "scale", "distractor")
OPTIONAL_EVENTS = ("reappear",)
ALL_EVENTS = EVENTS + OPTIONAL_EVENTS
REAPPEAR_DISTANCE = 0.4  # a reappearance is at least this fraction of the frame width from where the object vanished
SHAPES = ("ellipse", "blob", "polygon")
PATTERNS = ("stripes", "spots", "rings", "checker", "camo")
JPEG_QUALITY = 92
SCALE_RANGE = (0.8, 1.3)  # radius factor of the scale-changing object, first to last frame (or reversed)
RADIUS_RANGE = (0.12, 0.15)  # object radius (bounding circle) at scale 1, as a fraction of the frame height


# ---------------------------------------------------------------------------------------------------------- data types
@dataclass
class Sprite:
    """The look of one layer: premultiplied RGBA images and, per image, the point that follows the trajectory.

    ``rgba[k]``: (h, w, 4) float32, RGB in [0, 255] premultiplied by alpha in [0, 1]; ``anchors[k]``: (x, y) px;
    ``order[t]``: which image frame t shows (None: always image 0); ``radius``: max distance (px) from the anchor to
    a covered pixel over all images; ``inner``: radius (px) of a disc around the anchor inside every image's mask;
    ``areas[k]``: alpha sum (px);
    ``upright`` sprites are never rotated, and ``reach`` (px) is then their max horizontal distance from the anchor.
    """

    rgba: list[np.ndarray]
    anchors: list[tuple[float, float]]
    order: np.ndarray | None
    radius: float
    inner: float
    areas: list[float]
    upright: bool = False
    reach: float = 0.0

    def index(self, t: int) -> int:
        return 0 if self.order is None else int(self.order[t])


@dataclass
class Track:
    """Pose per frame, each (T,) float64: anchor ``x``, ``y`` (px), ``radius`` (px, the sprite radius scaled to it),
    ``angle`` (degrees, counter-clockwise); ``hidden`` (T,) bool: frames where the layer is not drawn (None: none)."""

    x: np.ndarray
    y: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    hidden: np.ndarray | None = None


@dataclass
class Layer:
    sprite: Sprite
    track: Track
    label: int  # object id, 0 for unlabelled layers
    kind: str  # "object", "distractor" or "occluder"


@dataclass
class SyntheticSequence:
    """A generated sequence: ``frames`` (T, H, W, 3) uint8 RGB, ``labels`` (T, H, W) uint8 with ids 1..N,
    ``distractor_masks`` (D, T, H, W) bool (visible pixels of each unlabelled look-alike), ``meta`` a JSON-ready dict:
    per object its visible ``area``, ``in_frame_area`` (ignoring occluders), ``full_area`` (also counting pixels
    outside the frame) per frame, ``touches_border`` frames and ``absences`` [start, end) with their cause; the
    labelled ``overlaps``; ``depth_order``; and ``events``, the events found in the ground truth."""

    name: str
    frames: np.ndarray
    labels: np.ndarray
    distractor_masks: np.ndarray
    meta: dict

    def summary(self) -> str:
        """One line: name, size, objects and the events found."""
        t, h, w = self.labels.shape
        parts = []
        for name, e in self.meta["events"].items():
            if "absent" in e:
                parts.append(f"{name} obj{e['object']} absent {e['absent'][0]}-{e['absent'][1] - 1}")
            elif name == "overlap":
                parts.append(f"overlap obj{e['front']} over obj{e['back']} x{len(e['frames'])}")
            elif name == "scale":
                parts.append(f"scale obj{e['object']} x{e['area_ratio']:.1f}")
            else:
                parts.append(f"distractor like obj{e['look_alike_of']} in {len(e['frames'])} frames")
        return (f"{self.name}: {t} frames {w}x{h}, {len(self.meta['objects'])} objects; "
                + ("; ".join(parts) or "no events"))


# ---------------------------------------------------------------------------------------------------------- public API
def generate_sequence(name: str, seed: int, size: tuple[int, int] = (240, 432), num_frames: int = 40,
                      num_objects: int = 3, events: Sequence[str] = EVENTS, min_absence: int = 5) -> SyntheticSequence:
    """Render one synthetic sequence; deterministic in ``seed``. ``size`` is (H, W) px with W >= ~1.6 H.

    Raises ValueError when the size, the length (at least ``min_frames(min_absence)`` = 2 K + 24 frames) or the object
    count (2-4) cannot hold the schedule.
    """
    check_args(size, num_frames, num_objects, events, min_absence)
    plan_ss, look_ss, bg_ss = np.random.SeedSequence(seed).spawn(3)
    look_rng = np.random.default_rng(look_ss)
    r_c = canonical_radius(size[0])
    hues = look_rng.uniform(0, 360) + 360 * np.arange(num_objects) / num_objects
    hues += look_rng.uniform(-12, 12, num_objects)
    patterns = look_rng.permutation(PATTERNS)
    styles = [_style(look_rng, hues[i] % 360, str(patterns[i % len(PATTERNS)])) for i in range(num_objects)]
    sprites = [_object_sprite(s, r_c, look_rng) for s in styles]
    look_alike = _object_sprite(_like(styles[0], look_rng), r_c, look_rng) if "distractor" in events else None
    looks = [{"shape": s["shape"], "pattern": s["pattern"], "hue": round(float(s["hue"]), 1)} for s in styles]
    return assemble(name, seed, "synthetic", np.random.default_rng(plan_ss), size, num_frames, events, min_absence,
                    sprites, look_alike, _camera_background(np.random.default_rng(bg_ss), size, num_frames),
                    required=events, extra_meta={"looks": looks})


def write_sequence(root: str | os.PathLike, seq: SyntheticSequence) -> None:
    """Write frames, annotations and ``synthetic/<name>.json`` of ``seq`` under ``root`` (each file atomically)."""
    root = Path(root)
    for t, (frame, labels) in enumerate(zip(seq.frames, seq.labels)):
        write_frame(root / "JPEGImages/480p" / seq.name / f"{t:05d}.jpg", frame, quality=JPEG_QUALITY)
        write_labels(root / "Annotations/480p" / seq.name / f"{t:05d}.png", labels)
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]",
                  json.dumps(seq.meta, indent=1))  # one line per list of numbers or names
    atomic_write_bytes(root / "synthetic" / f"{seq.name}.json", (text + "\n").encode())


def read_meta(root: str | os.PathLike, name: str) -> dict:
    """The ``meta`` dict written for sequence ``name`` (``ROOT/synthetic/<name>.json``)."""
    return json.loads((Path(root) / "synthetic" / f"{name}.json").read_text())


def canonical_radius(height: int, radius_range: tuple[float, float] = RADIUS_RANGE) -> int:
    """Sprite radius (px) that covers the largest on-screen object of a frame ``height`` px tall."""
    return int(np.ceil(radius_range[1] * SCALE_RANGE[1] * height)) + 2


def min_frames(min_absence: int) -> int:
    """Shortest sequence that holds the event schedule."""
    return sum(_segments(min_absence).values()) + 1


# ------------------------------------------------------------------------------------------- assembling a sequence
def assemble(name: str, seed: int, mode: str, rng: np.random.Generator, size: tuple[int, int], num_frames: int,
             events: Sequence[str], min_absence: int, sprites: list[Sprite], look_alike: Sprite | None,
             background: Callable[[int], np.ndarray], required: Sequence[str], extra_meta: dict,
             radius_range: tuple[float, float] = RADIUS_RANGE) -> SyntheticSequence:
    """Plan trajectories for ``sprites`` (objects 1..N, on-screen radius drawn from ``radius_range`` x H) and
    ``look_alike`` (of object 1), render them over ``background(t)`` ((H, W, 3) float32 RGB), measure the events and
    check that those in ``required`` happened."""
    h, w = size
    plan = _plan(rng, size, num_frames, events, min_absence, sprites, radius_range)
    layers = [Layer(look_alike, plan["distractor"], 0, "distractor")] if look_alike is not None else []
    layers += [Layer(sprites[i], plan["objects"][i], i + 1, "object") for i in plan["depth"]]
    if "occlusion" in events:
        layers.append(Layer(_pole_sprite(rng, h, plan["pole_half_width"], plan["pole_wobble"]),
                            plan["pole"], 0, "occluder"))
    frames, labels, stats = _render(layers, background, size, num_frames)
    meta = {"name": name, "mode": mode, "seed": int(seed), "size": [h, w], "num_frames": num_frames,
            "min_absence": min_absence, "requested_events": list(events), **extra_meta,
            "depth_order": [f"object {ly.label}" if ly.label else ly.kind for ly in layers],
            "objects": [], "distractors": [], "overlaps": stats["overlaps"]}
    for i in range(len(sprites)):
        obj = stats["objects"][i + 1]
        meta["objects"].append({"id": i + 1, "planned_events": [e for e in plan["roles"][i] if e in events], **obj,
                                "absences": _absences(obj["area"], obj["in_frame_area"])})
    if look_alike is not None:
        meta["distractors"].append({"look_alike_of": 1, **stats["distractor"]})
    for o in meta["objects"]:
        _measure_moves(o["absences"], labels == o["id"])
    meta["events"] = _find_events(meta, min_absence)
    missing = [e for e in required if e not in meta["events"]]
    if {"occlusion", "distractor"} <= set(required) - set(missing) and not meta["events"]["distractor"]["while_absent"]:
        missing.append("distractor while object 1 is hidden")
    missing += [f"object {o['id']} visible in frame 0" for o in meta["objects"] if o["area"][0] == 0]
    if missing:
        raise RuntimeError(f"{name} (seed {seed}): scene generation failed, not in the ground truth: {missing}")
    return SyntheticSequence(name, frames, labels, stats["distractor_masks"], meta)


def check_args(size: tuple[int, int], num_frames: int, num_objects: int, events: Sequence[str],
               min_absence: int) -> None:
    """Raise ValueError when the scene cannot hold these settings."""
    unknown = sorted(set(events) - set(ALL_EVENTS))
    if unknown:
        raise ValueError(f"unknown events {unknown}; choose from {list(ALL_EVENTS)}")
    if not 2 <= num_objects <= 4:
        raise ValueError(f"num_objects={num_objects}: the scene holds 2 to 4 objects")
    if "reappear" in events and num_objects < 3:
        raise ValueError(f"num_objects={num_objects}: the reappear event needs 3 or 4 objects")
    if min_absence < 1 or num_frames < min_frames(min_absence):
        raise ValueError(f"num_frames={num_frames} with min_absence={min_absence}: need min_absence >= 1 and at least "
                         f"{min_frames(max(min_absence, 1))} frames")
    if size[0] < 64 or size[1] < 1.6 * size[0]:
        raise ValueError(f"size {size}: need height >= 64 and width >= 1.6 x height")


# ---------------------------------------------------------------------------------------------------------- planning
def _segments(k: int) -> dict[str, int]:
    """Minimum frame counts: approach, hidden (object 1), gap, out of view (object 2), return, tail."""
    return {"approach": 8, "hidden": k + 1, "gap": 2, "out": k + 1, "return": 9, "tail": 2}


def _schedule(num_frames: int, k: int) -> dict[str, int]:
    """Key frames: object 1 fully behind the pole on [hide0, hide1], object 2 out of view on [out0, out1], overlap."""
    seg = _segments(k)
    extra = num_frames - 1 - sum(seg.values())
    for key, share in (("approach", 0.3), ("gap", 0.2), ("return", 0.3)):
        seg[key] += int(share * extra)
    t = np.cumsum(list(seg.values()))
    return dict(zip(("hide0", "hide1", "out0", "out1", "overlap"), t[:5].tolist()))


def _pchip(knots: Sequence[tuple[float, float]], num_frames: int) -> np.ndarray:
    """Monotone cubic (Fritsch-Carlson) through (frame, value) knots at frames 0..T-1, constant beyond the ends.

    Between two knots the curve stays within their two values, which is what the event guarantees rely on.
    """
    knots = sorted(knots)
    t, y = np.array(knots, float).T
    if len(t) == 1:
        return np.full(num_frames, y[0])
    h, d = np.diff(t), np.diff(y) / np.diff(t)
    m = np.empty_like(y)
    m[0], m[-1] = d[0], d[-1]
    for i in range(1, len(t) - 1):
        w1, w2 = 2 * h[i] + h[i - 1], h[i] + 2 * h[i - 1]
        m[i] = (w1 + w2) / (w1 / d[i - 1] + w2 / d[i]) if d[i - 1] * d[i] > 0 else 0.0
    f = np.arange(num_frames, dtype=float)
    i = np.clip(np.searchsorted(t, f, side="right") - 1, 0, len(t) - 2)
    s = np.clip((f - t[i]) / h[i], 0, 1)
    return ((2 * s**3 - 3 * s**2 + 1) * y[i] + (s**3 - 2 * s**2 + s) * h[i] * m[i]
            + (3 * s**2 - 2 * s**3) * y[i + 1] + (s**3 - s**2) * h[i] * m[i + 1])


def _merge(base: list[tuple[int, float]], *groups: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Forced knot groups plus the base knots that are more than 2 frames away from every group's span."""
    spans = [(min(g)[0] - 2, max(g)[0] + 2) for g in groups if g]
    kept = [k for k in base if not any(a <= k[0] <= b for a, b in spans)]
    return kept + [k for g in groups for k in g]


def _plan(rng: np.random.Generator, size: tuple[int, int], T: int, events: Sequence[str], k: int,
          sprites: list[Sprite], radius_range: tuple[float, float]) -> dict:
    """Trajectories of the objects (one per sprite), the look-alike (like object 1) and the pole.

    Lanes: object 1 and the look-alike in the middle, object 2 at the top, objects 3-4 at the bottom (then the whole
    scene is flipped vertically half of the time). Object 1 moves across the pole (direction ``side``); the overlap
    partner stays on the far side, object 4 and the look-alike on the near side, object 2 on either.
    """
    h, w = size
    n = len(sprites)
    rho = [s.inner / s.radius for s in sprites]
    sch = _schedule(T, k)
    hide0, hide1, out0, out1, t_ov = (sch[key] for key in ("hide0", "hide1", "out0", "out1", "overlap"))
    frames = np.arange(T)
    margin, wander = max(2.0, 0.01 * h), 0.03 * h
    base_t = [0, T // 3, 2 * T // 3, T - 1]
    side = rng.choice([-1, 1])
    r0 = h * rng.uniform(*radius_range, n)
    p = 2 if n >= 3 else 1  # overlap partner, also the one that changes scale
    radius = [np.full(T, r) for r in r0]
    if "scale" in events:
        radius[p] = r0[p] * np.linspace(*SCALE_RANGE[::rng.choice([-1, 1])], T)
    rmax = [r.max() for r in radius]

    wob, slack = max(1.0, 0.012 * h), max(2.0, 0.12 * r0[0])
    reach = r0[0] * (sprites[0].reach / sprites[0].radius if sprites[0].upright else 1)
    hw = reach + wob + slack + 1  # pole half-width: object 1 fits inside with room `slack` on either side
    pole_x = w * rng.uniform(0.45, 0.55) + rng.uniform(-0.03, 0.03) * w * frames / (T - 1)

    def pick(s: int, r: float, near: float, far: float) -> float:
        """An x where a disc of radius r is in the frame and clear of the pole, at a fraction from the pole side."""
        lo, hi = ((r + margin, pole_x.min() - hw - wob - r - margin) if s < 0
                  else (pole_x.max() + hw + wob + r + margin, w - r - margin))
        if lo > hi:
            raise ValueError(f"size {size}: the frame is too narrow for the scene")
        f = rng.uniform(near, far)
        return lo + f * (hi - lo) if s > 0 else hi - f * (hi - lo)

    def wave(y0: float) -> np.ndarray:
        return y0 + wander * np.sin(2 * np.pi * frames / (T * rng.uniform(0.8, 1.5)) + rng.uniform(0, 2 * np.pi))

    def lane(y0: float) -> list[tuple[int, float]]:
        return [(t, y0 + rng.uniform(-wander, wander)) for t in base_t]

    def spin(i: int) -> np.ndarray:
        angle = rng.uniform(0, 360) + rng.choice([-1, 1]) * rng.uniform(0.5, 2.0) * frames
        return np.zeros(T) if sprites[i].upright else angle

    y_mid = 0.5 * h
    y_top = max(0.22 * h, rmax[1] + margin + wander)
    y_bot = min(0.78 * h, h - max(rmax[2:], default=0) - margin - wander)
    lane_y = [y_mid, y_top] + [y_bot] * (n - 2)

    # object 1: across the pole, fully behind it on [hide0, hide1]; then to x_ov for the overlap, clear of the pole
    x_ov = pick(side, max(r0[0], radius[p][t_ov]), 0.0, 0.4)
    rel = _pchip([(0, pick(-side, r0[0], 0.0, 0.15) - pole_x[0]), (hide0, -side * slack), (hide1, side * slack),
                  (t_ov, x_ov - pole_x[t_ov]), (T - 1, x_ov - pole_x[t_ov] + side * rng.uniform(0, 0.03) * w)], T)
    x1 = pole_x + rel
    tracks = {0: Track(x1, wave(y_mid), radius[0], spin(0))}

    # object 2 (side s2) and the partner: forced knot groups for the exit and the overlap
    sides = {1: side if n == 2 else rng.choice([-1, 1]), 2: side, 3: -side}
    fx: dict[int, list] = {i: [] for i in range(1, n)}
    fy: dict[int, list] = {i: [] for i in range(1, n)}
    roles: list[list[str]] = [["occlusion", "overlap", "distractor"], ["exit"], [], []][:n]
    roles[p] += ["overlap", "scale"]
    if "exit" in events:
        y_out = -(rmax[1] + margin)
        fy[1] = [[(0, y_top + rng.uniform(-wander, wander)), (out0, y_out),
                  ((out0 + out1) // 2, y_out - rng.uniform(0.02, 0.06) * h), (out1, y_out)]]
        if n > 2 or "overlap" not in events:  # otherwise it comes back straight to the overlap
            fy[1].append([(out1 + 2 * (T - 1 - out1) // 3, y_top + rng.uniform(-wander, wander))])
    if "overlap" in events:
        rp = radius[p][t_ov]
        front, back = (0, p) if r0[0] <= rp else (p, 0)
        r_front, r_back = radius[front][t_ov], radius[back][t_ov]
        lo, hi = r_front - rho[back] * r_back + 1.5, rho[0] * r0[0] + rho[p] * rp - 1.5
        d = (lo + hi) / 2  # back object partly covered (d < hi) and partly visible (d > lo)
        y_ov, away = tracks[0].y[t_ov] + (d if p >= 2 else -d), (1 if p >= 2 else -1) * rng.uniform(0, 0.04) * h
        fx[p] = fx[p] + [[(t_ov, x_ov), (T - 1, x_ov)]]
        fy[p] = fy[p] + [[(t_ov, y_ov), (T - 1, y_ov + away)]]
    v, hidden = n - 1, None
    if "reappear" in events:  # the last object vanishes on [out0, out1] far on one side, reappears far on the other
        x_gone, x_back = pick(-sides[v], rmax[v], 0.6, 1.0), pick(sides[v], rmax[v], 0.6, 1.0)
        fx[v] = fx[v] + [[(out0 - 2, x_gone), (out0, x_gone), (out1, x_back), (out1 + 2, x_back)]]
        hidden = (frames >= out0) & (frames <= out1)
        roles[v].append("reappear")
    for i in range(1, n):
        s_i = [(-sides[i] if hidden is not None and i == v and t < out0 else sides[i]) for t in base_t]
        xs = _merge([(t, pick(s, rmax[i], 0.0, 1.0)) for t, s in zip(base_t, s_i)], *fx[i])
        ys = _merge(lane(lane_y[i]), *fy[i])
        tracks[i] = Track(_pchip(xs, T), _pchip(ys, T), radius[i], spin(i), hidden if i == v else None)

    # depth: random, but in the overlap the larger object is behind
    depth = [int(i) for i in rng.permutation(n)]
    if "overlap" in events and depth.index(front) < depth.index(back):
        a, b = depth.index(front), depth.index(back)
        depth[a], depth[b] = depth[b], depth[a]

    # look-alike of object 1: walks in from the near border while object 1 is hidden, leaves after it reappears
    r_d = r0[0] * rng.uniform(0.92, 1.05)
    x_out = -(r_d + margin) if side > 0 else w + r_d + margin
    dx = [(hide0 - 7, x_out), (hide0 + 1, pick(-side, r_d, 0.75, 0.95)), (hide1, pick(-side, r_d, 0.4, 0.6)),
          (min(T - 1, hide1 + 14), x_out)]
    distractor = Track(_pchip(dx, T), wave(y_mid), np.full(T, r_d), spin(0))
    pole = Track(pole_x, np.full(T, (h - 1) / 2), np.ones(T), np.zeros(T))

    if rng.random() < 0.5:  # flip the scene vertically: object 2 then leaves through the bottom
        for tr in (*tracks.values(), distractor):
            tr.y = h - 1 - tr.y
    return {"objects": [tracks[i] for i in range(n)], "distractor": distractor, "pole": pole, "depth": depth,
            "pole_half_width": hw, "pole_wobble": wob, "roles": roles}


# ---------------------------------------------------------------------------------------------------------- rendering
def _place(layer: Layer, t: int, size: tuple[int, int]):
    """Warp the layer's sprite to its pose at frame t: (row slice, column slice, (h, w, 4) float32) or None."""
    sp, tr = layer.sprite, layer.track
    k = sp.index(t)
    img, (ax, ay) = sp.rgba[k], sp.anchors[k]
    scale = tr.radius[t] / sp.radius
    if scale < 1:  # shrink with area averaging first, so small objects are not aliased
        small = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        sx, sy = small.shape[1] / img.shape[1], small.shape[0] / img.shape[0]
        img, ax, ay, scale = small, (ax + 0.5) * sx - 0.5, (ay + 0.5) * sy - 0.5, scale / sx
    m = cv2.getRotationMatrix2D((ax, ay), float(tr.angle[t]), scale)
    m[:, 2] += (tr.x[t] - ax, tr.y[t] - ay)
    ih, iw = img.shape[:2]
    corners = m @ np.array([[0, iw, 0, iw], [0, 0, ih, ih], [1, 1, 1, 1]], float)
    x0, y0 = np.floor(corners.min(axis=1)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(axis=1)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size[1]), min(y1, size[0])
    if x0 >= x1 or y0 >= y1:
        return None
    m[:, 2] -= (x0, y0)
    patch = cv2.warpAffine(img, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return slice(y0, y1), slice(x0, x1), patch.reshape(y1 - y0, x1 - x0, 4)


def _render(layers: list[Layer], background: Callable[[int], np.ndarray], size: tuple[int, int], T: int):
    """Composite the layers back to front over the background; labels come from the front-most silhouette
    (alpha >= 0.5). Returns frames, labels and per-frame measurements."""
    h, w = size
    frames = np.empty((T, h, w, 3), np.uint8)
    labels = np.empty((T, h, w), np.uint8)
    lut = np.array([0] + [ly.label for ly in layers], np.uint8)
    obj = {li: ly.label for li, ly in enumerate(layers) if ly.kind == "object"}
    dis = [li for li, ly in enumerate(layers) if ly.kind == "distractor"]
    keys = ("area", "in_frame_area", "full_area")
    series = {li: {key: [] for key in keys} | {"touches_border": []} for li in [*obj, *dis]}
    covered = {(b, f): [] for b in obj for f in obj if b < f}
    dmasks = np.zeros((len(dis), T, h, w), bool)
    for t in range(T):
        img = background(t).astype(np.float32, copy=True)
        owner = np.zeros((h, w), np.int16)  # 0 = background, li + 1 = layer li
        sils = {}
        in_frame = {}
        for li, ly in enumerate(layers):
            placed = _place(ly, t, size)
            if placed is None or (ly.track.hidden is not None and ly.track.hidden[t]):
                in_frame[li] = int((placed[2][..., 3] >= 0.5).sum()) if placed is not None else 0
                sils[li] = None
                continue
            ys, xs, patch = placed
            region = img[ys, xs]
            region *= 1 - patch[..., 3:]
            region += patch[..., :3]
            sil = patch[..., 3] >= 0.5
            owner[ys, xs][sil] = li + 1
            sils[li] = (ys, xs, sil)
        counts = np.bincount(owner.ravel(), minlength=len(layers) + 1)
        for li in series:
            s, ly = series[li], layers[li]
            s["area"].append(int(counts[li + 1]))
            s["in_frame_area"].append(int(sils[li][2].sum()) if sils[li] else in_frame.get(li, 0))
            scale = ly.track.radius[t] / ly.sprite.radius
            s["full_area"].append(int(round(ly.sprite.areas[ly.sprite.index(t)] * scale**2)))
            if sils[li] and _touches(sils[li], size):
                s["touches_border"].append(t)
        for b, f in covered:
            sil = sils[b]
            covered[b, f].append(int((sil[2] & (owner[sil[0], sil[1]] == f + 1)).sum()) if sil else 0)
        for j, li in enumerate(dis):
            dmasks[j, t] = owner == li + 1
        frames[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        labels[t] = lut[owner]
    overlaps = []
    for (b, f), cov in covered.items():
        back, front = layers[b].label, layers[f].label
        frames_ov = [t for t, c in enumerate(cov) if c > 0]
        if frames_ov:
            overlaps.append({"front": front, "back": back, "frames": frames_ov, "covered": [cov[t] for t in frames_ov]})
    stats = {"objects": {obj[li]: series[li] for li in obj}, "overlaps": sorted(overlaps, key=lambda o: o["back"]),
             "distractor": series[dis[0]] if dis else None, "distractor_masks": dmasks}
    return frames, labels, stats


def _touches(sil: tuple[slice, slice, np.ndarray], size: tuple[int, int]) -> bool:
    ys, xs, m = sil
    return bool((ys.start == 0 and m[0].any()) or (ys.stop == size[0] and m[-1].any())
                or (xs.start == 0 and m[:, 0].any()) or (xs.stop == size[1] and m[:, -1].any()))


# ---------------------------------------------------------------------------------------------------------- events
def _absences(area: list[int], in_frame: list[int]) -> list[dict]:
    """Runs [start, end) of frames with no visible pixel after the object was first seen; ``cause`` is
    ``occluded`` (in the frame throughout), ``out_of_view`` (outside throughout) or ``mixed``."""
    runs, t, T = [], 0, len(area)
    seen = False
    while t < T:
        if area[t] or not seen:
            seen = seen or area[t] > 0
            t += 1
            continue
        start = t
        while t < T and area[t] == 0:
            t += 1
        inside = [in_frame[i] > 0 for i in range(start, t)]
        cause = "occluded" if all(inside) else "out_of_view" if not any(inside) else "mixed"
        runs.append({"start": start, "end": t, "cause": cause})
    return runs


def _measure_moves(absences: list[dict], masks: np.ndarray) -> None:
    """Add ``moved`` to each absence that ends before the last frame: the distance (px) between the object's visible
    centroids in the frame before it vanished and the frame it came back, from its masks (T, H, W) bool."""
    for run in absences:
        if run["end"] < len(masks):
            (y0, x0), (y1, x1) = (np.argwhere(masks[t]).mean(axis=0) for t in (run["start"] - 1, run["end"]))
            run["moved"] = round(float(np.hypot(x1 - x0, y1 - y0)), 1)


def _find_events(meta: dict, k: int) -> dict:
    """The events the measurements prove (see the module docstring); each names its objects and frames."""
    found: dict[str, dict] = {}
    by_id = {o["id"]: o for o in meta["objects"]}
    far = REAPPEAR_DISTANCE * meta["size"][1] if "reappear" in meta["requested_events"] else np.inf
    for o in meta["objects"]:
        area, full = o["area"], o["full_area"]
        for run in o["absences"]:
            key = {"occluded": "occlusion", "out_of_view": "exit"}.get(run["cause"])
            if key == "occlusion" and run.get("moved", 0) >= far:
                key = "reappear"
            back = [t for t in range(run["end"], len(area)) if area[t] >= 0.5 * full[t] and 10 * area[t] >= area[0]]
            if key and key not in found and run["end"] - run["start"] >= k and back:
                found[key] = {"object": o["id"], "absent": [run["start"], run["end"]], "visible_again": back[0]}
                if key == "reappear":
                    found[key]["moved"] = run["moved"]
    for ov in meta["overlaps"]:
        both = [t for t in ov["frames"] if by_id[ov["back"]]["area"][t] and by_id[ov["front"]]["area"][t]]
        if both and "overlap" not in found:
            found["overlap"] = {"front": ov["front"], "back": ov["back"], "frames": both}
    for o in sorted(meta["objects"], key=lambda o: "scale" not in o["planned_events"]):
        ratio = max(o["full_area"]) / max(min(o["full_area"]), 1)
        if ratio >= 2 and "scale" not in found:
            found["scale"] = {"object": o["id"], "area_ratio": round(ratio, 2)}
    for d in meta["distractors"]:
        target = by_id[d["look_alike_of"]]["area"]
        seen = [t for t, a in enumerate(d["area"]) if a >= 0.25 * d["full_area"][t] > 0]
        if seen and "distractor" not in found:
            found["distractor"] = {"look_alike_of": d["look_alike_of"], "frames": seen,
                                   "while_absent": [t for t in seen if target[t] == 0]}
    return {key: found[key] for key in ALL_EVENTS if key in found}


# ---------------------------------------------------------------------------------------------------------- content
def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """RGB (3,) float32 in [0, 255] of hue h (degrees), saturation and value in [0, 1]."""
    px = np.array([[[h % 360, np.clip(s, 0, 1), np.clip(v, 0, 1)]]], np.float32)
    return cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0] * 255


def _noise(rng: np.random.Generator, grid: tuple[int, int], size: tuple[int, int], channels: int = 1) -> np.ndarray:
    """Smooth value noise (H, W[, C]) float32, roughly unit variance, with ``grid`` cells of random values."""
    cells = rng.standard_normal((max(grid[0], 2), max(grid[1], 2), channels)).astype(np.float32)
    out = cv2.resize(cells, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
    return out.reshape(size[0], size[1], channels) if channels > 1 else out.reshape(size)


def _style(rng: np.random.Generator, hue: float, pattern: str) -> dict:
    """Random shape and colours of one object."""
    shape = str(rng.choice(SHAPES))
    if shape == "ellipse":
        params = {"b": rng.uniform(0.6, 0.85)}
    elif shape == "blob":
        params = {"amp": rng.uniform(0.04, 0.1, 3), "phase": rng.uniform(0, 2 * np.pi, 3)}
    else:
        n = int(rng.integers(6, 10))
        params = {"jitter": rng.uniform(-0.25, 0.25, n), "radii": rng.uniform(0.78, 1.0, n)}
    return {"shape": shape, "params": params, "pattern": pattern, "hue": hue, "sat": rng.uniform(0.55, 0.9),
            "val": rng.uniform(0.6, 0.9), "hue2": hue + rng.choice([-1, 1]) * rng.uniform(20, 50),
            "val2": rng.uniform(0.3, 0.95), "lam": rng.uniform(0.35, 0.6), "phi": rng.uniform(0, np.pi),
            "light": rng.uniform(0, 2 * np.pi)}


def _like(style: dict, rng: np.random.Generator) -> dict:
    """A look-alike: same shape family, pattern and colours, slightly perturbed."""
    p = dict(style["params"])
    if style["shape"] == "ellipse":
        p["b"] = float(np.clip(p["b"] + rng.uniform(-0.05, 0.05), 0.6, 0.85))
    elif style["shape"] == "blob":
        p["amp"] = np.clip(p["amp"] + rng.uniform(-0.02, 0.02, 3), 0.02, 0.1)
        p["phase"] = p["phase"] + rng.uniform(-0.4, 0.4, 3)
    else:
        p["radii"] = np.clip(p["radii"] + rng.uniform(-0.05, 0.05, p["radii"].size), 0.78, 1.0)
    shift = rng.choice([-1, 1]) * rng.uniform(3, 8)
    return style | {"params": p, "hue": style["hue"] + shift, "hue2": style["hue2"] + shift,
                    "sat": style["sat"] + rng.uniform(-0.05, 0.05), "val": style["val"] + rng.uniform(-0.05, 0.05),
                    "lam": style["lam"] * rng.uniform(0.9, 1.1), "phi": style["phi"] + rng.uniform(-0.3, 0.3)}


def _outline(style: dict) -> np.ndarray:
    """Closed outline (M, 2) of the shape, max radius 1."""
    p = style["params"]
    if style["shape"] == "polygon":
        n = p["radii"].size
        a = (np.arange(n) + p["jitter"]) * 2 * np.pi / n
        r = p["radii"]
    else:
        a = np.linspace(0, 2 * np.pi, 360, endpoint=False)
        if style["shape"] == "ellipse":
            r = p["b"] / np.sqrt((p["b"] * np.cos(a)) ** 2 + np.sin(a) ** 2)
        else:
            r = 1 + sum(p["amp"][j] * np.cos((j + 2) * a + p["phase"][j]) for j in range(3))
    return np.stack([r * np.cos(a), r * np.sin(a)], 1) / r.max()


def _pattern(style: dict, rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pattern value in [0, 1] at unit coordinates (u, v) (object radius = 1)."""
    lam, c, s = style["lam"], np.cos(style["phi"]), np.sin(style["phi"])
    ur, vr = u * c + v * s, -u * s + v * c
    kind = style["pattern"]
    if kind == "stripes":
        return 0.5 + 0.5 * np.sin(2 * np.pi * ur / lam)
    if kind == "rings":
        return 0.5 + 0.5 * np.sin(2 * np.pi * np.hypot(u + 0.2 * c, v + 0.2 * s) / lam)
    if kind == "checker":
        return 0.5 + 0.5 * np.tanh(3 * np.sin(2 * np.pi * ur / lam) * np.sin(2 * np.pi * vr / lam))
    if kind == "spots":
        spots = np.zeros_like(u)
        for cx, cy in rng.uniform(-0.9, 0.9, (int(rng.integers(7, 12)), 2)):
            spots += np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (0.16 * lam) ** 2)
        return np.clip(spots, 0, 1)
    noise = _noise(rng, (int(6 / lam), int(6 / lam)), u.shape)
    return 0.5 + 0.5 * np.tanh(3 * noise)  # camouflage


def _object_sprite(style: dict, r_c: int, rng: np.random.Generator) -> Sprite:
    """Render a shape of radius ``r_c`` px with its texture, shading and darker rim."""
    size = 2 * r_c + 5
    c = (size - 1) / 2
    big = np.zeros((4 * size, 4 * size), np.uint8)
    pts = np.round((_outline(style) * r_c + c + 0.5) * 4 * 16 - 0.5 * 16).astype(np.int32)
    cv2.fillPoly(big, [pts], 255, lineType=cv2.LINE_AA, shift=4)
    alpha = cv2.resize(big.astype(np.float32) / 255, (size, size), interpolation=cv2.INTER_AREA)
    v, u = (np.mgrid[0:size, 0:size].astype(np.float32) - c) / r_c
    p = _pattern(style, rng, u, v)[..., None]
    rgb = (1 - p) * _hsv(style["hue"], style["sat"], style["val"])
    rgb += p * _hsv(style["hue2"], style["sat"], style["val2"])
    inside = (alpha >= 0.5).astype(np.uint8)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 5)
    shade = (0.85 + 0.15 * (u * np.cos(style["light"]) + v * np.sin(style["light"])))
    shade *= 0.65 + 0.35 * np.clip(dist / (0.3 * r_c), 0, 1)
    shade *= 1 + 0.08 * _noise(rng, (size // 3, size // 3), (size, size))
    rgb = np.clip(rgb * shade[..., None], 0, 255)
    yy, xx = np.nonzero(alpha > 0)
    radius = float(np.hypot(xx - c, yy - c).max()) + 0.5
    rgba = np.dstack([rgb * alpha[..., None], alpha]).astype(np.float32)
    return Sprite([rgba], [(c, c)], None, radius, float(dist[int(c), int(c)]),
                  [float(alpha.sum())])


def _pole_sprite(rng: np.random.Generator, h: int, hw: float, wob: float) -> Sprite:
    """A vertical bark-textured pole (H + 8, width) with half-width ``hw`` +- ``wob`` px varying along its height."""
    ph, pw = h + 8, int(np.ceil(2 * (hw + wob))) + 6
    c = (pw - 1) / 2
    edges = [_noise(rng, (ph // 24 + 2, 1), (ph, 1))[:, 0] for _ in range(2)]
    left = c - hw - wob * edges[0] / np.abs(edges[0]).max()
    right = c + hw + wob * edges[1] / np.abs(edges[1]).max()
    x = np.arange(pw, dtype=np.float32)[None]
    alpha = np.clip(np.minimum(x - left[:, None], right[:, None] - x) + 0.5, 0, 1).astype(np.float32)
    base = _hsv(rng.uniform(15, 45), rng.uniform(0.15, 0.45), rng.uniform(0.3, 0.55))
    bark = 1 + 0.25 * _noise(rng, (ph // 20 + 2, max(pw // 3, 2)), (ph, pw))
    bark += 0.1 * _noise(rng, (ph // 3, pw), (ph, pw))
    shade = 0.55 + 0.45 * np.sqrt(np.clip(1 - ((x - c) / (hw + wob + 1)) ** 2, 0, 1))
    rgb = np.clip(base * (bark * shade)[..., None], 0, 255)
    rgba = np.dstack([rgb * alpha[..., None], alpha]).astype(np.float32)
    return Sprite([rgba], [(c, (ph - 1) / 2)], None, 1.0, 0.0, [float(alpha.sum())])


def _camera_background(rng: np.random.Generator, size: tuple[int, int], T: int) -> Callable[[int], np.ndarray]:
    """A textured scene seen by a panning, slowly zooming camera: ``f(t)`` -> (H, W, 3) float32 RGB."""
    h, w = size
    ch, cw = int(h * 1.25) + 4, int(w * 1.25) + 4
    hue = rng.uniform(0, 360)
    sky = _hsv(hue, rng.uniform(0.1, 0.4), rng.uniform(0.55, 0.85))
    ground = _hsv(hue + rng.uniform(60, 180), rng.uniform(0.15, 0.45), rng.uniform(0.3, 0.6))
    horizon = rng.uniform(0.3, 0.6) * ch
    mix = 1 / (1 + np.exp(-(np.arange(ch, dtype=np.float32) - horizon) / (0.04 * ch)))
    canvas = np.broadcast_to(sky * (1 - mix[:, None, None]) + ground * mix[:, None, None], (ch, cw, 3)).copy()
    canvas += 25 * _noise(rng, (4, 7), (ch, cw), 3)
    grain = 0.12 * _noise(rng, (ch // 12, cw // 12), (ch, cw)) + 0.05 * _noise(rng, (ch // 3, cw // 3), (ch, cw))
    canvas *= (1 + grain)[..., None]
    for _ in range(14):  # soft-edged shapes: structure for the optical flow
        mask = np.zeros((ch, cw), np.float32)
        centre = (int(rng.uniform(0, cw)), int(rng.uniform(0, ch)))
        axes = (int(rng.uniform(0.03, 0.2) * cw), int(rng.uniform(0.02, 0.15) * ch))
        if rng.random() < 0.5:
            cv2.ellipse(mask, centre, axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
        else:
            end = (centre[0] + axes[0] * 2, centre[1] + int(rng.uniform(-1, 1) * axes[1]))
            cv2.line(mask, centre, end, 1.0, max(2, axes[1] // 4))
        mask = cv2.GaussianBlur(mask, (0, 0), 1.2)[..., None] * rng.uniform(0.25, 0.6)
        colour = _hsv(hue + rng.uniform(-90, 90), rng.uniform(0.1, 0.5), rng.uniform(0.2, 0.9))
        canvas = canvas * (1 - mask) + colour * mask
    canvas = np.clip(canvas, 0, 255).astype(np.float32)
    tx = _pchip([(0, 0), (T // 2, rng.uniform(-0.05, 0.05) * w), (T - 1, rng.uniform(-0.06, 0.06) * w)], T)
    ty = _pchip([(0, 0), (T // 2, rng.uniform(-0.03, 0.03) * h), (T - 1, rng.uniform(-0.04, 0.04) * h)], T)
    zoom = 1 + rng.choice([-1, 1]) * rng.uniform(0.03, 0.07) * np.arange(T) / (T - 1)

    def frame(t: int) -> np.ndarray:
        z = zoom[t]
        m = np.array([[1 / z, 0, (cw - w / z) / 2 + tx[t]], [0, 1 / z, (ch - h / z) / 2 + ty[t]]])
        return cv2.warpAffine(canvas, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REFLECT)

    return frame
