"""``DavisJF``: the DAVIS J&F evaluation as a torchmetrics ``Metric`` (one sequence per ``update``), DDP-safe."""
from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

from .evaluation import GLOBAL_COLUMNS, evaluate_sequence, global_table, object_statistics


class DavisJF(Metric):
    """Global DAVIS numbers (``J&F-Mean``, ``J-Mean``, ``J-Recall``, ``J-Decay``, ``F-Mean``, ``F-Recall``,
    ``F-Decay``) over every object of every sequence passed to :meth:`update`.

    States are sums of the 6 per-object statistics and the object count (float64), reduced by ``sum`` across
    processes, so ranks may see different numbers of sequences (or none). ``compute`` returns NaNs before any object.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, semi_supervised: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.semi_supervised = semi_supervised
        self.add_state("stat_sums", default=torch.zeros(6, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("objects", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred_labels: torch.Tensor | np.ndarray, gt_labels: torch.Tensor | np.ndarray) -> None:
        """Add one sequence: (T, H, W) integer id maps (see :func:`~vsreid.metrics.evaluation.evaluate_sequence`)."""
        stats = object_statistics(*evaluate_sequence(_numpy(pred_labels), _numpy(gt_labels), self.semi_supervised))
        self.stat_sums += torch.as_tensor(stats.sum(axis=0), dtype=torch.float64, device=self.stat_sums.device)
        self.objects += len(stats)

    def compute(self) -> dict[str, torch.Tensor]:
        """The global row as float64 scalar tensors keyed by column name."""
        means = (self.stat_sums / self.objects).cpu().numpy()
        table = global_table(means)
        return {c: torch.tensor(table[c], dtype=torch.float64) for c in GLOBAL_COLUMNS}


def _numpy(labels) -> np.ndarray:
    return labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
