"""``VSReIDModule``: MP2S training, one-step validation, online finetuning and sequence prediction in Lightning."""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info

from vsreid.data.crops import paste_back
from vsreid.data.davis import DavisRoot
from vsreid.data.labels import VOID
from vsreid.engine.predictor import mirrored, with_prior
from vsreid.engine.reid import AppearanceReID, OriginalSearchResults, ReIDProvider
from vsreid.engine.segmenter import SegmentSettings, segment_sequence, settings_from_arguments
from vsreid.models.checkpoints import EMA_PREFIX, PREFIX, load_network_weights, network_arguments, read_weights
from vsreid.models.losses import segmentation_loss
from vsreid.models.mp2s import MP2S, mp2s_param_groups, rgb_to_mp2s, set_bn_frozen
from vsreid.models.resnet_weights import load_backbone_weights

from .predict import PredictedSequence, SequenceItem
from .visuals import log_grid


class VSReIDModule(LightningModule):
    """MP2S wrapped for ``fit`` (pretraining / online finetuning), ``validate`` and ``predict``.

    Network and predict arguments left unset (None) take what ``init_from`` records (its network configuration and,
    for exported weights, the predict settings its numbers were measured with), else the defaults of :class:`MP2S` and
    of :class:`vsreid.engine.segmenter.SegmentSettings` (the paper's configuration); configs say what differs.

    Args:
        backbone: MP2S stream backbone, ``efficientnet_lite0`` (CPU model) or ``resnet101`` (the paper's).
        output_stride: backbone output stride, 8 (paper) or 16.
        aspp_channels: ASPP width (512 in the paper).
        pretrained: ImageNet weights in the image stream of ``efficientnet_lite0`` (shipped in a package).
        bn_momentum: BatchNorm momentum, PyTorch convention (the original's 0.95 is 0.05 here).
        dropout: dropout before the classifiers.
        prior_skip: a learnt 1x1 conv of the prior added to the logits (CPU model).
        refine_channels: width of the boundary refiner to stride 2 (0 = none; CPU model).
        refine_residual: the refiner also sees the warp's photometric residual (changes the weights' shapes).
        boundary_band: the network may change the prior only within this many crop pixels of its boundary (0 = off).
        residual_band: where the warp's residual exceeds residual_threshold, the band widens to this (0 = off).
        residual_threshold: residual (0-255) above which the warp counts as failed.
        guided_radius: radius of the colour guided filter of the foreground probability (0 = off).
        guided_eps: regularisation of the guided filter.
        guided_in_training: apply the guided filter in training too (else at inference only).
        init_from: weights to start from: shipped weights by name (``lite0``), an exported weights file, a Lightning
            checkpoint of this module or an original ``MP2S.pth.tar``.
        backbone_weights: an ImageNet ResNet state dict (torchvision or timm layout) for both ResNet streams.
        optimizer: ``sgd`` (momentum 0.9, the original's policy) or ``adamw``; conv biases get 2x lr, no decay.
        lr: base learning rate of the poly schedule.
        weight_decay: weight decay of conv weights and BN parameters.
        poly_power: power of the poly schedule ``lr * (1 - step / total) ** power``.
        backbone_lr_scale: learning-rate factor of the image backbone's own layers (all but its prior input
            ``prob_encode``), which start from ImageNet weights (1 = the same rate as the rest).
        lovasz_weight: weight of the Lovász IoU loss added to the cross-entropy, in training and online finetuning
            (None: what ``init_from`` records, else 0).
        freeze_bn: keep BN layers in eval mode with frozen affine parameters (small batches, finetuning).
        ema_decay: keep a moving average of the weights (0 = off) that validation, prediction and export use.
        image_log_every_n_steps: TensorBoard image grid interval during training (0 = never).
        crop_size: side of the square crops the network sees at predict time (449 in the paper).
        flip: average each prediction with the mirrored pass (test-time augmentation).
        box_enlargement: crop box enlargement per side, a fraction of the object's box (0.15).
        lost_ratio: an object is lost below 1/lost_ratio of its first-frame area (10).
        max_flow_error: forward-backward consistency threshold of the warp, pixels (100).
        refine_iterations: network passes at a re-identification, alone then with neighbours (5).
        predict_batch_size: crops per network pass at predict time.
        finetune_steps: online finetuning steps on each sequence's first frame inside predict (0 = off).
        finetune_lr: learning rate of online finetuning.
        finetune_crop_size: crop side of the online finetuning samples.
        finetune_batch_size: samples per online finetuning step.
        finetune_scope: what online finetuning trains (``all``, ``image``, ``image_s8``, ``heads``; see
            :data:`vsreid.engine.finetune.FINETUNE_SCOPES`).
        finetune_precision: arithmetic of online finetuning: ``float32``, ``bfloat16`` (autocast; depthwise
            convolutions in float32 on the CPU) or ``auto`` (bfloat16 where the device computes it natively).
        inference_precision: arithmetic of prediction's network passes, the same choices (bfloat16 autocast).
        prior_weight: share of the prior crop mixed into the network's P(fg) at predict time and in validation's
            one-step IoU (0 = the network's alone; see :class:`vsreid.engine.predictor.PatchPredictor`).
        reid: apply re-ID recovery after the forward pass (``--reid false`` switches it off).
        reid_provider: ``appearance`` (embedded, nothing precomputed) or ``original`` (the original's pickles).
        reid_split: the split the original pickles were made for (their frame counter runs over it).
        reid_score_threshold: minimum score of a re-identification candidate (the original's 0.5).
        reid_occlusion_threshold: a candidate overlapping a visible object's box more is rejected (0.3).
        reid_max_rounds: cap on accepted re-identifications per sequence (None = until no candidate qualifies).
        reid_drift_threshold, reid_drift_restore, reid_undo_failed, reid_max_failures, reid_max_jump,
            reid_jump_across_gaps, reid_require_recurrence, reid_skip_failed_chains, reid_views_from_recoveries,
            reid_views_need_track, reid_keep_repeated, reid_confirm_kept, reid_recheck_neighbours: the recovery's
            additions to the original's rules (drift test, putting back dropped predictions re-ID finds nothing for,
            undoing failed re-initialisations, searching an object no more after that many undone ones, undoing
            re-identifications whose track jumps from the object's existing one, ``.inf`` switching that off, and
            whether that test also spans the frames where the new track is missing next to the existing one; accepting
            only candidates that recur in a neighbouring frame; not trying again, in that many frames each way, the
            candidates that continue an undone one frame by frame; whether a re-identification's frames also teach the
            provider views of the object, and only when that many of its re-propagated frames hold the object after the
            drift drops; whether a dropped prediction kept to be put back survives a re-propagation's drop in the same
            place; the share of a candidate inside such a kept prediction's box that confirms the prediction instead of
            re-initialising; giving a neighbour a re-propagation spoiled its mask back); see
            :class:`vsreid.engine.reid.recovery.RecoveryConfig` for each and its default.
    """

    def __init__(
        self,
        backbone: str | None = None,
        output_stride: int | None = None,
        aspp_channels: int | None = None,
        pretrained: bool | None = None,
        bn_momentum: float | None = None,
        dropout: float | None = None,
        prior_skip: bool | None = None,
        refine_channels: int | None = None,
        refine_residual: bool | None = None,
        boundary_band: int | None = None,
        residual_band: int | None = None,
        residual_threshold: float | None = None,
        guided_radius: int | None = None,
        guided_eps: float | None = None,
        guided_in_training: bool | None = None,
        init_from: str | None = None,
        backbone_weights: str | None = None,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        poly_power: float = 0.9,
        backbone_lr_scale: float = 1.0,
        lovasz_weight: float | None = None,
        freeze_bn: bool = False,
        ema_decay: float = 0.0,
        image_log_every_n_steps: int = 100,
        crop_size: int | None = None,
        flip: bool | None = None,
        box_enlargement: float | None = None,
        lost_ratio: float | None = None,
        max_flow_error: float | None = None,
        refine_iterations: int | None = None,
        predict_batch_size: int | None = None,
        finetune_steps: int | None = None,
        finetune_lr: float | None = None,
        finetune_crop_size: int | None = None,
        finetune_batch_size: int | None = None,
        finetune_scope: str | None = None,
        finetune_precision: str | None = None,
        inference_precision: str | None = None,
        prior_weight: float | None = None,
        reid: bool = True,
        reid_provider: str = "appearance",
        reid_split: str | None = None,
        reid_score_threshold: float | None = None,
        reid_occlusion_threshold: float | None = None,
        reid_max_rounds: int | None = None,
        reid_drift_threshold: float | None = None,
        reid_drift_restore: float | None = None,
        reid_undo_failed: bool | None = None,
        reid_max_failures: int | None = None,
        reid_max_jump: float | None = None,
        reid_jump_across_gaps: bool | None = None,
        reid_require_recurrence: bool | None = None,
        reid_skip_failed_chains: int | None = None,
        reid_views_from_recoveries: bool | None = None,
        reid_views_need_track: int | None = None,
        reid_keep_repeated: bool | None = None,
        reid_confirm_kept: float | None = None,
        reid_recheck_neighbours: bool | None = None,
    ):
        super().__init__()
        if optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
        if reid_provider not in ("appearance", "original"):
            raise ValueError(f"reid_provider must be 'appearance' or 'original', got {reid_provider!r}")
        if reid_provider == "original" and not reid_split:
            raise ValueError("reid_provider 'original' needs reid_split=<split name> (the pickles are indexed over a "
                             "split)")
        self.save_hyperparameters()
        weights = read_weights(init_from) if init_from else None
        # what the weights file records fills the arguments not given, so configs say what differs
        if weights is not None:
            for key, value in weights.arguments().items():
                if key in self.hparams and self.hparams[key] is None:
                    self.hparams[key] = value
        self.net = MP2S(**network_arguments(self.hparams), pretrained=bool(pretrained) and init_from is None)
        if backbone_weights:
            report = load_backbone_weights(self.net, backbone_weights)
            rank_zero_info(f"{backbone_weights}: {report.loaded} tensors loaded; {len(report.kept)} keep their "
                           "initialisation")
        if weights is not None:
            load_network_weights(self.net, weights, config=self.hparams)
        set_bn_frozen(self.net, freeze_bn)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.net_ema = copy.deepcopy(self.net).requires_grad_(False) if ema_decay else None
        self._val_iou: list[float] = []
        self._val_baseline: list[float] = []
        self._original_reid: dict[str, OriginalSearchResults] = {}
        self.segment_settings()  # a wrong predict setting fails here, not after a first sequence

    # ------------------------------------------------------------------ network
    def forward(self, image: torch.Tensor, flow: torch.Tensor, prior: torch.Tensor,
                residual: torch.Tensor | None = None) -> torch.Tensor:
        """image (N,3,S,S) RGB in [0,1], flow (N,2,S,S) px, prior (N,1,S,S) in [0,1], residual (N,1,S,S) 0-255 or
        None -> logits (N,2,S,S)."""
        return (self.net if self.training else self.inference_net)(rgb_to_mp2s(image), flow, prior, residual)

    @property
    def inference_net(self) -> MP2S:
        """The network that validation, prediction and finetuning use: the weight average when kept."""
        return self.net if self.net_ema is None else self.net_ema

    def segment_settings(self) -> SegmentSettings:
        """The engine's settings for one sequence: this module's predict arguments where given, the engine's
        defaults (:class:`SegmentSettings`, the one place they live) for the rest."""
        return settings_from_arguments(self.hparams)

    def reid_provider(self, root: str) -> ReIDProvider | None:
        """The re-ID provider for a sequence of DAVIS root ``root`` (None when re-ID is off); the original pickles
        are read once per root."""
        h = self.hparams
        if not h.reid:
            return None
        if h.reid_provider == "appearance":
            return AppearanceReID(device=self.device)
        if root not in self._original_reid:
            self._original_reid[root] = OriginalSearchResults.from_davis_root(DavisRoot(root), h.reid_split)
        return self._original_reid[root]

    # ------------------------------------------------------------------ training
    def criterion(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """:func:`vsreid.models.losses.segmentation_loss` with this module's ``lovasz_weight``."""
        return segmentation_loss(logits, target, self.hparams.lovasz_weight or 0.0)

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["image"], batch["flow"], batch["prior"], batch.get("residual"))
        return self.criterion(logits, batch["target"]), logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, logits = self._loss(batch)
        n = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=n)
        every = self.hparams.image_log_every_n_steps
        if every and self.global_step % every == 0:
            log_grid(self.logger, "train/samples", batch, logits, self.global_step)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.net_ema is not None:
            step = self.global_step  # optimizer steps taken so far, this one included
            decay = min(self.hparams.ema_decay, (1 + step) / (4 + step))
            ema, cur = self.net_ema.state_dict(), self.net.state_dict()
            for k, v in ema.items():  # state_dict tensors share storage with the modules
                if v.is_floating_point():
                    v.lerp_(cur[k], 1.0 - decay)
                else:
                    v.copy_(cur[k])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Fit a checkpoint with or without ``net_ema.*`` weights to whether this module keeps an average."""
        state = checkpoint["state_dict"]
        has_ema = any(k.startswith(EMA_PREFIX) for k in state)
        if self.net_ema is None and has_ema:
            for k in [k for k in state if k.startswith(EMA_PREFIX)]:
                state[PREFIX + k[len(EMA_PREFIX):]] = state.pop(k)
        elif self.net_ema is not None and not has_ema:
            state.update({EMA_PREFIX + k[len(PREFIX):]: v for k, v in list(state.items()) if k.startswith(PREFIX)})

    def configure_optimizers(self):
        h = self.hparams
        groups = mp2s_param_groups(self.net, h.lr, h.weight_decay)
        if h.backbone_lr_scale != 1.0:
            groups = scaled_groups(groups, self.net.backbone, h.backbone_lr_scale)
        groups = [g for g in groups if any(p.requires_grad for p in g["params"])]
        if h.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=h.lr, momentum=0.9)
        else:
            opt = torch.optim.AdamW(groups, lr=h.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self.trainer else 1
        if not math.isfinite(total):
            raise ValueError("the poly schedule needs a finite length: set trainer.max_steps or max_epochs")
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total) ** h.poly_power)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ one-step validation
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """One-step propagation from the ground truth: full-frame IoU of the network vs. copying the warped prior.

        Measures the network as ``predict`` runs it: in float32 even under mixed-precision training, averaged with
        the mirrored pass when ``flip`` is set, the prior mixed in by ``prior_weight``.
        """
        settings = self.segment_settings()
        with torch.autocast(self.device.type, enabled=False):
            loss, logits = self._loss(batch)
            fg = torch.softmax(logits.float(), 1)[:, 1]
            if settings.flip:
                flipped = mirrored(batch["image"], batch["flow"], batch["prior"], batch.get("residual"))
                fg = (fg + torch.softmax(self(*flipped).float(), 1)[:, 1].flip(2)) / 2
            fg = with_prior(fg, batch["prior"][:, 0].float(), settings.prior_weight)
        self.log("val/loss", loss, batch_size=batch["image"].shape[0], sync_dist=True)
        fg = fg.cpu().numpy()
        for k in range(fg.shape[0]):
            gt = batch["target_full"][k].cpu().numpy()
            x1, y1, x2, y2 = batch["box"][k].tolist()
            pred = paste_back(fg[k], (x1, y1, x2, y2), gt.shape) > 0.5
            self._val_iou.append(mask_iou(pred, gt))
            self._val_baseline.append(mask_iou(batch["prior_full"][k].cpu().numpy() > 0.5, gt))
        if batch_idx == 0:
            log_grid(self.logger, "val/samples", batch, logits, self.global_step)

    def on_validation_epoch_end(self) -> None:
        iou = torch.tensor(self._val_iou, dtype=torch.float64, device=self.device)
        base = torch.tensor(self._val_baseline, dtype=torch.float64, device=self.device)
        self._val_iou, self._val_baseline = [], []
        stats = torch.stack([iou.sum(), base.sum(), torch.tensor(float(len(iou)), dtype=torch.float64,
                                                                  device=self.device)])
        stats = self.all_gather(stats).reshape(-1, 3).sum(0) if self.trainer.world_size > 1 else stats
        if stats[2] == 0:
            return
        mean_iou, mean_base = (stats[0] / stats[2]).item(), (stats[1] / stats[2]).item()
        self.log_dict({"val/iou": mean_iou, "val/iou_copy_prior": mean_base, "val/iou_gain": mean_iou - mean_base},
                      prog_bar=True, sync_dist=False, rank_zero_only=True)

    def on_fit_start(self) -> None:
        logger = self.logger
        if logger is not None and hasattr(logger, "log_hyperparams"):
            logger.log_hyperparams(self.hparams, {"val/iou": 0.0})

    # ------------------------------------------------------------------ predict (one whole sequence per item)
    def on_predict_start(self) -> None:
        """Read the original re-ID pickles now (their length is checked against the split), not after the first
        sequence was computed."""
        root = getattr(self.trainer.datamodule, "root", None) if self.trainer else None
        if self.hparams.reid and self.hparams.reid_provider == "original" and root is not None:
            self.reid_provider(str(DavisRoot(root).root))

    def predict_step(self, item: SequenceItem, batch_idx: int = 0, dataloader_idx: int = 0) -> PredictedSequence:
        """One whole sequence through the engine (:func:`vsreid.engine.segmenter.segment_frames`): finetuning of a
        copy of the inference network when ``finetune_steps`` > 0, the forward pass, re-ID."""
        root, source = item.open()
        info = root.validate(item.sequence)
        first = root.read_annotation(item.sequence, info.frame_stems[0])
        result = segment_sequence(self.inference_net, source, first, info.object_ids, self.segment_settings(),
                                  self.reid_provider(item.root), progress=True, position=self.global_rank)
        return PredictedSequence(item, info, source, result)


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of a binary prediction with a ground truth holding 0/1 and ``VOID`` (left out); 1 when both are empty."""
    valid = gt != VOID
    g = (gt == 1) & valid
    p = pred & valid
    union = np.count_nonzero(p | g)
    return 1.0 if union == 0 else np.count_nonzero(p & g) / union


def scaled_groups(groups: list[dict], backbone: torch.nn.Module, scale: float) -> list[dict]:
    """``groups`` with the parameters of ``backbone`` (but for its prior input ``prob_encode``, which starts from
    zero) moved into groups of their own whose learning rate is ``scale`` x their group's."""
    exempt = getattr(backbone, "prob_encode", None)
    scaled = {id(p) for p in backbone.parameters()} - {id(p) for p in (exempt.parameters() if exempt else ())}
    out = []
    for g in groups:
        for suffix, in_backbone in (("", False), (" (backbone)", True)):
            params = [p for p in g["params"] if (id(p) in scaled) == in_backbone]
            if params:
                out.append({**g, "name": g["name"] + suffix, "params": params,
                            "lr": g["lr"] * (scale if in_backbone else 1.0)})
    return out
