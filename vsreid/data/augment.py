"""Training augmentation through albumentations: one geometric draw shared by image, labels, prior, residual and flow
(flow vectors corrected from the applied transforms), photometric changes on the image only.

albumentations moves a flow field like any other image-type target but leaves its vectors alone. If both frames of a
pair undergo the same linear map ``A`` about a point, a flow ``f`` between them becomes ``f'(A p) = A f(p)``: the
vectors are mapped with the product of the applied transforms' linear parts (a horizontal flip negates u, a scale s
multiplies by s, a rotation rotates), read back from albumentations' applied parameters.

Also here: ``warp`` / ``warp_flow``, the affine resampling that cuts a training crop out of a full frame (the
original Caffe crop layer; crop resizing leaves flow vectors unscaled, as in the original).
"""
from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np

from .labels import VOID


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the training augmentation (the original Caffe ``Transform`` where it is known: mirror, 50% rotation,
    random scale with the flow multiplied by the scale, 50% Gaussian blur with sigma in (0, 0.6)).

    ``brightness``, ``contrast``, ``saturation``: factors drawn in [1 - x, 1 + x] (``A.ColorJitter``);
    ``channel_gain``: one gain per RGB channel in [1 - x, 1 + x] (a mild hue shift); angles in degrees.
    """

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

    def reach(self) -> float:
        """How far outside the output square the geometric transform may read, as a fraction of its side per side
        (the corner of a square rotated by ``max_angle`` and shrunk by the smallest scale)."""
        a = np.deg2rad(self.max_angle if self.p_rotate > 0 else 0.0)
        return max(0.0, (abs(np.cos(a)) + abs(np.sin(a))) / min(self.scale_range) - 1) / 2


class Augmenter:
    """The albumentations pipelines of one :class:`Augmentation` for S x S training crops.

    The input arrays are a ``canvas`` of side ``S + 2 * pad`` whose centre S x S square is the crop: flip, rotation
    and scale act about the canvas centre, then the centre square is cut out, so rotated and shrunk crops show real
    frame content instead of padding wherever the frame has some.
    """

    def __init__(self, config: Augmentation, size: int):
        self.config, self.size = config, size
        self.pad = int(np.ceil(config.reach() * size)) + 1
        affine = dict(scale=tuple(config.scale_range), keep_ratio=True, interpolation=cv2.INTER_LINEAR,
                      mask_interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=VOID)
        rotate = (-config.max_angle, config.max_angle)
        self.geometric = A.Compose(
            [A.HorizontalFlip(p=config.p_flip),
             A.OneOf([A.Affine(rotate=rotate, p=config.p_rotate, **affine),
                      A.Affine(rotate=0.0, p=1.0 - config.p_rotate, **affine)], p=1.0),
             A.CenterCrop(size, size)],
            additional_targets={"prior": "image", "residual": "image", "flow": "image", "image2": "image"},
            save_applied_params=True, strict=True)
        self.photometric = A.Compose(
            [A.ColorJitter(brightness=config.brightness, contrast=config.contrast, saturation=config.saturation,
                           hue=0.0, p=1.0),
             A.MultiplicativeNoise(multiplier=(1 - config.channel_gain, 1 + config.channel_gain), per_channel=True,
                                   elementwise=False, p=1.0),
             A.GaussianBlur(blur_limit=0, sigma_limit=(1e-3, max(config.max_sigma, 1e-3)), p=config.p_blur)],
            strict=True)

    @property
    def canvas(self) -> int:
        """Side of the canvas the arrays must have."""
        return self.size + 2 * self.pad

    def __call__(self, rng: np.random.Generator, image: np.ndarray, labels: np.ndarray, prior: np.ndarray,
                 residual: np.ndarray, flow: np.ndarray, image2: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Augment canvas arrays: ``image`` (P, P, 3) float32 RGB in [0, 1], ``labels`` (P, P) uint8 ids,
        ``prior`` and ``residual`` (P, P) float32, ``flow`` (P, P, 2) float32 pixels, optional ``image2`` (another
        frame, same geometry, no photometric change). Returns the same keys as (S, S, ...) arrays; outside the
        canvas labels are void and everything else 0. Draws its seeds from ``rng``."""
        targets = dict(image=image, mask=labels, prior=prior, residual=residual, flow=flow)
        if image2 is not None:
            targets["image2"] = image2
        self.geometric.set_random_seed(int(rng.integers(2**31)))
        out = self.geometric(**targets)
        linear = np.eye(2)
        for name, params in out["applied_transforms"]:
            if name == "HorizontalFlip":
                linear = np.diag([-1.0, 1.0]) @ linear
            elif name == "Affine":
                linear = np.asarray(params["matrix"], np.float64)[:2, :2] @ linear
        flow = out["flow"] @ linear.T.astype(np.float32)
        self.photometric.set_random_seed(int(rng.integers(2**31)))
        img = np.clip(self.photometric(image=out["image"])["image"], 0, 1)
        result = dict(image=img.astype(np.float32, copy=False), labels=out["mask"], prior=out["prior"],
                      residual=out["residual"], flow=flow.astype(np.float32, copy=False))
        if image2 is not None:
            result["image2"] = out["image2"]
        return result


def warp(array: np.ndarray, matrix: np.ndarray, size: tuple[int, int], interpolation: int = cv2.INTER_LINEAR,
         fill: float = 0) -> np.ndarray:
    """``cv2.warpAffine`` of (H, W[, C]) with a (3, 3) or (2, 3) in->out matrix to ``size`` = (width, height);
    pixels from outside the input get ``fill``. Bool arrays are warped as uint8 and returned as bool."""
    src = array.view(np.uint8) if array.dtype == bool else array
    out = cv2.warpAffine(src, np.asarray(matrix, np.float64)[:2], size, flags=interpolation,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(fill,) * 4)
    out = out.reshape((size[1], size[0]) + array.shape[2:])
    return out.astype(bool) if array.dtype == bool else out


def warp_flow(flow: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resample a (H, W, 2) flow field (pixels) bilinearly with ``warp``, vectors unchanged (a crop resize leaves
    them unscaled, as in the original). Outside the input the flow is 0. Returns float32."""
    return warp(flow.astype(np.float32, copy=False), matrix, size, cv2.INTER_LINEAR, 0)
