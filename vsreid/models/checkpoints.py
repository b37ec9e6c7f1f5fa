"""Reading network weights from Lightning checkpoints of ``VSReIDModule`` or original ``MP2S.pth.tar`` files."""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vsreid.resources import weights_path

from .mp2s import MP2S
from .safe_load import load_checkpoint_file

PREFIX = "net."
EMA_PREFIX = "net_ema."


@dataclass(frozen=True)
class WeightsFile:
    """One load of a weights file: ``state`` (the MP2S state dict), ``network`` (the MP2S arguments recorded with it,
    None when absent: an original checkpoint) and ``predict`` (the predict settings an exported file records, keys of
    :data:`PREDICT_KEYS`; None when absent)."""

    path: Path
    state: dict[str, torch.Tensor]
    network: dict[str, Any] | None
    predict: dict[str, Any] | None
    hyper_parameters: dict[str, Any] = field(default_factory=dict)

    def arguments(self) -> dict[str, Any]:
        """The module arguments the file records: network configuration and predict settings (a Lightning
        checkpoint's own arguments), an exported file's predict record over them (the settings, bands included, its
        numbers were measured with); {} for an original checkpoint."""
        given = {**(self.network or {}), **self.hyper_parameters}
        return {**{k: v for k, v in given.items() if k in NETWORK_KEYS + PREDICT_KEYS and v is not None},
                **(self.predict or {})}


def read_weights(path: str | Path) -> WeightsFile:
    """Read ``path`` once: a Lightning checkpoint (keys ``net.*``; a kept weight average ``net_ema.*`` is taken
    instead), an exported weights file or an original checkpoint. ``path`` may name shipped weights (``"lite0"``)."""
    path = weights_path(path)
    ckpt = load_checkpoint_file(path)
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a Lightning checkpoint or an original MP2S.pth.tar (a dict with "
                         "'state_dict')")
    prefix = EMA_PREFIX if any(k.startswith(EMA_PREFIX) for k in state) else PREFIX
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    hyper = ckpt.get("hyper_parameters") if isinstance(ckpt.get("hyper_parameters"), dict) else {}
    config = ckpt.get("network") or hyper
    predict = ckpt.get("predict")
    return WeightsFile(Path(path), state, network_arguments(config) if config else None,
                       {k: v for k, v in predict.items() if k in PREDICT_KEYS} if isinstance(predict, dict) else None,
                       dict(hyper))


def network_arguments(given: Mapping[str, Any]) -> dict[str, Any]:
    """The MP2S arguments of :data:`NETWORK_KEYS`: those ``given`` (None = not given), MP2S's defaults for the
    rest (the one place network defaults live)."""
    defaults = {k: p.default for k, p in inspect.signature(MP2S.__init__).parameters.items() if k in NETWORK_KEYS}
    return {**defaults, **{k: given[k] for k in NETWORK_KEYS if given.get(k) is not None}}


def load_network_weights(net: nn.Module, weights: WeightsFile, config: dict | None = None) -> None:
    """Load ``weights`` into ``net`` strictly (back-filling only ``num_batches_tracked``); errors name the file.

    With ``config`` (the arguments ``net`` was built from), first raise ``ValueError`` when the network recorded in
    ``path`` used a setting of :data:`FUNCTION_KEYS` that ``config`` changes (e.g. a model trained with a
    guided-filter layer loaded into a network without it: the weights fit, the outputs do not). Settings recorded as
    off (0, False) may be switched on: that is a deliberate change, e.g. the guided filter on a model trained without
    it. Original checkpoints record no arguments: nothing to check.
    """
    path, recorded = weights.path, weights.network
    if config is not None:
        config = network_arguments(config)
        differ = [f"{k}={recorded[k]!r} (here {config.get(k)!r})" for k in FUNCTION_KEYS
                  if (recorded or {}).get(k) and config.get(k) != recorded[k]]
        if differ:
            raise ValueError(f"{path}: recorded with {', '.join(differ)}; set the same network arguments")
    _load_state(net, dict(weights.state), path)


def _load_state(net: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    expected = net.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    state = {k: v.to(expected[k].dtype) if k in expected and v.is_floating_point() else v for k, v in state.items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = "; ".join(line.strip() for line in str(err).splitlines()[:3])
        raise ValueError(f"{path}: weights do not fit this network configuration ({detail})") from None


#: MP2S arguments that change what a network with given weights computes.
FUNCTION_KEYS = ("backbone", "output_stride", "aspp_channels", "prior_skip", "refine_channels", "refine_residual",
                 "guided_radius", "guided_eps")
#: MP2S arguments recorded in exported weights files and Lightning checkpoints. The bands (``boundary_band``,
#: ``residual_band``, ``residual_threshold``) have no weights and are a deliberate inference choice (a wider band lets
#: a finetuned network repair masks that drifted further), so a network may run with other bands than it was trained
#: with; the others only affect training.
NETWORK_KEYS = FUNCTION_KEYS + ("boundary_band", "residual_band", "residual_threshold", "bn_momentum", "dropout",
                                "guided_in_training")


#: Predict arguments an exported weights file records (``predict``): the settings its numbers were measured with.
#: The bands are network arguments without weights that prediction may widen (see ``NETWORK_KEYS``).
PREDICT_KEYS = ("crop_size", "flip", "box_enlargement", "lost_ratio", "max_flow_error", "refine_iterations",
                "predict_batch_size", "finetune_steps", "finetune_lr", "finetune_crop_size",
                "finetune_batch_size", "finetune_scope", "finetune_precision", "lovasz_weight",
                "inference_precision", "prior_weight", "reid",
                "reid_score_threshold", "reid_occlusion_threshold", "reid_max_rounds", "reid_drift_threshold",
                "reid_drift_restore", "reid_undo_failed", "reid_max_failures", "reid_max_jump", "reid_jump_across_gaps",
                "reid_require_recurrence", "reid_skip_failed_chains", "reid_views_from_recoveries",
                "reid_views_need_track", "reid_keep_repeated", "reid_confirm_kept", "reid_recheck_neighbours",
                "flow_preset", "boundary_band", "residual_band", "residual_threshold")
BAND_KEYS = ("boundary_band", "residual_band", "residual_threshold")


def load_network(path: str | Path | WeightsFile, bands: dict | None = None) -> MP2S:
    """The MP2S stored in ``path`` (or an already read :class:`WeightsFile`), built from the configuration recorded
    with it, in eval mode; ``bands`` may set other values of :data:`BAND_KEYS` (no weights depend on them).

    Reads exported weights files (``vsreid export-model``, e.g. ``checkpoints/vsreid_lite0.pt``, which record
    ``network``) and Lightning checkpoints of ``VSReIDModule`` (``hyper_parameters``). Raises ``ValueError`` naming the
    file when neither is recorded (for an original ``MP2S.pth.tar`` use ``MP2S.from_original``).
    """
    weights = path if isinstance(path, WeightsFile) else read_weights(path)
    path, config = weights.path, weights.network
    if not config:
        raise ValueError(f"{path}: no network configuration recorded (expected an exported weights file or a "
                         "Lightning checkpoint of VSReIDModule)")
    net = MP2S(**{**config, **{k: v for k, v in (bands or {}).items() if k in BAND_KEYS}}, pretrained=False)
    _load_state(net, dict(weights.state), path)
    return net.eval()
