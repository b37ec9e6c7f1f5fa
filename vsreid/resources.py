"""Files shipped inside the package, found from any working folder: configs (``vsreid.configs``, the repository's
``configs/``), weights (``vsreid.checkpoints``, its ``checkpoints/``) and the bundled DAVIS sample
(``vsreid.samples``, its ``data/samples/``)."""
from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from vsreid.data.errors import DataError

#: Shipped weights by name.
PRETRAINED = {"lite0": "vsreid_lite0.pt"}


def config_path(name: str) -> Path:
    """The shipped config ``name`` (``davis_lite``, ``pretrain_lite``, ...; with or without ``.yaml``)."""
    stem = name.removesuffix(".yaml")
    path = Path(str(files("vsreid.configs") / f"{stem}.yaml"))
    if not path.is_file():
        shipped = sorted(p.stem for p in Path(str(files("vsreid.configs"))).glob("*.yaml"))
        raise DataError(name, f"no such config file, and no shipped config of that name (shipped: "
                              f"{', '.join(shipped)})")
    return path


def weights_path(name_or_path: str | os.PathLike) -> Path:
    """A weights file: a shipped model's name (see :data:`PRETRAINED`) or a path, as given."""
    if str(name_or_path) in PRETRAINED:
        return Path(str(files("vsreid.checkpoints") / PRETRAINED[str(name_or_path)]))
    return Path(name_or_path)


def sample_root() -> Path:
    """The bundled DAVIS sample root (car-shadow and libby, ground truth on every frame)."""
    return Path(str(files("vsreid.samples")))
