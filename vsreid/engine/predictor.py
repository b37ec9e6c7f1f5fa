"""Running MP2S on batches of per-object crops, with the original's horizontal-flip test-time augmentation."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vsreid.models.mixed_precision import resolve_precision
from vsreid.models.mp2s import rgb_to_mp2s

from .cpu_split import run_split, split_ways


def mirrored(image: torch.Tensor, flow: torch.Tensor, prior: torch.Tensor, residual: torch.Tensor | None = None):
    """The horizontally mirrored crops ``[N,C,S,S]`` (image, flow, prior, residual): flow flipped with u negated, the
    others flipped (a None residual stays None)."""
    flow = flow.flip(3)
    return (image.flip(3), torch.cat([-flow[:, :1], flow[:, 1:]], 1), prior.flip(3),
            None if residual is None else residual.flip(3))


def check_prior_weight(weight: float) -> float:
    """``weight`` as a float in [0, 1), or a ValueError naming ``prior_weight``."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"prior_weight must be in [0, 1), got {weight}")
    return float(weight)


def with_prior(fg: torch.Tensor, prior: torch.Tensor, weight: float) -> torch.Tensor:
    """``(1 - weight) * fg + weight * prior`` for P(fg) and prior crops of one shape ([n, S, S]); ``fg`` itself at 0."""
    return fg if weight == 0 else (1 - weight) * fg + weight * prior


class PatchPredictor:
    """Foreground probabilities for crops of (image, flow, prior, residual).

    Args:
        net: an MP2S-style module, ``net(image_bgr255, flow, prior, residual) -> logits (n, 2, S, S)``.
        flip: average with the horizontally mirrored pass (flow u negated), as the original does; on the CPU the
            two passes run at once, each on half of torch's threads (:mod:`vsreid.engine.cpu_split`).
        batch_size: crops per forward pass (on a single stream, e.g. a GPU, the flipped copies travel in the same
            pass, which then holds twice as many); peak memory grows with it (about 30 MB per crop at 257 x 257 for
            the Lite0 network).
        precision: the network's arithmetic (:data:`vsreid.models.mixed_precision.PRECISIONS`): ``bfloat16`` runs
            it under bfloat16 autocast (P(fg) in float32), ``auto`` where the device computes bfloat16 natively.
        prior_weight: share of the prior crop in the returned probability, ``(1 - w) * P(fg) + w * prior`` (0 = the
            network's alone): at the 0.5 threshold the network must be more confident to move the prior's boundary
            (at 0.2: above 0.625 to add a pixel, below 0.375 to remove one).

    ``uses_residual``: whether the network reads the warp's photometric residual (``net.uses_residual``; True for a
    module that does not say), so that the propagator computes it only then.
    """

    def __init__(self, net: nn.Module, flip: bool = True, batch_size: int = 4, precision: str = "float32",
                 prior_weight: float = 0.0):
        self.net = net
        self.flip = flip
        self.batch_size = batch_size
        self.prior_weight = check_prior_weight(prior_weight)
        self.bfloat16 = resolve_precision(precision, self.device, "inference_precision") == "bfloat16"
        self.uses_residual = bool(getattr(net, "uses_residual", True))

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def __call__(self, images: np.ndarray, flows: np.ndarray, priors: np.ndarray, residuals: np.ndarray | None = None
                 ) -> np.ndarray:
        """images (n, S, S, 3) RGB 0-255, flows (n, S, S, 2) px, priors (n, S, S) in [0, 1], residuals (n, S, S)
        0-255 or None -> (n, S, S) P(fg), the prior mixed in by ``prior_weight``."""
        if len(images) == 0:
            return np.zeros((0,) + images.shape[1:3], np.float32)
        was_training = self.net.training
        if was_training:  # (switching modes walks every module: 9 ms a call for the Lite network)
            self.net.eval()
        try:
            out = [self._run(images[i:i + self.batch_size], flows[i:i + self.batch_size],
                             priors[i:i + self.batch_size],
                             None if residuals is None else residuals[i:i + self.batch_size])
                   for i in range(0, len(images), self.batch_size)]
        finally:
            if was_training:
                self.net.train()
        return np.concatenate(out)

    def _run(self, images, flows, priors, residuals) -> np.ndarray:
        dev = self.device
        image = rgb_to_mp2s(torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(dev)
                            .permute(0, 3, 1, 2) / 255.0)
        flow = torch.from_numpy(np.ascontiguousarray(flows, np.float32)).to(dev).permute(0, 3, 1, 2)
        prior = torch.from_numpy(np.ascontiguousarray(priors, np.float32)).to(dev)[:, None]
        residual = None if residuals is None else \
            torch.from_numpy(np.ascontiguousarray(residuals, np.float32)).to(dev)[:, None]
        crops = (image, flow, prior, residual)
        fg = self._flip_averaged(crops) if self.flip else self._fg(*crops)
        return with_prior(fg, prior[:, 0], self.prior_weight).cpu().numpy()

    def _flip_averaged(self, crops: tuple) -> torch.Tensor:
        """P(fg) [n,S,S] of network inputs [n,C,S,S] averaged with the mirrored pass's."""
        flipped = mirrored(*crops)
        if split_ways(crops[0].device, 2) == 2:
            fg, fg_flipped = run_split([lambda: self._fg(*crops), lambda: self._fg(*flipped)], 2)
        else:  # one pass of both
            both = self._fg(*(None if a is None else torch.cat([a, b]) for a, b in zip(crops, flipped)))
            fg, fg_flipped = both[:len(crops[0])], both[len(crops[0]):]
        return (fg + fg_flipped.flip(2)) / 2

    def _fg(self, image, flow, prior, residual) -> torch.Tensor:
        """P(fg) [n,S,S] of network inputs [n,C,S,S]."""
        with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=self.bfloat16):  # per thread
            logits = self.net(image, flow, prior, residual)
        return torch.softmax(logits.float(), dim=1)[:, 1]
