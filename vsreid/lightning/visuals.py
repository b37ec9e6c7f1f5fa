"""TensorBoard images: crops with prior, prediction and ground truth overlays."""
from __future__ import annotations

import torch

COLOURS = {"prior": (0.2, 0.4, 1.0), "pred": (1.0, 0.2, 0.2), "gt": (0.1, 0.9, 0.2)}


def _tint(image: torch.Tensor, mask: torch.Tensor, colour) -> torch.Tensor:
    """image (3,H,W) in [0,1], mask (H,W) in [0,1] -> image with the colour blended in by half the mask."""
    c = torch.tensor(colour, dtype=image.dtype, device=image.device).view(3, 1, 1)
    a = 0.5 * mask.clamp(0, 1).to(image.dtype)[None]
    return image * (1 - a) + c * a


def sample_grid(batch: dict[str, torch.Tensor], logits: torch.Tensor, rows: int = 4) -> torch.Tensor:
    """(3, rows*S, 4*S) image | prior | prediction | ground truth (void shown as background)."""
    lines = []
    fg = torch.softmax(logits.detach().float(), 1)[:, 1]
    for k in range(min(rows, logits.shape[0])):
        img = batch["image"][k].detach().float().cpu()
        gt = batch["target"][k].detach().cpu()
        lines.append(torch.cat([img,
                                _tint(img, batch["prior"][k, 0].detach().float().cpu(), COLOURS["prior"]),
                                _tint(img, fg[k].cpu(), COLOURS["pred"]),
                                _tint(img, (gt == 1).float(), COLOURS["gt"])], dim=2))
    return torch.cat(lines, dim=1).clamp(0, 1)


def log_grid(logger, tag: str, batch, logits, step: int) -> None:
    """Add the sample grid to a TensorBoard logger (no-op for other loggers and on ranks > 0)."""
    experiment = getattr(logger, "experiment", None)
    if experiment is None or not hasattr(experiment, "add_image"):
        return
    experiment.add_image(tag, sample_grid(batch, logits), step)
