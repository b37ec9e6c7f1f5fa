"""Loading PyTorch checkpoint files without running code from them: ``torch.load(weights_only=True)`` only.

A file holding anything beyond tensors, numbers, strings and plain containers (a pickled class, a function call) is
refused with one line naming the file. The legacy PyTorch 0.4 format of the original ``MP2S.pth.tar`` loads through
the same path; its only extra allowance is what training scripts of that era stored beside the weights: NumPy
scalars and dtypes (metrics such as ``best_prec``) and ``argparse.Namespace`` (the run's arguments), admitted by name
and nothing else. A file that needs more can be reduced to its weights once, where it is trusted:
``torch.save({"state_dict": torch.load(F, weights_only=False)["state_dict"]}, OUT)``.
"""
from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from vsreid.data.errors import DataError

#: Globals a legacy checkpoint may reference for its metadata: (object, name as written in the pickle).
LEGACY_GLOBALS = [(argparse.Namespace, "argparse.Namespace")] + [(np._core.multiarray.scalar, name) for name in
                        ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")] + [
    (np.dtype, "numpy.dtype")] + [(type(np.dtype(t)), f"numpy.dtypes.{type(np.dtype(t)).__name__}") for t in
                                  ("f4", "f8", "i4", "i8", "u1", "b1")]


class UnsafeCheckpointError(DataError):
    """The file holds Python objects that only full unpickling could build (and that could run code)."""


def load_checkpoint_file(path: str | Path, map_location="cpu", legacy: bool = False):
    """``torch.load(path, weights_only=True)``; ``legacy`` also admits :data:`LEGACY_GLOBALS` (original checkpoints).

    Raises :class:`UnsafeCheckpointError` for a file that needs more than that, :class:`DataError` for a missing file
    or one that is not a PyTorch checkpoint; both name the file in one line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    try:
        if legacy:
            with torch.serialization.safe_globals(LEGACY_GLOBALS):
                return torch.load(path, map_location=map_location, weights_only=True)
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = re.search(r"GLOBAL (\S+)", str(err))
        if unsafe:
            raise UnsafeCheckpointError(
                path, f"refused: loading would have to execute {unsafe.group(1)}; only tensors and plain values are "
                      "loaded (see vsreid.models.safe_load to extract the weights of a trusted file)") from None
        raise DataError(path, f"not a PyTorch checkpoint ({_reason(err)})") from None
    except (EOFError, KeyError, RuntimeError, IndexError, AttributeError, TypeError, OSError) as err:
        raise DataError(path, f"not a PyTorch checkpoint ({type(err).__name__}: {_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _reason(err: pickle.UnpicklingError) -> str:
    """The weights-only unpickler's own reason (its message is a page of advice around one line)."""
    found = re.search(r"WeightsUnpickler error: ([^\n]+)", str(err))
    return found.group(1).strip() if found else _first_line(err)
