"""The embedded re-ID provider: ImageNet EfficientNet-Lite0 features, colour histograms and template correlation.

Nothing is precomputed and nothing is learnt offline. Each object's first-frame appearance (its tight box on a
stride-16 feature map of the frame, upsampled when the objects are small, with its mask) is searched in a frame by
multi-scale normalised cross-correlation; each peak's box is refined to the largest of its variants (scale, aspect,
shift) within a small tolerance of the most similar to its object; the union of all objects' peaks is then scored for
every object by comparing the candidate with the template: features sampled on a 7x7 grid and weighted by the
object's mask (masked-average embedding cosine and cell-by-cell cosine), and the mask-weighted Lab colour histogram
(Bhattacharyya coefficient).

Two online refinements serve the recovery loop (:func:`vsreid.engine.reid.recovery.recover`):

- ``is_drifted(t, i, box)``: the propagated mask of object i no longer looks like it (it slid onto an occluder or
  the background) and no candidate box on about the same place does, so the frame is treated as one where i is
  lost;
- ``observe(t, i, box)``: in a frame where i is reliably tracked at ``box``, that view of i is kept next to its
  template (when it is similar enough to it), and the other candidates that would pass as i are remembered as its
  distractors; later, a candidate closer to a distractor than to every view of i scores 0 for i (the
  distractor-aware matching of DaSiamRPN, without training).
"""
from __future__ import annotations

import itertools
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vsreid.data.crops import box_iou, object_box
from vsreid.models.efficientnet_lite import efficientnet_lite0
from vsreid.models.inference_graph import folded_copy, fuse_activations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STRIDE = 16
STRIDE16_BLOCKS = 11  # EfficientNet-Lite0 blocks up to the end of stage 5 (112 channels, stride 16)
GRID = 7  # side of the grid candidates and templates are compared on
MAX_KERNEL = 8  # larger templates are correlated with average-pooled features (bounds the cost)
SCALES = tuple(float(2 ** (k / 3)) for k in range(-3, 4))  # 0.5 .. 2, adjacent boxes overlap with IoU 0.63
REFINE_STEPS = (0.8, 1.0, 1.25, 1.6)  # a peak's box is refined over these scale and aspect factors (default) ...
REFINE_SHIFTS = (-0.15, 0.0, 0.15)  # ... and shifts (fractions of its width and height): 144 boxes a peak
REFINE_TOLERANCE = 0.005  # the largest variant within this similarity of the most similar is kept (default)
RING = 0.25  # the ring around a box whose colour refinement compares: this fraction of its width / height a side
COLOUR_SIDE = 24  # boxes are resized to this square before their colour histogram is taken
COLOUR_BINS = (4, 8, 8)  # Lab histogram bins: L over 0-255, a and b over 64-191 (OpenCV's 8-bit Lab)
COLOUR_MAX = 1.0  # the colour similarity's largest value (the Bhattacharyya coefficient of identical histograms)
PARALLEL_BOXES = 64  # boxes of a frame resized on several threads from this many


class _Stride16Features(nn.Module):
    """Frozen ImageNet EfficientNet-Lite0 truncated after stage 5: RGB [N,3,H,W] in [0,1] -> [N,112,H/16,W/16]."""

    def __init__(self):
        super().__init__()
        net = efficientnet_lite0(output_stride=32, pretrained=True)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net.act)
        self.blocks = nn.Sequential(*net._blocks[:STRIDE16_BLOCKS])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem((x - self.mean) / self.std))


@dataclass
class _Kernel:
    """One search scale of one object: box size ``bw``, ``bh`` (px), feature ``pool`` factor, the unit-norm masked
    template [C,gh,gw] on the pooled grid and its squared mask [gh,gw]."""

    obj: int
    bw: float
    bh: float
    pool: int
    weights: torch.Tensor
    mask2: torch.Tensor


@dataclass
class _Template:
    """An appearance to compare candidates with, on the 7x7 grid: features [C,7,7], the object's mask [7,7] and
    embedding [C]; its colour histogram [B] under the object's mask ``colour_weights`` (COLOUR_SIDE^2,)."""

    grid: torch.Tensor
    mask: torch.Tensor
    embedding: torch.Tensor
    colour: np.ndarray
    colour_weights: np.ndarray


@dataclass
class _Boxes:
    """Boxes (M, 4) of one frame with their 7x7 feature grids [M,C,7,7] and per-pixel Lab bins (M, COLOUR_SIDE^2)."""

    boxes: np.ndarray
    grids: torch.Tensor
    bins: np.ndarray


def _roi_sample(features: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], stride: float) -> torch.Tensor:
    """Bilinear samples [M,C,gh,gw] of features [C,h,w] at the cell centres of a grid over each box.

    ``boxes``: (M, 4) x1, y1, x2, y2 in frame pixels; ``stride``: frame pixels per feature cell.
    """
    _, h, w = features.shape
    gh, gw = size
    fy = (torch.arange(gh, dtype=boxes.dtype, device=boxes.device) + 0.5) / gh
    fx = (torch.arange(gw, dtype=boxes.dtype, device=boxes.device) + 0.5) / gw
    xs = boxes[:, 0:1] + fx[None] * (boxes[:, 2:3] - boxes[:, 0:1])
    ys = boxes[:, 1:2] + fy[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    grid = torch.stack([(xs / (w * stride) * 2 - 1)[:, None, :].expand(-1, gh, -1),
                        (ys / (h * stride) * 2 - 1)[:, :, None].expand(-1, -1, gw)], dim=-1)
    return F.grid_sample(features[None].expand(len(boxes), -1, -1, -1), grid, align_corners=False)


def _embed(grids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[M,C] L2-normalised averages of grids [M,C,g,g] weighted by a mask [g,g]."""
    return F.normalize((grids * mask).sum((2, 3)) / mask.sum().clamp_min(1e-6), dim=1)


def _intersections(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(M,) intersection areas of boxes (M, 4) with one box (4,), all x1, y1, x2, y2."""
    return (np.clip(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]), 0, None)
            * np.clip(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]), 0, None))


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float, keep: int) -> np.ndarray:
    """Indices of at most ``keep`` boxes (M, 4) kept by greedy non-maximum suppression, best score first."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept: list[int] = []
    for k in np.argsort(-scores, kind="stable"):
        if len(kept) == keep:
            break
        inter = _intersections(boxes[kept], boxes[k])
        if np.all(inter <= iou * (area[kept] + area[k] - inter)):
            kept.append(int(k))
    return np.array(kept, np.int64)


def _pad_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-pad the last two dims of ``x`` to ``size``, keeping it at offset ((H-h)//2, (W-w)//2)."""
    dh, dw = size[0] - x.shape[-2], size[1] - x.shape[-1]
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


def _pixel_boxes(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(M, 4) int64 pixel bounds x1, y1, x2, y2 of boxes (M, 4) in a frame of ``shape`` (H, W): the corners floored
    and ceiled, clipped to the frame, at least one pixel wide and high."""
    h, w = shape
    x1 = np.clip(np.asarray(boxes[:, 0], np.float64), 0, w - 1).astype(np.int64)
    y1 = np.clip(np.asarray(boxes[:, 1], np.float64), 0, h - 1).astype(np.int64)
    x2 = np.minimum(np.maximum(np.ceil(boxes[:, 2]).astype(np.int64), x1 + 1), w)
    y2 = np.minimum(np.maximum(np.ceil(boxes[:, 3]).astype(np.int64), y1 + 1), h)
    return np.stack([x1, y1, x2, y2], axis=1)


def _area_means(frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(M, COLOUR_SIDE, COLOUR_SIDE, 3) uint8: each pixel box (M, 4) of an (H, W, 3) uint8 frame, at least
    COLOUR_SIDE pixels wide and high, resized to COLOUR_SIDE x COLOUR_SIDE by area averaging, as
    ``cv2.resize(..., INTER_AREA)`` shrinks (its values within 1; 99.98% of them equal on DAVIS frames).

    From one summed-area table of the boxes' hull: the table is exact at pixel corners and bilinear between them,
    so each output cell's mean over its fractional source rectangle costs 4 reads whatever the box's size (x3-5
    cv2's resize of each box on boxes of 86,000 pixels)."""
    left, top = boxes[:, 0].min(), boxes[:, 1].min()
    table = cv2.integral(np.ascontiguousarray(frame[top:boxes[:, 3].max(), left:boxes[:, 2].max()]),
                         sdepth=cv2.CV_64F)
    rows, cols = table.shape[:2]
    flat = table.reshape(-1, 3)
    cells = np.arange(COLOUR_SIDE + 1)

    def edges(start, stop, origin, last):  # (M, SIDE+1) cell edges in table coordinates: integer part, fraction
        at = (start - origin)[:, None] + (stop - start)[:, None] * cells / COLOUR_SIDE
        whole = np.minimum(at.astype(np.int64), last - 1)
        return whole, at - whole

    ix, fx = edges(boxes[:, 0], boxes[:, 2], left, cols - 1)
    iy, fy = edges(boxes[:, 1], boxes[:, 3], top, rows - 1)
    corner = iy[:, :, None] * cols + ix[:, None, :]  # (M, SIDE+1, SIDE+1) flat index of each edge's cell
    fx, fy = fx[:, None, :, None], fy[:, :, None, None]

    def at(offset):  # the table at each edge's cell corner + offset (np.take: x5 fancy indexing)
        return np.take(flat, corner + offset, axis=0)

    upper = at(0)
    summed = upper + (at(1) - upper) * fx
    lower = at(cols)
    summed += (lower + (at(cols + 1) - lower) * fx - summed) * fy  # the table at every cell edge
    sums = summed[:, 1:, 1:] - summed[:, :-1, 1:] - summed[:, 1:, :-1] + summed[:, :-1, :-1]
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / COLOUR_SIDE ** 2)[:, None, None, None]
    return np.clip(np.rint(sums / area), 0, 255).astype(np.uint8)


def _resized_boxes(frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(M, COLOUR_SIDE, COLOUR_SIDE, 3) uint8: each box (M, 4) of an RGB uint8 frame (to whole pixels,
    :func:`_pixel_boxes`) resized to COLOUR_SIDE x COLOUR_SIDE by area averaging (:func:`_area_means`; boxes narrower
    or lower than that by ``cv2.resize``'s INTER_AREA, which then interpolates). The boxes are resized on torch's
    threads, a chunk each, from PARALLEL_BOXES of them (a box refinement resizes 144 boxes a peak)."""
    pixels = _pixel_boxes(np.asarray(boxes), frame.shape[:2])
    crops = np.zeros((len(boxes), COLOUR_SIDE, COLOUR_SIDE, 3), np.uint8)

    def resize(chunk: np.ndarray) -> None:
        large = ((pixels[chunk, 2:] - pixels[chunk, :2]) >= COLOUR_SIDE).all(axis=1)
        if large.any():
            crops[chunk[large]] = _area_means(frame, pixels[chunk[large]])
        for m in chunk[~large]:
            x1, y1, x2, y2 = pixels[m]
            crops[m] = cv2.resize(frame[y1:y2, x1:x2], (COLOUR_SIDE, COLOUR_SIDE), interpolation=cv2.INTER_AREA)

    threads = torch.get_num_threads()
    if threads > 1 and len(boxes) >= PARALLEL_BOXES:  # one chunk of boxes a thread: no task per box
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(resize, np.array_split(np.arange(len(boxes)), threads)))
    else:
        resize(np.arange(len(boxes)))
    return crops


def _colour_bins(frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(M, COLOUR_SIDE^2) int Lab histogram bin of every pixel of each box (M, 4) of an RGB uint8 frame, after
    resizing the box to COLOUR_SIDE x COLOUR_SIDE (:func:`_resized_boxes`)."""
    if len(boxes) == 0:
        return np.zeros((0, COLOUR_SIDE * COLOUR_SIDE), np.int64)
    crops = _resized_boxes(frame, boxes)
    lab = cv2.cvtColor(crops.reshape(-1, COLOUR_SIDE, 3), cv2.COLOR_RGB2LAB).reshape(len(boxes), -1, 3)
    lab = lab.astype(np.int64)
    nl, na, nb = COLOUR_BINS
    a = np.clip((lab[..., 1] - 64) * na // 128, 0, na - 1)
    b = np.clip((lab[..., 2] - 64) * nb // 128, 0, nb - 1)
    return (lab[..., 0] * nl // 256 * na + a) * nb + b


def _ring_weights(boxes: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The rings around boxes (M, 4) in a frame of ``shape`` (H, W): (M, 4) outer boxes (each box grown by RING of
    its width and height a side, clipped to the frame) and (M, COLOUR_SIDE^2) weights, 1 on the cells of each outer
    box resized to COLOUR_SIDE x COLOUR_SIDE whose centre lies outside the box, else 0."""
    h, w = shape
    grow = RING * np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1) * [-1, -1, 1, 1]
    outer = np.clip(boxes + grow, 0, [w, h, w, h])
    centres = (np.arange(COLOUR_SIDE) + 0.5) / COLOUR_SIDE

    def outside(lo, hi):  # (M, SIDE): the cells of the outer box's axis outside the box's [lo, hi)
        at = outer[:, lo, None] + centres * (outer[:, hi] - outer[:, lo])[:, None]
        return (at < boxes[:, lo, None]) | (at >= boxes[:, hi, None])

    ring = outside(1, 3)[:, :, None] | outside(0, 2)[:, None, :]
    return outer, ring.reshape(len(boxes), COLOUR_SIDE * COLOUR_SIDE).astype(np.float64)


def _merge_nested(boxes: np.ndarray, sims: np.ndarray, tolerance: float, inside: float = 0.8) -> np.ndarray:
    """Boxes (K, 4) with each box that lies mostly (``inside`` of its area) in a larger one of similarity ``sims`` at
    least its own minus ``tolerance`` replaced by the largest such box (duplicates removed, order kept)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    out = boxes.copy()
    for a in range(len(boxes)):
        nested = _intersections(boxes, boxes[a]) >= inside * area[a]
        hosts = np.flatnonzero(nested & (area > area[a]) & (sims >= sims[a] - tolerance))
        if len(hosts):
            out[a] = boxes[hosts[np.argmax(area[hosts])]]
    _, first = np.unique(out, axis=0, return_index=True)
    return out[np.sort(first)]


def _bhattacharyya(hists: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(M,) Bhattacharyya coefficients in [0, 1] of histograms (M, B) with one (B,), all summing to 1 (or 0)."""
    return np.sqrt(hists * ref).sum(1)


def _colour_histograms(bins: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(M, B) histograms of per-pixel bins (M, P) weighted by (P,), or row by row by (M, P), each summing to 1 (0
    where its weights are 0)."""
    size = int(np.prod(COLOUR_BINS))
    rows = np.broadcast_to(weights, bins.shape)
    out = np.stack([np.bincount(row, weights=w, minlength=size) for row, w in zip(bins, rows)]) if len(bins) else \
        np.zeros((0, size))
    return out / np.maximum(np.sum(weights, axis=-1, keepdims=True), 1e-6)


class AppearanceReID:
    """Embedded :class:`~vsreid.engine.reid.provider.ReIDProvider` (no person classifier: ``class_scores`` is None).

    Args:
        device: where the frozen feature network runs (default CPU).
        scales: template sizes searched, as factors of the first-frame box.
        top_k: correlation peaks kept per object and frame (after NMS at ``nms_iou``).
        colour_weight: share of the colour-histogram similarity in :meth:`similarity` (the rest is the feature
            similarity).
        similarity_center, similarity_width: a candidate's score for object i is
            ``sigmoid((similarity - center) / width)`` of its :meth:`similarity` with i's template, so ``center`` maps
            to the recovery threshold 0.5 (calibration: bench/README.md).
        drift_similarity: :meth:`is_drifted` is true below this similarity.
        view_similarity: :meth:`observe` keeps a tracked box as a view of its object only when it is at least this
            similar to the object's template (None: ``similarity_center``; 0.75, measured in bench/README.md's re-ID
            section, keeps fewer views of a look-alike but is not the default).
        refine: each correlation peak's box is refined (:meth:`_refine`) before it becomes a candidate.
        refine_steps: the scale and aspect factors refinement tries (with REFINE_SHIFTS).
        refine_tolerance: refinement keeps the largest variant whose similarity is within this of the best one's
            (0: the most similar). Inside an object similarity hardly changes with the box, so the most similar
            variant is often a box nested in the object (the default's choice: bench/README.md).
        merge_nested: after refinement, an object's peak box that lies mostly (80% of its area) inside a larger
            refined peak of the same object whose similarity is at most this much lower becomes that larger box
            (:func:`_merge_nested`; None: off, the default): a peak on part of the object otherwise competes with
            the box of the whole object as a candidate of its own, and the part often scores higher. 0.03 raised
            precision on the real-object composites and cost 1.8 J&F on the synthetic bench (bench/README.md,
            session 30).
        ring_weight: refinement lowers each variant's similarity by this times the colour match between the ring
            around it (RING of its width and height a side) and its object (:meth:`_refine`), so that a box
            covering part of its object loses to the box of the whole of it (0: off, as before session 47;
            0.2 chosen on the tune composites' boxes: bench/README.md).
        drift_near: a mask whose box fails the drift test passes it still when a candidate box of its frame that
            overlaps it by at least this IoU is similar enough (:meth:`is_drifted`; None: off, as before session
            48): a mask on its object that misses a part of it or takes in some background looks less like it than
            the object's own box nearby (0.5 chosen on train data: bench/README.md).
        max_memory: views and distractors remembered per object (the oldest are forgotten first).
        cache_frames: frames whose features are kept (LRU; 0.7 MB a 480p frame); candidates are cached for the
            whole sequence.
        object_cells, max_pixels: frames are upsampled before their features are taken so that the smallest object
            of the first frame spans ``object_cells`` stride-16 cells (square root of its box area; small objects
            are otherwise a cell or two), but to at most ``max_pixels`` pixels a frame (2 MP: x4.9 the features'
            cost at 854x480) and never downsampled.
    """

    def __init__(self, device: str | torch.device | None = None, scales=SCALES, top_k: int = 5,
                 nms_iou: float = 0.5, colour_weight: float = 0.5, similarity_center: float = 0.7,
                 similarity_width: float = 0.05, drift_similarity: float = 0.45,
                 view_similarity: float | None = None, refine: bool = True,
                 refine_steps=REFINE_STEPS, refine_tolerance: float = REFINE_TOLERANCE, max_memory: int = 16,
                 cache_frames: int = 64, object_cells: float = 6.0, max_pixels: float = 2e6,
                 merge_nested: float | None = None, ring_weight: float = 0.2, drift_near: float | None = 0.5):
        self.device = torch.device(device or "cpu")
        def run(net: nn.Module) -> None:
            net(torch.zeros(1, 3, 64, 64))

        # BN folded, channels_last: x2.1 a frame (bench_speed); ReLU6 fused into the convs as for the MP2S graph
        self.net = fuse_activations(folded_copy(_Stride16Features(), run), run).to(
            self.device, memory_format=torch.channels_last)
        self.scales, self.top_k, self.nms_iou = tuple(scales), top_k, nms_iou
        self.colour_weight = colour_weight
        self.center, self.width = similarity_center, similarity_width
        self.drift_similarity, self.max_memory = drift_similarity, max_memory
        self.view_similarity = similarity_center if view_similarity is None else view_similarity
        self.refine, self.refine_steps, self.refine_tolerance = refine, tuple(refine_steps), refine_tolerance
        self.cache_frames = cache_frames
        self.merge_nested, self.ring_weight, self.drift_near = merge_nested, ring_weight, drift_near
        self.object_cells, self.max_pixels = object_cells, max_pixels
        self.upsample, self.stride = 1.0, float(STRIDE)  # per sequence: see prepare
        self._features: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._boxes: dict[int, _Boxes] = {}
        self._scores: dict[tuple[int, int], np.ndarray] = {}  # (frame, object) -> scores of the frame's boxes
        self._last_similarity: tuple = (None, None, None)  # ((frame, box), similarities, near): asked twice
        self.source = None
        self.templates: list[_Template] = []
        self.views: list[list[_Template]] = []
        self.distractors: list[list[_Template]] = []
        self.kernels: list[_Kernel] = []

    # ------------------------------------------------------------------ ReIDProvider
    @torch.no_grad()
    def prepare(self, source, first_labels: np.ndarray, object_ids) -> None:
        """Templates of the objects with ``object_ids`` (index i = ``object_ids[i]``) in ``first_labels`` (H, W)."""
        self.source = source
        boxes = [object_box(first_labels == oid, box_enlargement=0.0) for oid in object_ids]
        side = min(np.sqrt((x2 - x1) * (y2 - y1)) for x1, y1, x2, y2 in boxes)
        most = np.sqrt(self.max_pixels / (source.width * source.height))
        self.upsample = float(max(1.0, min(self.object_cells * STRIDE / side, most)))
        self.stride = STRIDE / self.upsample
        self._features.clear()
        self._boxes.clear()
        self._scores.clear()
        self._last_similarity = (None, None, None)
        feats = self.frame_features(0)
        self.templates, self.kernels = [], []
        for i, oid in enumerate(object_ids):
            self._add_template(i, feats, first_labels == oid)
        self.views = [[] for _ in object_ids]
        self.distractors = [[] for _ in object_ids]

    def candidates(self, t: int, i: int) -> np.ndarray:
        """(M, 5) float64 ``x1, y1, x2, y2, score`` in frame pixels; row r is the same box for every object."""
        found = self._frame_boxes(t)
        if (t, i) not in self._scores:
            self._scores[t, i] = self._score(found, i)
        return np.concatenate([found.boxes, self._scores[t, i][:, None]], axis=1)

    def class_scores(self, i: int) -> None:
        return None

    # ------------------------------------------------------------------ online refinements (see the module docstring)
    def is_drifted(self, t: int, i: int, box, threshold: float | None = None) -> bool:
        """True when the box (x1, y1, x2, y2) of object i's mask in frame t is less similar to i than ``threshold``
        (default ``drift_similarity``) and, with ``drift_near``, so is every candidate box of frame t that overlaps
        it by at least that IoU (:meth:`_near_similarity`)."""
        limit = self.drift_similarity if threshold is None else threshold
        key = (t, tuple(float(v) for v in box))
        if self._last_similarity[0] != key:  # the recovery tests one box at two thresholds: described once
            self._last_similarity = key, self.similarity(t, np.array([box], np.float64))[:, 0], None
        _, sims, near = self._last_similarity
        if sims[i] >= limit or self.drift_near is None:
            return bool(sims[i] < limit)
        if near is None:
            near = self._near_similarity(t, np.asarray(key[1]))
            self._last_similarity = key, sims, near
        return bool(max(sims[i], near[i]) < limit)

    def _near_similarity(self, t: int, box: np.ndarray) -> np.ndarray:
        """(N,) each object's best similarity (:meth:`_match` with its template) among the candidate boxes of frame
        t that overlap ``box`` (x1, y1, x2, y2) by IoU >= ``drift_near``; 0 where none does."""
        found = self._frame_boxes(t)
        overlap = np.array([box_iou(b, box) >= self.drift_near for b in found.boxes], bool)
        if not overlap.any():
            return np.zeros(len(self.templates))
        near = _Boxes(found.boxes[overlap], found.grids[overlap], found.bins[overlap])
        return np.array([self._match(near, tpl).max() for tpl in self.templates])

    def observe(self, t: int, i: int, box, max_iou: float = 0.1, view: bool = True) -> int:
        """Object i is reliably tracked at ``box`` (x1, y1, x2, y2) in frame t: keep that view of i when it matches
        i's template (``view_similarity``; never when not ``view``), and remember as i's distractors the other
        candidates of frame t whose template similarity passes (score >= 0.5) but which overlap ``box`` by at most
        ``max_iou``. Returns the distractors added."""
        tpl = self.templates[i]
        seen = self._describe(t, np.array([box], np.float64))
        if view and self._match(seen, tpl)[0] >= self.view_similarity:
            self.views[i].append(self._appearance(seen, 0, tpl))
            del self.views[i][:-self.max_memory]
        found = self._frame_boxes(t)
        sims = self._match(found, tpl)
        added = [self._appearance(found, m, tpl) for m in np.flatnonzero(sims >= self.center)
                 if box_iou(found.boxes[m], box) <= max_iou]
        self.distractors[i] += added
        del self.distractors[i][:-self.max_memory]
        self._scores = {key: row for key, row in self._scores.items() if key[1] != i}  # only i's scores changed
        return len(added)

    def _appearance(self, found: _Boxes, m: int, tpl: _Template) -> _Template:
        """Box m of ``found`` as an appearance compared under template ``tpl``'s masks."""
        grid = found.grids[m]
        colour = _colour_histograms(found.bins[m:m + 1], tpl.colour_weights)[0]
        return _Template(grid, tpl.mask, _embed(grid[None], tpl.mask)[0], colour, tpl.colour_weights)

    # ------------------------------------------------------------------ features and templates
    @torch.no_grad()
    def frame_features(self, t: int) -> torch.Tensor:
        """[112, ceil(H*u/16), ceil(W*u/16)] features of frame t of the prepared sequence (LRU-cached), u =
        ``upsample`` (see ``object_cells``)."""
        if t in self._features:
            self._features.move_to_end(t)
            return self._features[t]
        rgb = torch.from_numpy(np.ascontiguousarray(self.source.frame(t))).to(self.device)
        image = rgb.permute(2, 0, 1)[None].float() / 255
        if self.upsample > 1:
            image = F.interpolate(image, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        feats = self.net(image)[0]
        self._features[t] = feats
        if len(self._features) > self.cache_frames:
            self._features.popitem(last=False)
        return feats

    def _add_template(self, i: int, feats: torch.Tensor, mask: np.ndarray) -> None:
        """Object i's template and search kernels from frame-0 features [C,h,w] and its mask (H, W) bool."""
        box = object_box(mask, box_enlargement=0.0)
        x1, y1, x2, y2 = box
        crop = torch.from_numpy(mask[y1:y2, x1:x2].astype(np.float32))[None, None].to(self.device)
        box_t = torch.tensor([box], dtype=torch.float32, device=self.device)
        grid = _roi_sample(feats, box_t, (GRID, GRID), self.stride)[0]
        grid_mask = F.adaptive_avg_pool2d(crop, GRID)[0, 0]
        weights = cv2.resize(mask[y1:y2, x1:x2].astype(np.float32), (COLOUR_SIDE, COLOUR_SIDE),
                             interpolation=cv2.INTER_AREA).ravel().astype(np.float64)
        colour = _colour_histograms(_colour_bins(self.source.frame(0), np.array([box], np.float64)), weights)[0]
        self.templates.append(_Template(grid, grid_mask, _embed(grid[None], grid_mask)[0], colour, weights))
        _, fh, fw = feats.shape
        for s in self.scales:
            bw, bh = (x2 - x1) * s, (y2 - y1) * s
            pool = max(1, int(np.ceil(max(bh, bw) / self.stride / MAX_KERNEL)))
            gw = int(np.clip(round(bw / self.stride / pool), 1, max(1, fw // pool)))
            gh = int(np.clip(round(bh / self.stride / pool), 1, max(1, fh // pool)))
            m = F.adaptive_avg_pool2d(crop, (gh, gw))[0, 0]
            kernel = _roi_sample(feats, box_t, (gh, gw), self.stride)[0] * m
            self.kernels.append(_Kernel(i, bw, bh, pool, kernel / kernel.norm().clamp_min(1e-6), m * m))

    # ------------------------------------------------------------------ search and scoring
    @torch.no_grad()
    def _grids(self, t: int, boxes: np.ndarray) -> torch.Tensor:
        """[M,C,7,7] feature grids of boxes (M, 4) in frame t."""
        return _roi_sample(self.frame_features(t), torch.from_numpy(boxes).float().to(self.device), (GRID, GRID),
                           self.stride)

    def _describe(self, t: int, boxes: np.ndarray) -> _Boxes:
        """Feature grids and colour bins of boxes (M, 4) in frame t."""
        return _Boxes(boxes, self._grids(t, boxes), _colour_bins(self.source.frame(t), boxes))

    def _frame_boxes(self, t: int) -> _Boxes:
        """The union of every object's correlation peaks in frame t (each refined with :meth:`_refine` when
        ``refine``), described (cached for the sequence)."""
        if t not in self._boxes:
            peaks = self._search(self.frame_features(t))
            if self.refine:
                peaks = [self._refine(t, boxes, i) for i, boxes in enumerate(peaks)]
            self._boxes[t] = self._describe(t, np.concatenate(peaks).reshape(-1, 4))
        return self._boxes[t]

    def _variants(self, boxes: np.ndarray) -> np.ndarray:
        """(K, V, 4) the variants of boxes (K, 4) that :meth:`_refine` compares, clipped to the frame: scaled,
        stretched and shifted by every combination of ``refine_steps`` and REFINE_SHIFTS."""
        scale, aspect, dx, dy = np.array(list(itertools.product(self.refine_steps, self.refine_steps,
                                                                REFINE_SHIFTS, REFINE_SHIFTS))).T
        w, h = (boxes[:, 2] - boxes[:, 0])[:, None], (boxes[:, 3] - boxes[:, 1])[:, None]
        cx, cy = (boxes[:, 0] + boxes[:, 2])[:, None] / 2 + dx * w, (boxes[:, 1] + boxes[:, 3])[:, None] / 2 + dy * h
        half_w, half_h = w * scale * np.sqrt(aspect) / 2, h * scale / np.sqrt(aspect) / 2
        variants = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)
        return np.clip(variants, 0, [self.source.width, self.source.height] * 2)

    def _refine(self, t: int, boxes: np.ndarray, i: int) -> np.ndarray:
        """(K, 4) boxes (K, 4) of object i's peaks in frame t, each replaced by the most similar to i's template of
        its variants (the largest within ``refine_tolerance`` of the most similar): scaled, stretched and shifted by
        every combination of ``refine_steps`` and REFINE_SHIFTS. Variants that differ in shift or aspect alone have
        the same area up to float rounding, which (then their order) picks one of them; taking the most similar of
        them measured worse on the tune composites (bench/README.md, session 29). Then, with
        ``merge_nested``, boxes nested in a larger one of them are merged into it (:func:`_merge_nested`).

        With ``ring_weight`` w, a variant's similarity is lowered by w times the colour match of the ring around it
        (:meth:`_ring_similarity`): a box that cuts its object has the rest of the object around it.

        Colour is compared only where it can change the pick: a variant whose similarity with a perfect colour
        match (and no ring penalty) stays more than the tolerance below that of its peak's most feature-similar
        variant is never kept, so its boxes are not resized (the same picks as comparing all of them; 40% fewer
        resizes on car-shadow)."""
        if len(boxes) == 0:
            return boxes
        variants = self._variants(boxes)
        tpl, rows = self.templates[i], np.arange(len(boxes))
        deep = self._deep_similarity(self._grids(t, variants.reshape(-1, 4)), tpl).reshape(variants.shape[:2])
        width, height = variants[..., 2] - variants[..., 0], variants[..., 3] - variants[..., 1]
        valid = (width >= 1) & (height >= 1)
        first = np.argmax(np.where(valid, deep, -np.inf), axis=1)  # each peak's most feature-similar variant
        similar = np.full(deep.shape, -np.inf)

        def compare(at) -> None:  # the similarity of the variants at ``at``, less the ring penalty
            similar[at] = self._mix(deep[at], self._colour_similarity(t, variants[at], tpl))
            if self.ring_weight:
                similar[at] -= self.ring_weight * self._ring_similarity(t, variants[at], tpl)

        compare((rows, first))
        reach = np.where(valid, self._mix(deep, COLOUR_MAX), -np.inf)  # the ring penalty only lowers it
        needed = (reach >= (similar[rows, first] - self.refine_tolerance)[:, None] - 1e-9) | \
            ~valid.any(axis=1, keepdims=True)
        needed[rows, first] = False  # compared above
        compare(needed)
        sims = similar.copy()
        sims[~valid] = -1
        if self.refine_tolerance:
            sims = np.where(sims >= sims.max(axis=1, keepdims=True) - self.refine_tolerance, width * height, -1.0)
        pick = (rows, np.argmax(sims, axis=1))
        if self.merge_nested is None:
            return variants[pick]
        return _merge_nested(variants[pick], similar[pick], self.merge_nested)

    @torch.no_grad()
    def _match(self, found: _Boxes, ref: _Template, hists: np.ndarray | None = None) -> np.ndarray:
        """(M,) similarity in [0, 1] of described boxes to one appearance (the features are non-negative).

        ``hists``: the boxes' colour histograms under ``ref.colour_weights`` when already computed (M, B).
        """
        if hists is None:
            hists = _colour_histograms(found.bins, ref.colour_weights)
        return self._mix(self._deep_similarity(found.grids, ref), _bhattacharyya(hists, ref.colour))

    @torch.no_grad()
    def _deep_similarity(self, grids: torch.Tensor, ref: _Template) -> np.ndarray:
        """(M,) float64 feature part of :meth:`_match` for grids [M,C,7,7]: the mean of the masked-embedding cosine
        and the cell-by-cell cosine."""
        global_sim = _embed(grids, ref.mask) @ ref.embedding
        cells, ref_cells = (grids * ref.mask).flatten(1), (ref.grid * ref.mask).flatten()
        # the cosine as one matrix-vector product: x6 F.cosine_similarity's broadcast on 720 boxes, equal within 1e-6
        cell_sim = cells @ ref_cells / (cells.norm(dim=1) * ref_cells.norm()).clamp_min(1e-8)
        return ((global_sim + cell_sim) / 2).cpu().numpy().astype(np.float64)

    def _colour_similarity(self, t: int, boxes: np.ndarray, ref: _Template) -> np.ndarray:
        """(M,) colour part of :meth:`_match` for boxes (M, 4) in frame t."""
        bins = _colour_bins(self.source.frame(t), boxes)
        return _bhattacharyya(_colour_histograms(bins, ref.colour_weights), ref.colour)

    def _ring_similarity(self, t: int, boxes: np.ndarray, ref: _Template) -> np.ndarray:
        """(M,) colour match in [0, 1] between the ring around each box (M, 4) in frame t (:func:`_ring_weights`)
        and appearance ``ref``'s colours: high where the box cuts its object and the rest of it lies around the box,
        0 where the ring is empty (the box fills the frame)."""
        outer, weights = _ring_weights(np.asarray(boxes, np.float64).reshape(-1, 4),
                                       (self.source.height, self.source.width))
        return _bhattacharyya(_colour_histograms(_colour_bins(self.source.frame(t), outer), weights), ref.colour)

    def _mix(self, deep, colour):
        """The similarity of :meth:`_match` from its feature and colour parts (arrays or scalars)."""
        return (1 - self.colour_weight) * deep + self.colour_weight * colour

    def _score(self, found: _Boxes, i: int) -> np.ndarray:
        """(M,) scores for object i: the sigmoid of the best similarity to i's template or a kept view of i, 0 where
        a known distractor of i is closer."""
        if len(found.boxes) == 0:
            return np.zeros(0)
        tpl = self.templates[i]
        hists = _colour_histograms(found.bins, tpl.colour_weights)  # views and distractors share i's mask
        sim = np.max([self._match(found, ref, hists) for ref in [tpl, *self.views[i]]], axis=0)
        out = 1 / (1 + np.exp(-(sim - self.center) / self.width))
        for neg in self.distractors[i]:
            out[self._match(found, neg, hists) > sim] = 0.0
        return out

    def similarity(self, t: int, boxes: np.ndarray) -> np.ndarray:
        """(N, M) similarity in [0, 1] of boxes (M, 4) in frame t to each object's template (distractors ignored)."""
        if len(boxes) == 0:
            return np.zeros((len(self.templates), 0))
        found = self._describe(t, np.asarray(boxes, np.float64))
        return np.stack([self._match(found, tpl) for tpl in self.templates])

    def _search(self, feats: torch.Tensor) -> list[np.ndarray]:
        """Per object, (K, 4) boxes in frame pixels: its ``top_k`` correlation peaks over all scales, after NMS.

        Kernels sharing a pooling factor run as one convolution (zero-padded to a common size, centred); the
        normalised cross-correlation at a position is the cosine between the masked template and the window.
        """
        found: dict[int, tuple[list, list]] = {i: ([], []) for i in range(len(self.templates))}
        for pool in sorted({k.pool for k in self.kernels}):
            group = [k for k in self.kernels if k.pool == pool]
            f = F.avg_pool2d(feats[None], pool, ceil_mode=True) if pool > 1 else feats[None]
            size = (max(k.mask2.shape[0] for k in group), max(k.mask2.shape[1] for k in group))
            pad = (size[0] // 2, size[1] // 2)
            corr = F.conv2d(f, torch.stack([_pad_to(k.weights, size) for k in group]), padding=pad)[0]
            energy = F.unfold((f * f).sum(1, keepdim=True), size, padding=pad)  # [1, kh*kw, L]
            masks = torch.stack([_pad_to(k.mask2, size).flatten() for k in group])
            norm = (masks @ energy[0]).view(corr.shape).clamp_min(1e-6).sqrt()
            ncc = corr / norm
            is_peak = ncc == F.max_pool2d(ncc[None], 3, 1, 1)[0]
            for k, scores, peaks in zip(group, ncc, is_peak):
                ys, xs = peaks.nonzero(as_tuple=True)
                vals = scores[ys, xs]
                best = torch.argsort(vals, descending=True)[:self.top_k]
                gh, gw = k.mask2.shape
                cx = ((xs[best] - pad[1] + (size[1] - gw) // 2).double() + gw / 2) * self.stride * pool
                cy = ((ys[best] - pad[0] + (size[0] - gh) // 2).double() + gh / 2) * self.stride * pool
                found[k.obj][0].append(torch.stack([cx - k.bw / 2, cy - k.bh / 2, cx + k.bw / 2, cy + k.bh / 2], 1))
                found[k.obj][1].append(vals[best])
        out = []
        limits = np.array([self.source.width, self.source.height] * 2, np.float64)
        for boxes, scores in found.values():
            b = np.clip(torch.cat(boxes).cpu().numpy(), 0, limits)
            s = torch.cat(scores).cpu().numpy()
            ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
            out.append(b[ok][_nms(b[ok], s[ok], self.nms_iou, self.top_k)])
        return out
