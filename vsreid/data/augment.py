"""Training augmentation: one affine warp shared by image, masks and flow (flow vectors corrected), photometric on the
image only.

Geometry is a 3x3 matrix ``M`` mapping input pixel coordinates (x, y) to output coordinates, the ``cv2.warpAffine``
convention. For a flow field the positions move with ``M`` and the vectors with a linear map ``L``: if both frames of
the pair undergo the same affine transform ``A`` then ``f'(A p) = A[:2, :2] f(p)``, so ``L = A[:2, :2]`` (horizontal
flip negates u, scaling by s multiplies the vectors by s, rotation rotates them). A crop/resize that follows ``A``
belongs to ``M`` but not to ``L`` when, as in the original, crop resizing leaves flow vectors unscaled.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Geometry:
    """One draw of the geometric augmentation: mirror, then rotate by ``angle`` degrees and scale by ``scale``."""

    flip: bool = False
    angle: float = 0.0
    scale: float = 1.0

    def matrix(self, center: tuple[float, float]) -> np.ndarray:
        """(3, 3) float64 affine map about ``center`` (x, y), pixel coordinates in -> out."""
        cx, cy = center
        a = np.deg2rad(self.angle)
        linear = self.scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        if self.flip:
            linear = linear @ np.diag([-1.0, 1.0])
        m = np.eye(3)
        m[:2, :2] = linear
        m[:2, 2] = np.array([cx, cy]) - linear @ np.array([cx, cy])
        return m


@dataclass(frozen=True)
class Augmentation:
    """Random draws of the training augmentation (ranges follow the original Caffe ``Transform`` where it is known:
    mirror, 50% rotation, random scale with flow multiplied by the scale, 50% Gaussian blur with sigma in (0, 0.6))."""

    p_flip: float = 0.5
    p_rotate: float = 0.5
    max_angle: float = 15.0
    scale_range: tuple[float, float] = (0.8, 1.2)
    brightness: float = 0.1
    contrast: float = 0.2
    saturation: float = 0.2
    channel_gain: float = 0.05
    p_blur: float = 0.5
    max_sigma: float = 0.6

    def draw_geometry(self, rng: np.random.Generator) -> Geometry:
        flip = bool(rng.random() < self.p_flip)
        angle = float(rng.uniform(-self.max_angle, self.max_angle)) if rng.random() < self.p_rotate else 0.0
        return Geometry(flip, angle, float(rng.uniform(*self.scale_range)))

    def photometric(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Brightness, contrast, saturation, per-channel gain (a mild hue shift) and blur on an RGB (H, W, 3) image
        with values in [0, 1]; returns float32 (H, W, 3) clipped to [0, 1]."""
        img = image.astype(np.float32, copy=True)
        gray = img @ np.array([0.299, 0.587, 0.114], np.float32)
        img = gray[..., None] + (img - gray[..., None]) * rng.uniform(1 - self.saturation, 1 + self.saturation)
        img = (img - gray.mean()) * rng.uniform(1 - self.contrast, 1 + self.contrast) + gray.mean()
        img = img * rng.uniform(1 - self.channel_gain, 1 + self.channel_gain, 3).astype(np.float32)
        img += rng.uniform(-self.brightness, self.brightness)
        if rng.random() < self.p_blur:
            img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0, self.max_sigma)) + 1e-6)
        return np.clip(img, 0, 1, out=img)


def warp(array: np.ndarray, matrix: np.ndarray, size: tuple[int, int], interpolation: int = cv2.INTER_LINEAR,
         fill: float = 0) -> np.ndarray:
    """``cv2.warpAffine`` of (H, W[, C]) with a (3, 3) or (2, 3) in->out matrix to ``size`` = (width, height);
    pixels from outside the input get ``fill``. Bool arrays are warped as uint8 and returned as bool."""
    src = array.view(np.uint8) if array.dtype == bool else array
    out = cv2.warpAffine(src, np.asarray(matrix, np.float64)[:2], size, flags=interpolation,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(fill,) * 4)
    out = out.reshape((size[1], size[0]) + array.shape[2:])
    return out.astype(bool) if array.dtype == bool else out


def warp_flow(flow: np.ndarray, matrix: np.ndarray, size: tuple[int, int], linear: np.ndarray | None = None
              ) -> np.ndarray:
    """Warp a (H, W, 2) flow field (pixels, u = x, v = y) bilinearly and map its vectors with ``linear`` (2, 2);
    ``linear`` defaults to the matrix's own linear part. Outside the input the flow is 0. Returns float32."""
    lin = np.asarray(matrix, np.float64)[:2, :2] if linear is None else np.asarray(linear, np.float64)
    out = warp(flow.astype(np.float32, copy=False), matrix, size, cv2.INTER_LINEAR, 0)
    return (out @ lin.T.astype(np.float32)).astype(np.float32, copy=False)
