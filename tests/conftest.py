"""Shared fixtures: the location of the real DAVIS subsets (``../shared/data`` or ``$VSREID_SHARED_DATA``) and
``make_davis_root``, the one builder of small DAVIS roots (:func:`davis_roots.write_davis_root`)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from davis_roots import write_davis_root

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Flow caches of the tests (and of the subprocesses they start) go to a temporary folder, not the user's."""
    os.environ["VSREID_CACHE"] = str(tmp_path_factory.mktemp("vsreid-cache"))


def shared_data_path() -> Path:
    return Path(os.environ.get("VSREID_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder holding ``davis2016-train-subset`` and ``davis2016-val-subset``; skips when absent."""
    path = shared_data_path()
    if not (path / "davis2016-val-subset").is_dir():
        pytest.skip(f"real DAVIS subsets not found at {path} (set VSREID_SHARED_DATA to the folder holding them)")
    return path


@pytest.fixture(scope="session")
def davis_val(shared_data) -> Path:
    return shared_data / "davis2016-val-subset"


@pytest.fixture(scope="session")
def davis_train(shared_data) -> Path:
    return shared_data / "davis2016-train-subset"


@pytest.fixture(scope="session")
def make_davis_root():
    """:func:`davis_roots.write_davis_root`: ``make_davis_root(path, sequences, frames=..., size=..., objects=...,
    splits=...)`` writes a small DAVIS root and returns its :class:`~vsreid.data.davis.DavisRoot`."""
    return write_davis_root
