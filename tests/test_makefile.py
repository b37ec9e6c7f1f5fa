"""The Makefile passes TORCH_SPEC to pip as separate arguments (a CUDA index, a constraint...)."""
from __future__ import annotations

import shlex
import shutil
import subprocess

import pytest

from conftest import REPO


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_torch_spec_with_extra_pip_arguments(tmp_path):
    spec = "torch==2.13.0 --index-url https://wheels.example.invalid/cu128"
    dry = subprocess.run(["make", "-n", "bootstrap", f"VENV={tmp_path / 'venv'}", f"TORCH_SPEC={spec}"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    line = next(line for line in dry.splitlines() if "torch==2.13.0" in line)
    assert shlex.split(line)[1:] == ["-m", "pip", "install", "--quiet", "torch==2.13.0", "--index-url",
                                     "https://wheels.example.invalid/cu128"]
