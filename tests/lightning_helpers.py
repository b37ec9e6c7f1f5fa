"""Small fixtures for the Lightning tests: the synthetic DAVIS roots' settings, a tiny MP2S and its config files."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]

#: ``write_davis_root`` settings of the Lightning tests' roots: 64x104 synthetic sequences with 2 objects (sequence k
#: from seed ``synthetic_seed + k``), e.g. ``write_davis_root(root, {"s0": 26}, **SYNTHETIC)``.
SYNTHETIC = dict(size=(64, 104), objects=2, synthetic_seed=0)

TINY_MODEL = dict(backbone="efficientnet_lite0", output_stride=16, aspp_channels=16, pretrained=False,
                  prior_skip=True, crop_size=65, predict_batch_size=8, refine_iterations=2)


def tiny_weights(path: Path, seed: int = 0) -> Path:
    """A fixed random tiny MP2S saved like a checkpoint ({'state_dict': ...}), so every process loads the same."""
    from vsreid.models.mp2s import MP2S

    torch.manual_seed(seed)
    cfg = {k: TINY_MODEL[k] for k in ("backbone", "output_stride", "aspp_channels", "pretrained", "prior_skip")}
    torch.save({"state_dict": MP2S(**cfg).state_dict()}, path)
    return path


def predict_config(path: Path, root: Path, weights: Path, logs: Path, reid: bool = True) -> Path:
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_model_summary": False,
                    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": str(logs), "name": "predict",
                                             "default_hp_metric": False}}},
        "model": {**TINY_MODEL, "init_from": str(weights), "reid": reid},
        "data": {"class_path": "vsreid.lightning.data.DavisPredictDataModule",
                 "init_args": {"root": str(root), "flow_preset": "ultrafast"}},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(args: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """``python -m vsreid ARGS`` in a subprocess (DDP relaunches it), failing with its output on error."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run([sys.executable, "-m", "vsreid", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, **kw)
    assert proc.returncode == 0, f"vsreid {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc
