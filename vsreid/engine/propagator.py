"""Mask propagation with optical flow and MP2S, following the original VS-ReID ``predict``/``predict_single``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from vsreid.data.crops import boxes_from_labels, crop_resize, grown_box, scale_box
from vsreid.data.warp import RESIDUAL_REACH, photometric_residual, warp_grid

from .boxes import enclosing_iou
from .source import SequenceSource
from .state import PropagationState, initial_state, plane_argmax


@dataclass
class PropagationConfig:
    """The original's constants, configurable.

    crop_size: side of the square crops fed to the network (449 in the paper).
    box_enlargement: each object's box is enlarged by this fraction of its width/height per side (0.15).
    lost_ratio: an object is lost once its area is below 1/lost_ratio of its first-frame area (10).
    max_flow_error: forward-backward consistency threshold of the warp in pixels (100).
    refine_iterations: network passes at a re-identification, alone and then jointly with neighbours (5).
    """

    crop_size: int = 449
    box_enlargement: float = 0.15
    lost_ratio: float = 10.0
    max_flow_error: float = 100.0
    refine_iterations: int = 5


Predictor = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]


class Propagator:
    """Propagates per-object probabilities through a sequence.

    ``predictor(images (n,S,S,3) RGB 0-255, flows (n,S,S,2), priors (n,S,S), residuals (n,S,S) 0-255 or None)
    -> (n,S,S) P(fg)``, e.g. a :class:`vsreid.engine.predictor.PatchPredictor`. Residuals come with warped priors (the
    photometric residual of the same warp); priors that were not warped (re-identification) come with None, and so do
    all priors when the predictor's ``uses_residual`` attribute is False (its network reads no residual).
    """

    def __init__(self, predictor: Predictor, config: PropagationConfig | None = None):
        self.predictor = predictor
        self.config = config or PropagationConfig()
        self.uses_residual = getattr(predictor, "uses_residual", True)

    # ------------------------------------------------------------------ public API
    def start(self, source: SequenceSource, first_labels: np.ndarray, object_ids: Sequence[int]) -> PropagationState:
        """A new state with frame 0 set from its id map (H, W) uint8."""
        return initial_state(first_labels, object_ids, source.num_frames, self.config.box_enlargement)

    def run_forward(self, source: SequenceSource, state: PropagationState,
                    progress: Callable[[int], None] | None = None) -> PropagationState:
        """The initial pass: propagate every object from frame 0 to the end (``predict(1, T, 1, all)``)."""
        self.predict(source, state, 1, source.num_frames, 1, range(state.num_objects), progress)
        return state

    def forward_frames(self, source: SequenceSource, state: PropagationState) -> Iterator[int]:
        """:meth:`run_forward` one frame at a time: yields each frame t once ``state`` holds it."""
        return self.predict_frames(source, state, 1, source.num_frames, 1, range(state.num_objects))

    def predict(self, source: SequenceSource, state: PropagationState, start: int, end: int, step: int,
                targets: Iterable[int], progress: Callable[[int], None] | None = None) -> None:
        """Propagate ``targets`` (object indices) over frames ``range(start, end, step)`` from frame start - step.

        Each (frame, object) keeps the prediction of its temporally nearest anchor; an object that shrank below
        1/lost_ratio of its first-frame area stops; non-targets whose box touches a target's box are re-predicted
        with it so the joint argmax stays consistent. Stops early when no target qualifies.
        """
        for t in self.predict_frames(source, state, start, end, step, targets):
            if progress:
                progress(t)

    def predict_frames(self, source: SequenceSource, state: PropagationState, start: int, end: int, step: int,
                       targets: Iterable[int]) -> Iterator[int]:
        """:meth:`predict` as a generator: yields each frame once it is done."""
        cfg, targets = self.config, list(targets)
        anchor = start - step
        for t in range(start, end, step):
            src = t - step
            to_src, from_src = source.flow_to_source(t, step), source.flow_from_source(t, step)
            combined_src = state.combined(src)
            grid = warp_grid(to_src, from_src, cfg.max_flow_error)  # shared by the prior and the residual
            warped = grid.pull(combined_src.transpose(1, 2, 0))
            boxes = _boxes(np.argmax(warped, axis=2), state.num_objects, cfg.box_enlargement)
            src_index_map = plane_argmax(combined_src)
            selected, go_on = [], False
            for i in range(state.num_objects):
                if t != start and state.first_area[i] > cfg.lost_ratio * np.count_nonzero(src_index_map == i + 1):
                    continue
                if abs(state.anchors[t, i] - t) <= abs(anchor - t):
                    continue
                if i in targets:
                    go_on = True
                    state.anchors[t, i] = anchor
                    selected.append(i)
                elif any(enclosing_iou(boxes[i], boxes[j]) > 1e-6 for j in targets):
                    selected.append(i)
            if not go_on:
                break
            priors = [warped[..., i + 1] for i in selected]
            residual = None
            if self.uses_residual:  # only where the crops read, widened by the blur's reach: the full-frame values
                residual = photometric_residual(source.frame(t), source.frame(src), grid,
                                                _window(boxes[selected], RESIDUAL_REACH, warped.shape[:2]))
            self._predict_objects(source, state, t, selected, boxes, priors, to_src, residual)
            yield t

    def reinitialize(self, source: SequenceSource, state: PropagationState, t: int, i: int, box: Sequence[float]
                     ) -> None:
        """Re-initialise object i at frame t inside a re-identified ``box`` (``predict_single`` of the original).

        The first-frame template seeds the prior; ``refine_iterations`` passes refine object i alone, then as many
        joint passes refine it with the objects around it. The flow input is frame t's backward flow.
        """
        cfg, n = self.config, state.num_objects
        flow = source.flow_to_source(t, 1)
        index_map = state.index_map(t)
        x1, y1, x2, y2 = _boxes(index_map, n, cfg.box_enlargement)[i]
        group = [i] + [j - 1 for j in np.unique(index_map[y1:y2 + 1, x1:x2 + 1]) if j != 0 and j - 1 != i]
        state.probs.erase(t, state.probs.plane(t, i) > 0.5)
        h, w = state.probs.shape[2:]
        x1 = int(np.clip(box[0], 0, w - 1))
        x2 = int(np.clip(box[2], x1 + 1, w))
        y1 = int(np.clip(box[1], 0, h - 1))
        y2 = int(np.clip(box[3], y1 + 1, h))
        det_box = np.array([x1, y1, x2, y2])
        template = state.templates[i]
        for it in range(cfg.refine_iterations):
            prior = template if it == 0 else state.probs.crop(t, i, det_box)
            boxes = np.zeros((n, 4), np.int64)
            boxes[i] = det_box
            self._predict_objects(source, state, t, [i], boxes, [prior], flow, prior_in_box=True)
        state.probs.erase(t, state.probs.plane(t, i) > 0.5, keep=i)
        index_map = state.index_map(t)
        x1, y1, x2, y2 = _boxes(index_map, n, cfg.box_enlargement)[i]
        group = sorted(set(group) | {j - 1 for j in np.unique(index_map[y1:y2, x1:x2]) if j != 0})
        for _ in range(cfg.refine_iterations):
            combined = state.combined(t)
            boxes = _boxes(plane_argmax(combined), n, cfg.box_enlargement)
            self._predict_objects(source, state, t, group, boxes, [combined[j + 1] for j in group], flow)

    # ------------------------------------------------------------------ crops and network
    def _predict_objects(self, source: SequenceSource, state: PropagationState, t: int, objects: list[int],
                         boxes: np.ndarray, priors: list[np.ndarray], flow: np.ndarray,
                         residual: np.ndarray | None = None, prior_in_box: bool = False) -> None:
        """Crop (image, flow, prior, residual) per object, run the network as one batch, paste P(object) back into
        frame t.

        ``priors[k]`` is a full-frame (H, W) map, or with ``prior_in_box`` already the crop of ``boxes[object]``;
        ``residual`` is the full-frame (H, W) photometric residual of the warp that made the priors, or None.
        """
        if not objects:
            return
        size = self.config.crop_size
        image = source.crop_frame(t)
        sx, sy = source.crop_scale
        images, flows, crops, residuals = [], [], [], []
        for k, i in enumerate(objects):
            images.append(crop_resize(image, scale_box(boxes[i], sx, sy), size))
            flows.append(crop_resize(flow, boxes[i], size))
            prior = np.ascontiguousarray(priors[k], np.float32)
            crops.append(cv2.resize(prior, (size, size)) if prior_in_box else crop_resize(prior, boxes[i], size))
            if residual is not None:
                residuals.append(crop_resize(residual, boxes[i], size))
        fg = self.predictor(np.stack(images).astype(np.float32), np.stack(flows), np.stack(crops),
                            np.stack(residuals) if residuals else None)
        for k, i in enumerate(objects):
            x1, y1, x2, y2 = boxes[i]
            state.set_object(t, i, boxes[i], cv2.resize(fg[k], (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR))


def _window(boxes: np.ndarray, margin: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The (x0, y0, x1, y1) window holding every box of ``boxes`` (K, 4), widened by ``margin``, inside (H, W)."""
    enclosing = (int(boxes[:, 0].min()), int(boxes[:, 1].min()), int(boxes[:, 2].max()), int(boxes[:, 3].max()))
    return grown_box(enclosing, margin, shape)


def _boxes(index_map: np.ndarray, num_objects: int, box_enlargement: float) -> np.ndarray:
    """(N, 4) boxes of object indices 0..N-1 from an index map (values 1..N); absent objects get (0, 0, 1, 1)."""
    return boxes_from_labels(index_map, range(1, num_objects + 1), box_enlargement)
