"""LightningCLI for ``vsreid fit|validate|predict`` with the project's predict options.

``vsreid predict -c CONFIG --data.root ROOT (--data.split NAME | --data.sequences '[a,b]') --output DIR
[--ckpt_path CKPT] [--reid true|false] [--finetune_steps N] [--trainer.devices N --trainer.strategy ddp]``
"""
from __future__ import annotations

import hashlib
import inspect
import json
import sys
from dataclasses import asdict
from pathlib import Path

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI

from vsreid.engine import reid, segmenter
from vsreid.models.safe_load import load_checkpoint_file
from vsreid.resources import config_path, weights_path

from .callbacks import DavisWriter, PredictionMonitor
from .module import VSReIDModule

PREDICT_ORDER = (DavisWriter, PredictionMonitor)


class VSReIDCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--output", type=str | None, default=None,
                            help="predict: folder for <seq>/NNNNN.png results (finished sequences are skipped)")
        parser.add_argument("--reid", type=bool | None, default=None,
                            help="predict: apply re-ID recovery (shortcut for --model.reid; default: as configured)")
        parser.add_argument("--finetune_steps", type=int | None, default=None,
                            help="predict: online finetuning steps on each sequence's first frame")
        parser.add_argument("--overlays", type=bool, default=False,
                            help="predict: also write OUTPUT/overlays/<seq>.mp4 and a 4-frame <seq>.png strip")

    def _predict_only(self, subcommand: str) -> None:
        cfg = self.config[subcommand]
        given = [k for k in ("output", "reid", "finetune_steps") if cfg.get(k) is not None]
        given += ["overlays"] if cfg.get("overlays") else []
        if given:
            self.parser.error(f"--{given[0]} applies to 'predict' only")

    def _parse_ckpt_path(self) -> None:
        """Refuse a ``--ckpt_path`` file that would run code when loaded (one line naming it) before Lightning reads
        its hyperparameters; the trainer then loads it weights-only too."""
        subcommand = self.config.get("subcommand")
        ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt and ckpt not in ("last", "best", "hpc", "registry"):
            load_checkpoint_file(ckpt)
        super()._parse_ckpt_path()

    def _force_weights_only(self, subcommand: str) -> None:
        self.config_init[subcommand]["weights_only"] = True

    def before_fit(self) -> None:
        self._predict_only("fit")
        self._force_weights_only("fit")

    def before_validate(self) -> None:
        self._predict_only("validate")
        self._force_weights_only("validate")

    def before_predict(self) -> None:
        self._force_weights_only("predict")
        cfg = self.config["predict"]
        callbacks = self.trainer.callbacks
        writer = next((c for c in callbacks if isinstance(c, DavisWriter)), None)
        if cfg.output is None and writer is None:
            self.parser.error("predict needs --output DIR (or a DavisWriter callback in the config)")
        if cfg.output is not None:
            if writer is not None:
                callbacks.remove(writer)
            writer = DavisWriter(cfg.output, overlays=cfg.overlays)
            callbacks.append(writer)
        if hasattr(self.datamodule, "skip_finished_in"):
            self.datamodule.skip_finished_in = str(writer.output)
        if cfg.reid is not None:
            self.model.hparams.reid = cfg.reid
        if not any(isinstance(c, PredictionMonitor) for c in callbacks):
            callbacks.append(PredictionMonitor())
        ordered = [c for kind in PREDICT_ORDER for c in callbacks if isinstance(c, kind)]
        others = [c for c in callbacks if not isinstance(c, PREDICT_ORDER)]
        callbacks[:] = others + ordered
        if cfg.finetune_steps is not None:
            self.model.hparams.finetune_steps = cfg.finetune_steps
        self.config_init["predict"]["return_predictions"] = False
        writer.settings = settings_digest(self.model, self.datamodule, cfg.get("ckpt_path"), writer.overlays)
        if hasattr(self.datamodule, "settings"):
            self.datamodule.settings = writer.settings


def settings_digest(model, datamodule, ckpt_path: str | None, overlays: bool = False) -> str:
    """A digest of what determines a prediction's outputs: the module's arguments (re-ID settings included), the
    settings they leave to the code's defaults (propagation, finetuning, the recovery's rules and the embedded re-ID
    provider's arguments, so that results of an older release are not taken for finished), the contents of its
    weights files, the flow settings and whether overlays are written (not where caches or logs go)."""
    hparams = dict(model.hparams)
    files = {key: _file_digest(weights_path(path)) for key, path in (("init_from", hparams.get("init_from")),
                                                                     ("ckpt", ckpt_path))
             if path and weights_path(path).is_file()}
    data = {k: getattr(datamodule, k, None) for k in ("flow_method", "flow_preset", "full_resolution")}
    defaults = {"settings": asdict(segmenter.settings_from_arguments(hparams)),
                "provider": {name: parameter.default for name, parameter
                             in inspect.signature(reid.AppearanceReID).parameters.items()}}
    record = {"model": hparams, "defaults": defaults, "files": files, "data": data, "overlays": overlays}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_configs(argv: list[str]) -> list[str]:
    """``-c NAME`` / ``--config NAME`` naming no file but a shipped config (``davis_lite``) -> its path."""
    out = list(argv)
    for k in range(len(out) - 1):
        if out[k] in ("-c", "--config") and not Path(out[k + 1]).exists() and "/" not in out[k + 1]:
            out[k + 1] = str(config_path(out[k + 1]))
    return out


def run_lightning_cli(argv: list[str]) -> VSReIDCLI:
    """Parse ``argv`` (``fit|validate|predict ...``) and run it; ``sys.argv`` is used when it holds the same."""
    resolved = shipped_configs(argv)
    args = None if resolved == sys.argv[1:] else resolved
    return VSReIDCLI(VSReIDModule, LightningDataModule, subclass_mode_data=True, args=args,
                     save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False)
