"""DAVIS J & F metrics (numpy/OpenCV core, torchmetrics wrapper), per-object statistics and result-folder evaluation.

``DavisJF`` (a torchmetrics ``Metric``) is imported on first use, so that ``vsreid evaluate`` does not pay for
torchmetrics and Lightning.
"""
from .evaluation import EvaluationResult, evaluate_results, evaluate_sequence, global_table, object_statistics
from .measures import boundary_map, boundary_measure, disk, jaccard_and_boundary, region_similarity
from .statistics import db_statistics, decay_bins

__all__ = ["DavisJF", "EvaluationResult", "boundary_map", "boundary_measure", "db_statistics", "decay_bins", "disk",
           "evaluate_results", "evaluate_sequence", "global_table", "jaccard_and_boundary", "object_statistics",
           "region_similarity"]


def __getattr__(name: str):
    if name == "DavisJF":
        from .jf_metric import DavisJF

        return DavisJF
    raise AttributeError(f"module 'vsreid.metrics' has no attribute {name!r}")
