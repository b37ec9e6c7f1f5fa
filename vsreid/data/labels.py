"""Label maps (``labels``: H×W uint8 object ids, 0 = background, 255 = void) as palette PNGs, and RGB frames."""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .atomic import atomic_path
from .errors import DataError

VOID = 255


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL-VOC colour map: (256, 3) uint8, id 0 black, 1 red, 2 green, 3 yellow, ..."""
    palette = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read an annotation PNG as an id map (H, W) uint8.

    Palette (``P``) PNGs give their indices, 8-bit grayscale (``L``) PNGs their values; a grayscale mask holding only
    0 and 255 is a DAVIS-2016 binary mask and becomes object 1. Grayscale with an opaque alpha channel is read as
    grayscale; RGB and other modes are rejected.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            labels = np.array(im)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(path, f"unreadable image ({e})") from None
    if mode == "LA":  # the official DAVIS 2016 package has one (bear/00077.png), its alpha fully opaque
        if not (labels[..., 1] == 255).all():
            raise DataError(path, "grayscale image with transparent pixels, expected a palette or grayscale id map")
        labels, mode = np.ascontiguousarray(labels[..., 0]), "L"
    if mode in ("RGB", "RGBA", "CMYK", "YCbCr", "PA"):
        raise DataError(path, f"{mode} image, expected a palette or grayscale id map")
    if mode == "1":
        return labels.astype(np.uint8)
    if mode not in ("P", "L") or labels.dtype != np.uint8 or labels.ndim != 2:
        raise DataError(path, f"{mode} image, expected an 8-bit palette or grayscale id map")
    if mode == "L" and labels.any():
        values = np.unique(labels)
        if values[-1] == 255 and np.all(np.isin(values, (0, 255))):
            labels = (labels == 255).astype(np.uint8)
    return labels


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """Write an id map (H, W) uint8 as a palette PNG with the DAVIS colours, atomically."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"{path}: labels must be a 2-D uint8 array, got {labels.dtype} {labels.shape}")
    im = Image.fromarray(labels, mode="P")
    im.putpalette(davis_palette().ravel().tolist())
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
    return Path(path)


def read_frame(path: str | os.PathLike) -> np.ndarray:
    """Read a JPEG/PNG frame as RGB (H, W, 3) uint8; a truncated JPEG (no end-of-image marker, which the decoder
    would fill with grey rows) is a :class:`DataError`."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:].rstrip(b"\x00\r\n "):
        raise DataError(path, "truncated JPEG (no end-of-image marker)")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if bgr is None:
        raise DataError(path, "unreadable image (not a valid JPEG/PNG)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_frame(path: str | os.PathLike, rgb: np.ndarray, quality: int = 95) -> Path:
    """Write an RGB (H, W, 3) uint8 frame as JPEG (or PNG by extension), atomically."""
    suffix = Path(path).suffix
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix.lower() in (".jpg", ".jpeg") else []
    with atomic_path(path, suffix=".tmp" + suffix) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
            raise OSError(f"{path}: could not write image")
    return Path(path)


def overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5, outline: bool = False) -> np.ndarray:
    """Blend the DAVIS colour of each object into an RGB (H, W, 3) uint8 frame; with ``outline``, also draw each
    object's contour in its colour over a black edge (readable on any background). Returns (H, W, 3) uint8."""
    palette = davis_palette()
    colours = palette[labels].astype(np.float32)
    fg = ((labels > 0) & (labels != VOID))[..., None]
    out = np.where(fg, (1 - alpha) * rgb + alpha * colours, rgb).astype(np.uint8)
    if outline:
        thickness = max(1, round(min(labels.shape) / 240))
        for obj in np.unique(labels[fg[..., 0]]):
            contours, _ = cv2.findContours((labels == obj).astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, (0, 0, 0), thickness + 2)
            cv2.drawContours(out, contours, -1, tuple(int(c) for c in palette[obj]), thickness)
    return out


def overlay_strip(frame: Callable[[int], np.ndarray], labels: Sequence[np.ndarray], count: int = 4) -> np.ndarray:
    """``count`` evenly spaced outlined overlays side by side: ``frame(t)`` gives the RGB (H, W, 3) uint8 frame t,
    ``labels[t]`` its (H, W) id map. Returns (H, count * W, 3) uint8 (fewer tiles for shorter sequences)."""
    picks = np.linspace(0, len(labels) - 1, min(count, len(labels))).round().astype(int)
    return np.concatenate([overlay(frame(t), labels[t], outline=True) for t in picks], axis=1)
