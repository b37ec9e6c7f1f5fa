"""Export the network of a Lightning checkpoint as a compact weights file (half precision by default).

The file holds {'state_dict', 'network', 'source'} and is what `--model.init_from` reads, e.g. the shipped
checkpoints/vsreid_lite0.pt. Half precision halves the size; weights are cast back to float32 when loaded.
--predict-config CONFIG.yaml records that predict config's settings in the file ('predict': crop size, flip, bands,
finetuning, re-ID, flow preset), so `Segmenter.from_pretrained(FILE)` runs with the settings its numbers were
measured with.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

from vsreid.data.atomic import atomic_path
from vsreid.data.errors import DataError
from vsreid.models.checkpoints import PREDICT_KEYS, read_weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a Lightning checkpoint of VSReIDModule (.ckpt)")
    parser.add_argument("output", type=Path, help="the weights file to write (.pt)")
    parser.add_argument("--float32", action="store_true", help="keep float32 instead of half precision")
    parser.add_argument("--predict-config", type=Path, help="a predict config whose settings the file records")


def predict_record(config: Path) -> dict:
    """The :data:`~vsreid.models.checkpoints.PREDICT_KEYS` a predict config sets (model section, and the data
    section's flow preset)."""
    try:
        cfg = yaml.safe_load(config.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise DataError(config, f"unreadable predict config ({e})") from None
    model = cfg.get("model") or {}
    data = (cfg.get("data") or {}).get("init_args") or {}
    record = {k: v for k, v in model.items() if k in PREDICT_KEYS}
    if "flow_preset" in data:
        record["flow_preset"] = data["flow_preset"]
    return record


def export(checkpoint: Path, output: Path, half: bool = True, predict_config: Path | None = None) -> Path:
    """Write the network of ``checkpoint`` to ``output``; with ``predict_config``, record the predict settings it ran
    with: what ``checkpoint`` records (its arguments, or an exported file's predict record), the config's over them."""
    weights = read_weights(checkpoint)
    state, network = weights.state, weights.network
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    content = {"state_dict": state, "network": network or {}, "source": checkpoint.name}
    if predict_config is not None:
        recorded = {k: v for k, v in weights.arguments().items() if k in PREDICT_KEYS}
        content["predict"] = {**recorded, **predict_record(predict_config)}
    with atomic_path(output) as tmp:
        torch.save(content, tmp)
    return output


def run(args: argparse.Namespace) -> int:
    try:
        path = export(args.checkpoint, args.output, half=not args.float32, predict_config=args.predict_config)
    except ValueError as err:
        print(f"vsreid export-model: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0
