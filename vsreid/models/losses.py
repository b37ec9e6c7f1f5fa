"""Training losses beyond cross-entropy.

``lovasz_iou_loss`` is the binary Lovász extension of the Jaccard loss (Berman et al., "The Lovász-Softmax loss",
CVPR 2018) on foreground probabilities: a convex surrogate whose minimiser is the mask of best IoU, unlike the
per-pixel cross-entropy, which weighs every pixel alike whatever the object's size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vsreid.data.labels import VOID  # also the target value of crop padding


def _jaccard_steps(sorted_truth: torch.Tensor) -> torch.Tensor:
    """Increments of ``1 - IoU`` as pixels are added to the prediction in the given order. ``sorted_truth``: (P,) 0/1."""
    total = sorted_truth.sum()
    intersection = total - sorted_truth.cumsum(0)
    union = total + (1 - sorted_truth).cumsum(0)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def lovasz_iou_loss(fg: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the Lovász IoU loss of each crop.

    Args:
        fg: ``[N,H,W]`` foreground probabilities in [0, 1].
        target: ``[N,H,W]`` int, 1 = object, 0 = background, ``VOID`` (255) = void (left out).

    Returns:
        A scalar; crops with no valid pixel contribute 0.
    """
    losses = []
    for prob, truth in zip(fg.float(), target):
        valid = truth != VOID
        if not valid.any():
            losses.append(prob.sum() * 0.0)
            continue
        truth = (truth[valid] == 1).float()
        errors = (truth - prob[valid]).abs()
        errors, order = errors.sort(descending=True)
        losses.append(torch.dot(errors, _jaccard_steps(truth[order])))
    return torch.stack(losses).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, lovasz_weight: float = 0.0,
                      of_batch: tuple[int, int] | None = None) -> torch.Tensor:
    """Cross-entropy (+ ``lovasz_weight`` x the Lovász IoU loss) of logits (N, 2, S, S) for targets (N, S, S) of
    0 / 1 / ``VOID`` (255, left out); 0 with a gradient when every pixel is void. ``of_batch``: (non-void pixels,
    crops) of a whole batch these crops are a part of (gradient accumulation): the parts' losses then sum to the
    whole batch's."""
    target = target.long()
    if (target == VOID).all():
        return logits.sum() * 0.0
    if of_batch is None:
        loss = F.cross_entropy(logits, target, ignore_index=VOID)
        share = 1.0
    else:
        loss = F.cross_entropy(logits, target, ignore_index=VOID, reduction="sum") / of_batch[0]
        share = len(target) / of_batch[1]
    if lovasz_weight:
        fg = torch.softmax(logits.float(), 1)[:, 1]
        loss = loss + lovasz_weight * share * lovasz_iou_loss(fg, target)
    return loss
