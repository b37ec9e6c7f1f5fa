"""Training and validation samples for the propagation network: one object per sample, cropped around it.

A sample is a dict of numpy arrays (the default collate turns them into tensors)::

    image   float32 (3, S, S)  RGB in [0, 1]
    flow    float32 (2, S, S)  pixels, from the current frame toward the source frame (crop resizing leaves the
                               vectors unscaled, as in the original; augmentation maps them, see ``augment``)
    prior   float32 (1, S, S)  mask prior in [0, 1]
    residual float32 (1, S, S) photometric residual of the warp that made the prior, 0-255 (zero when the prior was
                               not warped; see ``vsreid.data.warp.photometric_residual``)
    target  int64   (S, S)     1 = the object, 0 = elsewhere, 255 = void (void pixels and padding)

Training crops (original Caffe layer): the object's tight ground-truth box, each side jittered by up to +-20% of the
box size, then enlarged by 30% per side and clipped to the frame, resampled to S x S. With augmentation the crop is cut
with a margin (``Augmenter.canvas``) and albumentations flips, rotates and scales it about its centre before the centre
S x S square is kept, so the rotated corners show frame content (see ``vsreid.data.augment``).

Sample sources:

- video pair: frame t and a neighbouring source frame (t-1 going forward, t+1 going backward). The prior is the source
  frame's ground truth of the object, warped to t with the original forward-backward-checked warp; with probability
  ``p_deform`` it is instead a synthetic deformation of t's own ground truth. The flow input is the flow from t toward
  the source frame (``t.rflo`` forward, ``t.flo`` backward). With ``max_gap`` > 1 the source frame is t -+ g, g drawn
  uniformly from 1..max_gap, and both flows are chained frame by frame: a larger gap gives a prior with the larger
  errors of faster motion.
  With probability ``p_occluder`` another training object (a donor pair of frames from any training sequence, with
  its own flows) is pasted over both frames near the object, in front of it or behind it: frames, labels and both
  flows change where it lands, so the prior is warped, and the residual computed, across a real object that
  occludes or touches the one to segment (the multi-object situations of DAVIS 2017 and re-ID).
  With probability ``p_background`` the object, cut out of both frames by its masks (edges feathered over about a
  pixel), is moved as it is onto a frame pair of another training sequence, and both flows are computed again by DIS
  on the composite frames, as prediction computes them: the object over backgrounds it was never filmed on, so the
  network cannot learn a sequence's background instead of its object.
- static frame: one annotated frame, prior = deformed ground truth, zeroed with probability 0.4, flow input zero.
- first frame (online finetuning): the annotated frames of the sequences to finetune on, prior = deformed ground
  truth. Frame 0 has no backward flow, so its flow input is the negated forward flow ``-(0.flo)``, an approximation
  of the missing ``0.rflo``; a later annotated frame t uses its real ``t.rflo``.

Randomness: item i of epoch e draws from ``np.random.default_rng((seed, e, i))``, so DataLoader workers never repeat
each other and a run is reproducible; call ``set_epoch(e)`` before each epoch.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from .augment import Augmentation, Augmenter, warp, warp_flow
from .crops import crop_resize, grown_box, object_box
from .davis import DavisRoot
from .deform import deform_mask
from .flow import DEFAULT_PRESET, DISFlow
from .labels import VOID, read_frame, read_labels
from .warp import RESIDUAL_REACH, compose_flows, photometric_residual, warp_grid

MAX_ATTEMPTS = 100
FEATHER_SIGMA = 0.7  # pixels: the blur of an object's mask where it is pasted onto another background


class Flows(Protocol):
    """What the samples need from a ``vsreid.data.flow.FlowCache``: (H, W, 2) float32 flows on frame t's grid."""

    def forward(self, seq: str, t: int) -> np.ndarray: ...  # t -> t+1 (``t.flo``)

    def backward(self, seq: str, t: int) -> np.ndarray: ...  # t -> t-1 (``t.rflo``)


class _LRU:
    """A small least-recently-used cache: ``get(key, make)``."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict = OrderedDict()

    def get(self, key, make: Callable):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()
        if self.capacity > 0:
            self._items[key] = value
            if len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return value


class _Frames:
    """Decoded frames and annotations of one root, frame by frame in LRU caches, plus per-frame id counts."""

    def __init__(self, root: DavisRoot, sequences: Sequence[str], cache_frames: int, cache_labels: int):
        self.root = root
        self.paths = {s: root.frame_paths(s) for s in sequences}
        self.stems = {s: [p.stem for p in self.paths[s]] for s in sequences}
        annotated = {s: set(root.annotated_stems(s)) for s in sequences}
        self.annotated = {s: [st in annotated[s] for st in self.stems[s]] for s in sequences}
        self._frames = _LRU(cache_frames)
        self._labels = _LRU(cache_labels)
        self._counts: dict[tuple[str, int], np.ndarray] = {}

    def frame(self, seq: str, t: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        return self._frames.get((seq, t), lambda: read_frame(self.paths[seq][t]))

    def labels(self, seq: str, t: int) -> np.ndarray:
        """(H, W) uint8 ids."""
        return self._labels.get((seq, t), lambda: read_labels(self.root.annotation_path(seq, self.stems[seq][t])))

    def counts(self, seq: str, t: int) -> np.ndarray:
        """(256,) int64 pixel count per id in frame t's annotation."""
        key = (seq, t)
        if key not in self._counts:
            self._counts[key] = np.bincount(self.labels(seq, t).ravel(), minlength=256)
        return self._counts[key]

    def objects(self, seq: str, t: int, min_area: int = 1) -> np.ndarray:
        """Ids (1..254) with at least ``min_area`` pixels in frame t."""
        c = self.counts(seq, t)[1:VOID]
        return np.flatnonzero(c >= min_area) + 1


@dataclass
class _Pair:
    """A training pair on full frames: frame t and its source frame, their id maps, and the flows between them."""

    frame: np.ndarray  # (H, W, 3) uint8, frame t
    source_frame: np.ndarray  # (H, W, 3) uint8
    labels: np.ndarray  # (H, W) uint8 ids of frame t
    source_labels: np.ndarray
    to_source: np.ndarray  # (H, W, 2) float32 on t's grid
    from_source: np.ndarray | None  # (H, W, 2) float32 on the source grid; None when the prior is not warped


def _chained_flow(flow_of: Callable[[str, int], np.ndarray], seq: str, start: int, step: int, gap: int
                  ) -> np.ndarray:
    """(H, W, 2) flow from frame ``start`` to ``start + gap * step`` on start's grid, chaining ``flow_of(seq, t)``
    (the flow t -> t + step, e.g. ``Flows.forward`` for step 1) frame by frame."""
    flow = flow_of(seq, start)
    for k in range(1, gap):
        flow = compose_flows(flow, flow_of(seq, start + k * step))
    return flow


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _as_augmentation(augment: bool | Augmentation | None) -> Augmentation | None:
    if isinstance(augment, Augmentation):
        return augment
    return Augmentation() if augment else None


class _Sampler:
    """Shared machinery: crop geometry, rendering of one object's arrays, epochs and seeds."""

    def __init__(self, size: int, samples_per_epoch: int, seed: int, augment, jitter: float, box_enlargement: float,
                 min_area: int, erode_share: float):
        self.size = size
        self.erode_share = erode_share
        self.samples_per_epoch = samples_per_epoch
        self.seed = seed
        augmentation = _as_augmentation(augment)
        self.augmenter = Augmenter(augmentation, size) if augmentation is not None else None
        self.jitter = jitter
        self.box_enlargement = box_enlargement
        self.min_area = min_area
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch, index))

    def _geometry(self, mask: np.ndarray, rng: np.random.Generator):
        """The in->out (3, 3) matrix from the frame to the crop (to the augmenter's canvas, whose centre S x S square
        is the crop, when augmenting) and the frame region (x0, y0, x1, y1) that it reads."""
        h, w = mask.shape
        x1, y1, x2, y2 = (float(v) for v in object_box(mask, box_enlargement=0.0))
        bw, bh = x2 - x1, y2 - y1
        j = rng.uniform(-self.jitter, self.jitter, 4) * np.array([bw, bh, bw, bh])
        x1, y1, x2, y2 = x1 + j[0], y1 + j[1], max(x2 + j[2], x1 + j[0] + 1), max(y2 + j[3], y1 + j[1] + 1)
        bw, bh = x2 - x1, y2 - y1
        x1 = float(np.clip(x1 - self.box_enlargement * bw, 0, w - 1))
        x2 = float(np.clip(x2 + self.box_enlargement * bw, x1 + 1, w))
        y1 = float(np.clip(y1 - self.box_enlargement * bh, 0, h - 1))
        y2 = float(np.clip(y2 + self.box_enlargement * bh, y1 + 1, h))
        s, pad = self.size, (self.augmenter.pad if self.augmenter else 0)
        matrix = np.array([[s / (x2 - x1), 0, (0.5 - x1) * s / (x2 - x1) - 0.5 + pad],
                           [0, s / (y2 - y1), (0.5 - y1) * s / (y2 - y1) - 0.5 + pad], [0, 0, 1]])  # cv2.resize's
        side = s + 2 * pad
        corners = np.array([[-0.5, -0.5, 1], [side - 0.5, -0.5, 1], [-0.5, side - 0.5, 1], [side - 0.5, side - 0.5, 1]])
        src = (np.linalg.inv(matrix) @ corners.T)[:2]
        rx0, ry0 = np.floor(src.min(1)).astype(int) - 1
        rx1, ry1 = np.ceil(src.max(1)).astype(int) + 2
        region = (max(rx0, 0), max(ry0, 0), min(max(rx1, 1), w), min(max(ry1, 1), h))
        return matrix, region

    def _render(self, matrix, rng, image, labels, obj, prior, flow, residual=None) -> dict[str, np.ndarray]:
        """Cut the full-frame arrays to the crop and augment them. ``prior`` (H, W) bool or None, ``flow``
        (H, W, 2) or None, ``residual`` (H, W) float32 or None."""
        side = self.size + 2 * (self.augmenter.pad if self.augmenter else 0)
        c = (side, side)
        img = warp(image, matrix, c).astype(np.float32) / 255
        lab = warp(labels, matrix, c, cv2.INTER_NEAREST, fill=VOID)
        p = np.zeros(c, np.float32) if prior is None else \
            warp(prior.view(np.uint8) * np.uint8(255), matrix, c).astype(np.float32) / 255
        f = np.zeros(c + (2,), np.float32) if flow is None else warp_flow(flow, matrix, c)
        r = np.zeros(c, np.float32) if residual is None else warp(residual, matrix, c)
        if self.augmenter is not None:
            out = self.augmenter(rng, img, lab, p, r, f)
            img, lab, p, r, f = out["image"], out["labels"], out["prior"], out["residual"], out["flow"]
        target = np.where(lab == obj, 1, np.where(lab == VOID, VOID, 0)).astype(np.int64)
        return {"image": np.ascontiguousarray(img.transpose(2, 0, 1)),
                "flow": np.ascontiguousarray(f.transpose(2, 0, 1)),
                "prior": np.ascontiguousarray(p)[None], "residual": np.ascontiguousarray(r)[None], "target": target}


class PropagationSamples(_Sampler):
    """Video-pair and static-frame training samples from one or more DAVIS roots.

    Args:
        roots: (root, sequences) pairs; sequences None = every sequence of the root.
        flow: one flow cache per root (``FlowCache``: ``.forward(seq, t)``, ``.backward(seq, t)``), or a callable
            giving the cache of a root.
        size: crop side S in pixels.
        samples_per_epoch: ``len(self)``.
        p_deform: probability that a video pair's prior is a deformed ground truth instead of the warped one.
        p_static: probability of a static-frame sample instead of a video pair.
        p_zero_prior: probability that a static sample's prior is all zero.
        augment: True for the default :class:`Augmentation`, an instance, or False for none.
        jitter, box_enlargement: box jitter and enlargement per side, as fractions of the box size.
        min_area: an object needs this many pixels in the current frame to be picked.
        erode_share: share of deformed priors that end with an erosion instead of the original's dilation (see
            :func:`vsreid.data.deform.deform_mask`; 0.5 keeps deformed priors unbiased in size, 0 is the original).
        max_gap: video pairs span 1..max_gap frames (uniformly; 1 = neighbouring frames only, the original).
        p_occluder: probability that a video pair gets a pasted donor object (see the module docstring).
        p_background: probability that a video pair's object is moved onto another sequence's frames, its flows
            computed again by DIS with ``flow_preset`` (see the module docstring).
        cache_frames, cache_labels: LRU sizes (decoded frames / annotations per root).
    """

    def __init__(self, roots: Sequence[tuple[DavisRoot, Sequence[str] | None]],
                 flow: Sequence[Flows] | Callable[[DavisRoot], Flows], size: int = 321,
                 samples_per_epoch: int = 10000, p_deform: float = 0.5, p_static: float = 0.0,
                 p_zero_prior: float = 0.4, seed: int = 0, augment: bool | Augmentation = True, jitter: float = 0.2,
                 box_enlargement: float = 0.3, min_area: int = 16, erode_share: float = 0.5, max_gap: int = 1,
                 p_occluder: float = 0.0, p_background: float = 0.0, flow_preset: str = DEFAULT_PRESET,
                 cache_frames: int = 32, cache_labels: int = 128):
        super().__init__(size, samples_per_epoch, seed, augment, jitter, box_enlargement, min_area, erode_share)
        if max_gap < 1:
            raise ValueError(f"max_gap must be >= 1, got {max_gap}")
        self.p_deform, self.p_static, self.p_zero_prior, self.max_gap = p_deform, p_static, p_zero_prior, max_gap
        self.p_occluder, self.p_background, self.flow_preset = p_occluder, p_background, flow_preset
        self._dis: DISFlow | None = None  # made where first needed: cv2 objects do not cross to worker processes
        self.stores = [_Frames(r, r.sequences(sequences=list(seqs) if seqs else None), cache_frames, cache_labels)
                       for r, seqs in roots]
        self.flows = [flow(r) for r, _ in roots] if callable(flow) else list(flow)
        if len(self.flows) != len(self.stores):
            raise ValueError(f"{len(self.flows)} flow caches for {len(self.stores)} roots")
        # (store, seq, forward ts, backward ts): t valid when t and its source frame are annotated
        self.pairs, self.static = [], []
        for k, store in enumerate(self.stores):
            for seq, ann in store.annotated.items():
                fwd = [t for t in range(1, len(ann)) if ann[t] and ann[t - 1]]
                bwd = [t for t in range(len(ann) - 1) if ann[t] and ann[t + 1]]
                if fwd or bwd:
                    self.pairs.append((k, seq, fwd, bwd))
                self.static += [(k, seq, t) for t in range(len(ann)) if ann[t]]
        if p_static < 1 and not self.pairs:
            raise ValueError("no sequence has two consecutive annotated frames: video pairs are impossible")
        if p_static > 0 and not self.static:
            raise ValueError("no annotated frame in the given sequences")

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        rng = self._rng(index)
        static = rng.random() < self.p_static
        for _ in range(MAX_ATTEMPTS):
            sample = self._static(rng) if static else self._video_pair(rng)
            if sample is not None:
                return sample
        raise RuntimeError(f"no object with at least {self.min_area} pixels found in {MAX_ATTEMPTS} draws")

    def _video_pair(self, rng):
        k, seq, fwd, bwd = _pick(rng, self.pairs)
        forward = bool(rng.random() < 0.5) if fwd and bwd else bool(fwd)
        t = _pick(rng, fwd if forward else bwd)
        step = 1 if forward else -1
        store, flows = self.stores[k], self.flows[k]
        gap = int(rng.integers(1, self.max_gap + 1)) if self.max_gap > 1 else 1  # gap 1 draws nothing
        while not (0 <= t - gap * step < len(store.annotated[seq]) and store.annotated[seq][t - gap * step]):
            gap -= 1  # near the ends of the sequence or of its annotated frames: a shorter gap
        src = t - gap * step
        ids = np.intersect1d(store.objects(seq, t, self.min_area), store.objects(seq, src))
        if ids.size == 0:
            return None
        obj = int(_pick(rng, ids))
        toward_source, toward_target = (flows.backward, flows.forward) if forward else (flows.forward, flows.backward)
        pair = _Pair(store.frame(seq, t), store.frame(seq, src), store.labels(seq, t), store.labels(seq, src),
                     _chained_flow(toward_source, seq, t, -step, gap), None)
        deformed = rng.random() < self.p_deform
        if not deformed:
            pair.from_source = _chained_flow(toward_target, seq, src, step, gap)
        if self.p_background and rng.random() < self.p_background:  # no draw at 0: earlier runs' samples stay
            pair = self._on_background(pair, obj, seq, rng, step, gap, deformed) or pair
        if rng.random() < self.p_occluder:
            pair = self._with_donor(pair, obj, rng, step, gap, deformed) or pair
        mask = pair.labels == obj
        if not mask.any():
            return None
        matrix, region = self._geometry(mask, rng)
        residual = None
        if deformed:
            prior = deform_mask(mask, rng, erode_share=self.erode_share)
        else:
            # the region widened by the residual blur's reach, so the residual is exact wherever the crop reads
            grid = warp_grid(pair.to_source, pair.from_source,
                             region=grown_box(region, RESIDUAL_REACH, pair.labels.shape))
            prior = grid.pull(pair.source_labels) == obj
            residual = photometric_residual(pair.frame, pair.source_frame, grid)
        return self._render(matrix, rng, pair.frame, pair.labels, obj, prior, pair.to_source, residual)

    def _on_background(self, pair: "_Pair", obj: int, seq: str, rng, step: int, gap: int, deformed: bool
                       ) -> "_Pair | None":
        """``pair`` with object ``obj`` moved, in the same place, onto frames t' and t' - gap * step of another
        training sequence than ``seq`` (resized to the pair's frame size), its labels the object alone and both flows
        computed again by DIS on the composite frames (the flow back to the source frame only when the prior is
        warped); None when no other sequence has such frames."""
        others = [p for p in self.pairs if p[1] != seq]
        if not others:
            return None
        k, bg_seq, fwd, bwd = _pick(rng, others)
        store = self.stores[k]
        ts = [t for t in (fwd if step == 1 else bwd) if 0 <= t - gap * step < len(store.annotated[bg_seq])]
        if not ts:
            return None
        t = _pick(rng, ts)
        h, w = pair.labels.shape
        masks = [pair.labels == obj, pair.source_labels == obj]
        frames = []
        for frame, mask, bg in ((pair.frame, masks[0], store.frame(bg_seq, t)),
                                (pair.source_frame, masks[1], store.frame(bg_seq, t - gap * step))):
            if bg.shape[:2] != (h, w):
                bg = cv2.resize(bg, (w, h), interpolation=cv2.INTER_AREA)
            alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), FEATHER_SIGMA)[..., None]
            frames.append(np.round(alpha * frame + (1 - alpha) * bg).astype(np.uint8))
        if self._dis is None:
            self._dis = DISFlow(self.flow_preset)
        labels = [np.where(m, obj, 0).astype(np.uint8) for m in masks]
        return _Pair(frames[0], frames[1], labels[0], labels[1], self._dis(frames[0], frames[1]),
                     None if deformed else self._dis(frames[1], frames[0]))

    def _with_donor(self, pair: "_Pair", obj: int, rng, step: int, gap: int, deformed: bool) -> "_Pair | None":
        """``pair`` with a donor object pasted near object ``obj`` in both frames (None when no donor fits): another
        training object's frames t' and t' - gap * step, scaled to 0.5-1.2x the object's size and moved to touch or
        overlap it, in front (occluding) with probability 0.6, else behind."""
        k, seq, fwd, bwd = _pick(rng, self.pairs)
        store, flows = self.stores[k], self.flows[k]
        ts = [t for t in (fwd if step == 1 else bwd) if 0 <= t - gap * step < len(store.annotated[seq])
              and store.annotated[seq][t - gap * step]]
        if not ts:
            return None
        t = _pick(rng, ts)
        src = t - gap * step
        donor_labels = [store.labels(seq, t), store.labels(seq, src)]
        donor_masks = [(lab > 0) & (lab != VOID) for lab in donor_labels]
        if donor_masks[0].sum() < self.min_area or not donor_masks[1].any():
            return None
        target = pair.labels == obj
        ty, tx = np.nonzero(target)
        dy, dx = np.nonzero(donor_masks[0])
        t_size, d_size = max(np.ptp(tx), np.ptp(ty)) + 1, max(np.ptp(dx), np.ptp(dy)) + 1
        scale = float(np.clip(rng.uniform(0.5, 1.2) * t_size / d_size, 0.1, 2.0))
        angle = rng.uniform(0, 2 * np.pi)  # from the object's centre toward the donor's, about one radius apart
        reach = 0.5 * (t_size + scale * d_size) * rng.uniform(0.3, 0.9)
        centre = np.array([tx.mean(), ty.mean()]) + reach * np.array([np.cos(angle), np.sin(angle)])
        affine = np.array([[scale, 0, centre[0] - scale * dx.mean()], [0, scale, centre[1] - scale * dy.mean()]])
        h, w = target.shape
        toward_source, toward_target = (flows.backward, flows.forward) if step == 1 else (flows.forward, flows.backward)
        donor_flows = [_chained_flow(toward_source, seq, t, -step, gap),
                       None if deformed else _chained_flow(toward_target, seq, src, step, gap)]
        frames = [store.frame(seq, t), store.frame(seq, src)]
        moved = []
        for i in range(2):
            m = cv2.warpAffine(donor_masks[i].astype(np.float32), affine, (w, h)) >= 0.5
            f = cv2.warpAffine(frames[i], affine, (w, h), flags=cv2.INTER_LINEAR)
            fl = None if donor_flows[i] is None else cv2.warpAffine(donor_flows[i], affine, (w, h)) * scale
            moved.append((m, f, fl))
        in_front = rng.random() < 0.6
        out = []
        for i, (frame, labels, flow) in enumerate(((pair.frame, pair.labels, pair.to_source),
                                                   (pair.source_frame, pair.source_labels, pair.from_source))):
            m, f, fl = moved[i]
            if not in_front:
                m = m & ~((labels > 0) & (labels != VOID))
            donor_id = VOID - 1  # an id no DAVIS object uses: the donor is "another object"
            out.append((np.where(m[..., None], f, frame), np.where(m, donor_id, labels).astype(np.uint8),
                        None if flow is None else np.where(m[..., None], fl, flow).astype(np.float32)))
        return _Pair(out[0][0], out[1][0], out[0][1], out[1][1], out[0][2], out[1][2])

    def _static(self, rng):
        k, seq, t = _pick(rng, self.static)
        store = self.stores[k]
        ids = store.objects(seq, t, self.min_area)
        if ids.size == 0:
            return None
        obj = int(_pick(rng, ids))
        labels = store.labels(seq, t)
        mask = labels == obj
        matrix, _ = self._geometry(mask, rng)
        prior = None if rng.random() < self.p_zero_prior else deform_mask(mask, rng, erode_share=self.erode_share)
        return self._render(matrix, rng, store.frame(seq, t), labels, obj, prior, None)


RECENT_FLOWS = 4  # flows a FirstFrameSamples keeps (3.3 MB each at 854x480)


class FirstFrameSamples(_Sampler):
    """Online-finetuning samples from the annotated first frames of the sequences to segment.

    Args:
        root, sequences: the DAVIS root and the sequences (every annotated one when None).
        flow_cache: the root's flow cache.
        frames: per sequence, the frame indices to train on (default: frame 0 only).
        Other arguments as :class:`PropagationSamples`.
    """

    def __init__(self, root: DavisRoot, sequences: Sequence[str] | None, flow_cache: Flows, size: int = 321,
                 samples_per_epoch: int = 1000, seed: int = 0, frames: Mapping[str, Sequence[int]] | None = None,
                 augment: bool | Augmentation = True, jitter: float = 0.2, box_enlargement: float = 0.3,
                 min_area: int = 16, erode_share: float = 0.5, cache_frames: int = 32, cache_labels: int = 128):
        super().__init__(size, samples_per_epoch, seed, augment, jitter, box_enlargement, min_area, erode_share)
        self.store = _Frames(root, root.sequences(sequences=list(sequences) if sequences else None), cache_frames,
                             cache_labels)
        self.flows = flow_cache
        self._recent_flows = _LRU(RECENT_FLOWS)  # see _flow
        self.items = []  # (seq, t, ids)
        for seq in self.store.stems:
            for t in (frames or {}).get(seq, [0]):
                if not self.store.annotated[seq][t]:
                    raise ValueError(f"{root.annotation_path(seq, self.store.stems[seq][t])}: frame {t} is not "
                                     f"annotated")
                ids = self.store.objects(seq, t, min_area)
                if ids.size:
                    self.items.append((seq, t, ids))
        if not self.items:
            raise ValueError(f"no object with at least {min_area} pixels in the first frames of {root.root}")

    def _flow(self, seq: str, t: int) -> np.ndarray | None:
        """Flow from frame t toward its previous frame: ``t.rflo``, or ``-(0.flo)`` for frame 0 (the last
        RECENT_FLOWS kept: online finetuning reads one frame's flow for every sample)."""
        return self._recent_flows.get((seq, t), lambda: self._read_flow(seq, t))

    def _read_flow(self, seq: str, t: int) -> np.ndarray | None:
        if t > 0:
            return self.flows.backward(seq, t)
        if len(self.store.stems[seq]) > 1:
            return -self.flows.forward(seq, 0)
        return None

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        rng = self._rng(index)
        seq, t, ids = _pick(rng, self.items)
        obj = int(_pick(rng, ids))
        labels = self.store.labels(seq, t)
        mask = labels == obj
        matrix, _ = self._geometry(mask, rng)
        prior = deform_mask(mask, rng, erode_share=self.erode_share)
        return self._render(matrix, rng, self.store.frame(seq, t), labels, obj, prior, self._flow(seq, t))


class EvalPairs:
    """Deterministic one-step validation: every (sequence, t >= 1, object present at t-1) with t-1 and t annotated.

    The prior is the ground truth of t-1 warped to t; the crop is the 15%-enlarged box of the warped prior, as at test
    time (``crop_resize``: bilinear for image, flow and prior, nearest for the target). No augmentation. Besides the
    training keys, an item holds::

        box          int64 (4,)    the crop box x1, y1, x2, y2 in frame pixels (paste predictions back with it)
        target_full  uint8 (H, W)  the object's full-frame ground truth: 1, 0, 255 = void
        prior_full   uint8 (H, W)  the warped prior thresholded at 0.5: the "copy the prior" baseline
        seq, t, object_id

    ``target_full`` and ``prior_full`` have the frame size, so a batch must hold frames of one size.
    """

    def __init__(self, root: DavisRoot, sequences: Sequence[str] | None, flow_cache: Flows, size: int = 321,
                 frame_step: int = 1, box_enlargement: float = 0.15, cache_frames: int = 8, cache_labels: int = 16):
        self.size, self.box_enlargement, self.flows = size, box_enlargement, flow_cache
        self.store = _Frames(root, root.sequences(sequences=list(sequences) if sequences else None), cache_frames,
                             cache_labels)
        self.items: list[tuple[str, int, int]] = []
        for seq, ann in self.store.annotated.items():
            for t in range(1, len(ann), frame_step):
                if ann[t] and ann[t - 1]:
                    self.items += [(seq, t, int(obj)) for obj in self.store.objects(seq, t - 1)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        seq, t, obj = self.items[index]
        labels = self.store.labels(seq, t)
        to_source, from_source = self.flows.backward(seq, t), self.flows.forward(seq, t - 1)
        grid = warp_grid(to_source, from_source)
        warped = grid.pull(self.store.labels(seq, t - 1)) == obj
        box = object_box(warped, self.box_enlargement)
        residual = photometric_residual(self.store.frame(seq, t), self.store.frame(seq, t - 1), grid)
        s = self.size
        image = crop_resize(self.store.frame(seq, t).astype(np.float32), box, s) / 255
        lab = crop_resize(labels, box, s, cv2.INTER_NEAREST)
        target_full = np.where(labels == obj, 1, np.where(labels == VOID, VOID, 0)).astype(np.uint8)
        return {"image": np.ascontiguousarray(image.transpose(2, 0, 1)),
                "flow": np.ascontiguousarray(crop_resize(to_source, box, s).transpose(2, 0, 1)),
                "prior": crop_resize(warped.astype(np.float32), box, s)[None],
                "residual": crop_resize(residual, box, s)[None],
                "target": np.where(lab == obj, 1, np.where(lab == VOID, VOID, 0)).astype(np.int64),
                "box": np.array(box, np.int64), "target_full": target_full,
                "prior_full": warped.astype(np.uint8), "seq": seq, "t": t, "object_id": obj}
