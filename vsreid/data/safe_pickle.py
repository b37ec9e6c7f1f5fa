"""Reading pickles that hold only data: an unpickler that admits NumPy arrays, scalars and dtypes besides Python's
plain containers and values, and refuses every other global (a class or a function call could run code).

The original VS-ReID re-ID results (``PersonSearch``/``ObjectSearch``/``Class`` pickles, written by Python 2) need
exactly these: lists and dicts of NumPy arrays and floats.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

from .errors import DataError

#: (module, name) globals a data pickle may reference; NumPy 1 and 2 spell the array rebuild differently.
ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes (array buffers)
}) | {(module, name) for module in ("builtins", "__builtin__")
      for name in ("bytes", "bytearray", "set", "frozenset", "complex", "list", "dict", "tuple", "int", "float", "str",
                   "bool", "unicode", "long")}


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED_GLOBALS or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def load_data_pickle(path: str | Path, encoding: str = "latin1"):
    """Unpickle ``path`` (``encoding`` for Python 2 strings) admitting only data types (see ``ALLOWED_GLOBALS``).

    Raises :class:`DataError` naming the file when it is missing, unreadable, or references anything else.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    try:
        return _DataUnpickler(io.BytesIO(data), encoding=encoding).load()
    except pickle.UnpicklingError as e:
        if str(e).startswith("refused global"):
            raise DataError(path, f"refused: {str(e)[len('refused '):]} is not data (only NumPy arrays and plain "
                                  "values are read)") from None
        raise DataError(path, f"unreadable pickle ({e})") from None
    except (EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError, KeyError) as e:
        raise DataError(path, f"unreadable pickle ({type(e).__name__}: {e})") from None
