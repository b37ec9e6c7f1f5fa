"""Backward ("pull") warping of per-pixel values with a forward–backward flow consistency check.

This is the original VS-ReID warp: for a target pixel p, ``q = p + flow_to_source(p)`` is its position in the source
frame; ``flow_from_source`` (the opposite flow, on the source grid) is sampled bilinearly at q; p is kept only if q lies
inside the image and ``|q + flow_from_source(q) - p| < max_error``; the two estimates are averaged,
``q' = p + (flow_to_source(p) - flow_from_source(q)) / 2``, and the source value is taken at ``round(q')`` (nearest).
Rejected pixels get 0 in every channel, so an argmax over a (background, objects...) stack makes them background.

The positions are computed once per warp (:func:`warp_grid`, a :class:`WarpGrid`) and shared by everything warped
with the same flows (the probabilities and, for the photometric residual, the source frame). The bilinear sampling of
``flow_from_source`` uses ``cv2.remap`` (positions quantised to 1/32 px; the original used exact float weights), the
nearest-pixel pull a ``cv2.remap`` of integer positions; ``region`` restricts the work to a window of the target.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_MAX_ERROR = 100.0


def compose_flows(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32 flow a -> c from ``first`` (a -> b, on a's grid) and ``second`` (b -> c, on b's grid):
    ``first(p) + second(p + first(p))``, ``second`` sampled bilinearly (clamped to the image edge)."""
    h, w = first.shape[:2]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    later = cv2.remap(np.ascontiguousarray(second, np.float32), gx + first[..., 0], gy + first[..., 1],
                      cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return (first + later).astype(np.float32)


@dataclass(frozen=True)
class WarpGrid:
    """Where each target pixel pulls its value from in one backward warp (see :func:`warp_grid`): computed once, it
    moves any number of source-frame arrays (the probabilities, the frame for the residual) to the same positions.

    ``maps``: (y1 - y0, x1 - x0, 2) int16 source pixel (x, y) of each target pixel of ``region`` (x0, y0, x1, y1),
    (-1, -1) where the warp rejects the pixel; ``shape``: (H, W) of both frames.
    """

    maps: np.ndarray
    shape: tuple[int, int]
    region: tuple[int, int, int, int]

    def pull(self, values: np.ndarray) -> np.ndarray:
        """(H, W) or (H, W, C) source-frame ``values`` on the target grid, same shape and dtype; rejected pixels and
        pixels outside the grid's region are 0."""
        window = self.pull_window(values)
        if self.region == (0, 0, self.shape[1], self.shape[0]):
            return window
        x0, y0, x1, y1 = self.region
        out = np.zeros_like(values)
        out[y0:y1, x0:x1] = window
        return out

    def pull_window(self, values: np.ndarray, region: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """:meth:`pull` over ``region`` (x0, y0, x1, y1) only (default: the grid's; it must lie inside the grid's):
        an array of the window's size, (y1 - y0, x1 - x0) + ``values.shape[2:]``."""
        if values.shape[:2] != self.shape:
            raise ValueError(f"values of size {values.shape[:2]}: the warp was computed for {self.shape}")
        gx0, gy0, gx1, gy1 = self.region
        x0, y0, x1, y1 = self.region if region is None else region
        if not (gx0 <= x0 <= x1 <= gx1 and gy0 <= y0 <= y1 <= gy1):
            raise ValueError(f"region {(x0, y0, x1, y1)} is not inside the warp's region {self.region}")
        maps = np.ascontiguousarray(self.maps[y0 - gy0:y1 - gy0, x0 - gx0:x1 - gx0])
        source = values.view(np.uint8) if values.dtype == bool else values
        if source.dtype not in _REMAP_DTYPES:
            raise TypeError(f"values of dtype {values.dtype}: expected bool or one of "
                            f"{sorted(map(str, _REMAP_DTYPES))}")
        if maps.size == 0:
            return np.zeros(maps.shape[:2] + values.shape[2:], values.dtype)
        out = cv2.remap(source, maps, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out.reshape(maps.shape[:2] + values.shape[2:]).view(values.dtype)


#: Value types that ``cv2.remap`` moves.
_REMAP_DTYPES = {np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.float32, np.float64)}


def warp_grid(flow_to_source: np.ndarray, flow_from_source: np.ndarray, max_error: float = DEFAULT_MAX_ERROR,
              region: tuple[int, int, int, int] | None = None) -> WarpGrid:
    """The positions of the original's backward warp with its forward-backward check (see the module docstring).

    Args:
        flow_to_source: (H, W, 2) float32 flow (u, v) in pixels on the target grid, pointing into the source frame
            (for the step t-1 -> t this is ``t.rflo``; for t+1 -> t it is ``t.flo``).
        flow_from_source: (H, W, 2) float32 opposite flow on the source grid (``(t-1).flo``, resp. ``(t+1).rflo``).
        max_error: forward–backward consistency threshold in pixels (100 in the original).
        region: (x0, y0, x1, y1) window of the target grid to compute; None = the whole frame.
    """
    h, w = flow_to_source.shape[:2]
    if flow_from_source.shape[:2] != (h, w):
        raise ValueError(f"flow sizes {flow_to_source.shape[:2]} and {flow_from_source.shape[:2]} differ")
    if max(h, w) > np.iinfo(np.int16).max:
        raise ValueError(f"frames of {w}x{h} px: the warp handles at most {np.iinfo(np.int16).max} px a side")
    x0, y0, x1, y1 = (0, 0, w, h) if region is None else region
    gx, gy = np.arange(x0, x1, dtype=np.float32)[None], np.arange(y0, y1, dtype=np.float32)[:, None]
    to_x, to_y = cv2.split(np.ascontiguousarray(flow_to_source[y0:y1, x0:x1], np.float32))
    qx, qy = gx + to_x, gy + to_y
    valid = (qy >= 0) & (qy < h - 1) & (qx >= 0) & (qx < w - 1)
    back_x, back_y = cv2.split(cv2.remap(np.ascontiguousarray(flow_from_source, np.float32), qx, qy,
                                         cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
    valid &= cv2.magnitude(qx + back_x - gx, qy + back_y - gy) < max_error
    rx = gx + (to_x - back_x) / 2
    ry = gy + (to_y - back_y) / 2
    valid &= (ry >= 0) & (ry < h - 1) & (rx >= 0) & (rx < w - 1)
    maps = np.full(qx.shape + (2,), -1, np.int16)
    np.copyto(maps[..., 0], np.rint(rx), casting="unsafe", where=valid)
    np.copyto(maps[..., 1], np.rint(ry), casting="unsafe", where=valid)
    return WarpGrid(maps, (h, w), (x0, y0, x1, y1))


#: Gaussian blur (sigma, px) of the photometric residual: single-pixel noise and aliasing do not count as a failure.
RESIDUAL_SIGMA = 1.5
#: How far (px) the blur reads around a pixel: a residual computed over a ``region`` is exact inside the region
#: shrunk by this much.
RESIDUAL_REACH = int(np.ceil(4 * RESIDUAL_SIGMA))


def photometric_residual(frame: np.ndarray, source_frame: np.ndarray, grid: WarpGrid,
                         region: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """(H, W) float32 in 0-255: how badly the warp explains ``frame``, where a warped prior is likely to be wrong.

    The channel mean of ``|frame - grid.pull(source_frame)|`` (both (H, W, 3) uint8, any colour order; ``grid`` is the
    warp that made the prior), blurred with a Gaussian of :data:`RESIDUAL_SIGMA` px. Pixels the warp rejects have no
    source value (0), so they count as failures. Only ``region`` (x0, y0, x1, y1; default: the grid's) is computed,
    0 outside it; its values equal the full-frame ones at least :data:`RESIDUAL_REACH` px inside its edges (or at the
    image border).
    """
    x0, y0, x1, y1 = grid.region if region is None else region
    diff = cv2.absdiff(np.ascontiguousarray(frame[y0:y1, x0:x1]), grid.pull_window(source_frame, region))
    size = 2 * RESIDUAL_REACH + 1
    out = np.zeros(grid.shape, np.float32)
    if diff.size:  # the channel sum exactly (in uint16), then the mean in float32
        total = cv2.transform(diff.astype(np.uint16), np.ones((1, diff.shape[2]), np.float32))
        out[y0:y1, x0:x1] = cv2.GaussianBlur(total.astype(np.float32) / diff.shape[2], (size, size), RESIDUAL_SIGMA)
    return out
