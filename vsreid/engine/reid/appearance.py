"""The embedded re-ID provider: ImageNet EfficientNet-Lite0 features, template correlation and masked embeddings.

Nothing is precomputed and nothing is learnt: each object's first-frame appearance (its tight box on a stride-16
feature map, with its mask) is searched in a frame by multi-scale normalised cross-correlation; the union of all
objects' peaks is then scored for every object by comparing the candidate's features, sampled on the template's grid
and weighted by the template mask, with the template (a masked-average embedding and a cell-by-cell match).
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vsreid.data.crops import object_box
from vsreid.models.efficientnet_lite import efficientnet_lite0

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STRIDE = 16
STRIDE16_BLOCKS = 11  # EfficientNet-Lite0 blocks up to the end of stage 5 (112 channels, stride 16)
GRID = 7  # side of the grid candidates and templates are sampled on for scoring


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


def _roi_sample(features: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear samples of [C,h,w] stride-16 features on a (gh, gw) grid over each box: [M,C,gh,gw].

    ``boxes`` (M, 4) x1, y1, x2, y2 in frame pixels; samples sit at the centres of the grid cells.
    """
    c, h, w = features.shape
    gh, gw = size
    fy = (torch.arange(gh, dtype=boxes.dtype, device=boxes.device) + 0.5) / gh
    fx = (torch.arange(gw, dtype=boxes.dtype, device=boxes.device) + 0.5) / gw
    xs = boxes[:, 0:1] + fx[None] * (boxes[:, 2:3] - boxes[:, 0:1])  # (M, gw) pixels
    ys = boxes[:, 1:2] + fy[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    gx = xs / (w * STRIDE) * 2 - 1  # align_corners=False: pixel x lies at feature coordinate x / STRIDE
    gy = ys / (h * STRIDE) * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(-1, gh, -1), gy[:, :, None].expand(-1, -1, gw)], dim=-1)
    return F.grid_sample(features[None].expand(len(boxes), -1, -1, -1), grid, align_corners=False,
                         padding_mode="zeros")


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float, keep: int) -> np.ndarray:
    """Indices of at most ``keep`` boxes (M, 4) kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="stable")
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept: list[int] = []
    for k in order:
        if len(kept) == keep:
            break
        b = boxes[kept]
        inter = (np.clip(np.minimum(b[:, 2], boxes[k, 2]) - np.maximum(b[:, 0], boxes[k, 0]), 0, None)
                 * np.clip(np.minimum(b[:, 3], boxes[k, 3]) - np.maximum(b[:, 1], boxes[k, 1]), 0, None))
        if np.all(inter <= iou * (area[kept] + area[k] - inter)):
            kept.append(int(k))
    return np.array(kept, np.int64)


class AppearanceReID:
    """Embedded :class:`~vsreid.engine.reid.provider.ReIDProvider` (no person classifier: ``class_scores`` is None).

    Args:
        device: where the frozen feature network runs (default CPU).
        scales: template sizes searched, as factors of the first-frame box.
        top_k: correlation peaks kept per object and frame (after NMS at ``nms_iou``).
        similarity_center, similarity_width: the score of a candidate for object i is
            ``sigmoid((similarity - center) / width)`` of its similarity with i's template, so ``center`` maps to
            0.5 (the recovery threshold); calibrated on synthetic and real DAVIS objects.
        cache_frames: frames whose features are kept (LRU); candidates are cached for the whole sequence.
    """

    def __init__(self, device: str | torch.device | None = None, scales=(0.5, 0.71, 1.0, 1.41, 2.0), top_k: int = 5,
                 nms_iou: float = 0.5, similarity_center: float = 0.6, similarity_width: float = 0.05,
                 cache_frames: int = 32):
        self.device = torch.device(device or "cpu")
        self.net = _Stride16Features().to(self.device)
        self.scales, self.top_k, self.nms_iou = tuple(scales), top_k, nms_iou
        self.center, self.width = similarity_center, similarity_width
        self.cache_frames = cache_frames
        self._features: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._candidates: dict[int, np.ndarray] = {}
        self.source = None

    # ------------------------------------------------------------------ features
    @torch.no_grad()
    def frame_features(self, t: int) -> torch.Tensor:
        """[112, ceil(H/16), ceil(W/16)] features of frame t of the prepared sequence (LRU-cached)."""
        if t in self._features:
            self._features.move_to_end(t)
            return self._features[t]
        rgb = torch.from_numpy(np.ascontiguousarray(self.source.frame(t))).to(self.device)
        feats = self.net(rgb.permute(2, 0, 1)[None].float() / 255)[0]
        self._features[t] = feats
        if len(self._features) > self.cache_frames:
            self._features.popitem(last=False)
        return feats

    # ------------------------------------------------------------------ ReIDProvider
    @torch.no_grad()
    def prepare(self, source, first_labels: np.ndarray, object_ids) -> None:
        """Templates of the objects of ``first_labels`` (H, W) uint8 with ids ``object_ids`` (index i = id i)."""
        self.source = source
        self._features.clear()
        self._candidates.clear()
        feats = self.frame_features(0)
        self.boxes, self.masks, self.grids, self.embeddings = [], [], [], []
        for oid in object_ids:
            mask = first_labels == oid
            box = object_box(mask, enlarge=0.0) if mask.any() else (0, 0, 1, 1)
            x1, y1, x2, y2 = box
            crop = torch.from_numpy(mask[y1:y2, x1:x2].astype(np.float32))[None, None].to(self.device)
            self.boxes.append(np.array(box, np.float64))
            self.masks.append(crop)
            grid_mask = F.adaptive_avg_pool2d(crop, GRID)[0, 0]
            grid = _roi_sample(feats, torch.tensor([box], dtype=torch.float32, device=self.device), (GRID, GRID))[0]
            self.grids.append((grid, grid_mask))
            self.embeddings.append(self._embed(grid[None], grid_mask)[0])

    def candidates(self, t: int, i: int) -> np.ndarray:
        """(K, 5) float64 ``x1, y1, x2, y2, score`` in frame pixels; rows are the same boxes for every object."""
        if t not in self._candidates:
            self._candidates[t] = self._frame_candidates(t)
        return self._candidates[t][i]

    def class_scores(self, i: int) -> None:
        return None

    # ------------------------------------------------------------------ search and scoring
    @torch.no_grad()
    def _frame_candidates(self, t: int) -> np.ndarray:
        """(N, M, 5): the union of every object's correlation peaks in frame t, scored for each object."""
        feats = self.frame_features(t)
        boxes = np.concatenate([self._search(feats, i) for i in range(len(self.boxes))])
        scores = self.similarity(feats, boxes)
        scores = 1 / (1 + np.exp(-(scores - self.center) / self.width))
        return np.concatenate([np.broadcast_to(boxes, (len(scores),) + boxes.shape), scores[..., None]], axis=2)

    def _search(self, feats: torch.Tensor, i: int) -> np.ndarray:
        """(<= top_k, 4) boxes in frame pixels where object i's template correlates best with ``feats``."""
        _, fh, fw = feats.shape
        height, width = self.source.height, self.source.width
        bx1, by1, bx2, by2 = self.boxes[i]
        energy = (feats * feats).sum(0, keepdim=True)[None]
        found_boxes, found_scores = [], []
        for s in self.scales:
            bw, bh = (bx2 - bx1) * s, (by2 - by1) * s
            gw = int(np.clip(round(bw / STRIDE), 1, fw))
            gh = int(np.clip(round(bh / STRIDE), 1, fh))
            grid, mask = self._template(i, gh, gw)
            kernel = (grid * mask)[None]
            pad = (gh // 2, gw // 2)
            corr = F.conv2d(feats[None], kernel, padding=pad)[0, 0]
            norm = F.conv2d(energy, (mask * mask)[None, None], padding=pad)[0, 0].clamp_min(1e-6).sqrt()
            ncc = corr / (norm * kernel.norm().clamp_min(1e-6))
            peaks = (ncc == F.max_pool2d(ncc[None], 3, 1, 1)[0]).nonzero()
            vals = ncc[peaks[:, 0], peaks[:, 1]]
            best = torch.argsort(vals, descending=True)[:self.top_k]
            for (y, x), v in zip(peaks[best].tolist(), vals[best].tolist()):
                cx = (x - pad[1] + gw / 2) * STRIDE
                cy = (y - pad[0] + gh / 2) * STRIDE
                found_boxes.append([max(cx - bw / 2, 0), max(cy - bh / 2, 0), min(cx + bw / 2, width),
                                    min(cy + bh / 2, height)])
                found_scores.append(v)
        found = np.array(found_boxes, np.float64).reshape(-1, 4)
        return found[_nms(found, np.array(found_scores), self.nms_iou, self.top_k)]

    def _template(self, i: int, gh: int, gw: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Object i's first-frame features [C,gh,gw] sampled over its box, and its mask [gh,gw] area-resized."""
        feats = self.frame_features(0)
        box = torch.tensor([self.boxes[i]], dtype=torch.float32, device=self.device)
        return _roi_sample(feats, box, (gh, gw))[0], F.adaptive_avg_pool2d(self.masks[i], (gh, gw))[0, 0]

    @staticmethod
    def _embed(grids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[M,C] L2-normalised masked averages of [M,C,g,g] grids with a [g,g] mask."""
        emb = (grids * mask).sum((2, 3)) / mask.sum().clamp_min(1e-6)
        return F.normalize(emb, dim=1)

    @torch.no_grad()
    def similarity(self, feats: torch.Tensor, boxes: np.ndarray) -> np.ndarray:
        """(N, M) similarity of each candidate box (M, 4) with each object's template, roughly in [0, 1]."""
        if len(boxes) == 0:
            return np.zeros((len(self.boxes), 0))
        grids = _roi_sample(feats, torch.from_numpy(boxes).float().to(self.device), (GRID, GRID))
        out = []
        for (template, mask), emb in zip(self.grids, self.embeddings):
            global_sim = self._embed(grids, mask) @ emb
            weighted = (grids * mask).flatten(1)
            cell_sim = F.cosine_similarity(weighted, (template * mask).flatten()[None], dim=1)
            out.append(((global_sim + cell_sim) / 2).cpu().numpy())
        return np.stack(out).astype(np.float64)
