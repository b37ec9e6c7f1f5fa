"""Per-object statistics of a per-frame measure, as the DAVIS toolkit's ``db_statistics``."""
from __future__ import annotations

import math

import numpy as np

N_BINS = 4


def decay_bins(n_frames: int) -> list[tuple[int, int]]:
    """The toolkit's 4 decay bins over ``n_frames`` values, as half-open ``(start, stop)`` index pairs.

    Bin edges are ``round(linspace(1, n, 5) + 1e-10) - 1`` cast to uint8, and bin i is ``values[e[i] : e[i+1] + 1]``
    (neighbouring bins share an edge frame). The uint8 cast wraps edges modulo 256, so with more than 256 frames
    a bin can be empty (decay NaN, e.g. 298 frames: last bin ``[223:42]``) or cover the wrong frames. This is
    replicated on purpose, with ``e[i+1] + 1`` computed as a plain integer as under numpy 1 (numpy 2 also wraps
    255 + 1 to 0, so the official script run on numpy 2 gives NaN when an edge is 255, e.g. for 256 frames).
    """
    edges = (np.round(np.linspace(1, n_frames, N_BINS + 1) + 1e-10) - 1).astype(np.int64) % 256
    return [(int(edges[i]), int(edges[i + 1]) + 1) for i in range(N_BINS)]


def db_statistics(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, recall, decay) of one object's per-frame values (T,), as floats.

    mean = nanmean(values); recall = mean(values > 0.5) (a NaN frame counts as a miss);
    decay = nanmean(first decay bin) - nanmean(last decay bin) (see :func:`decay_bins`). All NaN when T = 0.
    """
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return math.nan, math.nan, math.nan
    bins = decay_bins(values.size)
    return (_nanmean(values), float(np.mean(values > 0.5)),
            _nanmean(values[slice(*bins[0])]) - _nanmean(values[slice(*bins[-1])]))


def _nanmean(values: np.ndarray) -> float:
    return math.nan if np.isnan(values).all() else float(np.nanmean(values))
