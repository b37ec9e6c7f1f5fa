"""``VSReIDModule``: MP2S training, one-step validation, online finetuning and sequence prediction in Lightning."""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info

from vsreid.data.crops import paste_back
from vsreid.engine.predictor import PatchPredictor, mirrored
from vsreid.engine.propagator import PropagationConfig, Propagator
from vsreid.models.checkpoints import EMA_PREFIX, PREFIX, load_network_weights
from vsreid.models.losses import lovasz_iou_loss
from vsreid.models.mp2s import MP2S, mp2s_param_groups, rgb_to_mp2s, set_bn_frozen
from vsreid.models.resnet_weights import load_backbone_weights

from .visuals import log_grid

IGNORE = 255


class VSReIDModule(LightningModule):
    """MP2S wrapped for ``fit`` (pretraining / online finetuning), ``validate`` and ``predict``.

    Args:
        backbone, output_stride, aspp_channels, pretrained, bn_momentum, dropout, prior_skip, refine_channels,
            refine_residual, boundary_band, residual_band, residual_threshold, guided_radius, guided_eps, guided_in_training: the
            network (see :class:`MP2S`).
        init_from: weights to start from: a Lightning checkpoint of this module or an original ``MP2S.pth.tar``.
        backbone_weights: an ImageNet ResNet state dict (torchvision or timm layout) for both streams of a ResNet
            MP2S, e.g. to pretrain the paper configuration (see :mod:`vsreid.models.resnet_weights`).
        optimizer: ``"sgd"`` (momentum 0.9, the original's policy) or ``"adamw"``; conv biases get 2x lr, no decay.
        lr, weight_decay, poly_power: base learning rate and the poly schedule ``lr * (1 - step/total)^power``.
        lovasz_weight: weight of the Lovász IoU loss added to the cross-entropy (0 = cross-entropy only), in
            training and online finetuning.
        freeze_bn: keep BN layers in eval mode with frozen affine parameters (small batches, finetuning).
        ema_decay: keep an exponential moving average of the network's weights and BN statistics (``net_ema``, decay
            ``min(ema_decay, (1 + step) / (4 + step))`` per optimizer step; 0 = off). When on, validation measures
            the average, prediction and online finetuning start from it, and checkpoints hand it to
            ``init_from`` / ``export-model`` as the network.
        image_log_every_n_steps: TensorBoard image grid interval during training (0 = never).
        crop_size, flip, box_enlarge, lost_ratio, max_flow_error, refine_iterations: propagation at predict time.
        predict_batch_size: crops per network pass at predict time.
        finetune_steps, finetune_lr, finetune_crop_size: per-sequence online finetuning inside ``predict`` (0 = off).
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        output_stride: int = 8,
        aspp_channels: int = 128,
        pretrained: bool = True,
        bn_momentum: float = 0.05,
        dropout: float = 0.1,
        prior_skip: bool = True,
        refine_channels: int = 0,
        refine_residual: bool = False,
        boundary_band: int = 0,
        residual_band: int = 0,
        residual_threshold: float = 20.0,
        guided_radius: int = 0,
        guided_eps: float = 1e-4,
        guided_in_training: bool = True,
        init_from: str | None = None,
        backbone_weights: str | None = None,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        poly_power: float = 0.9,
        lovasz_weight: float = 0.0,
        freeze_bn: bool = False,
        ema_decay: float = 0.0,
        image_log_every_n_steps: int = 100,
        crop_size: int = 321,
        flip: bool = True,
        box_enlarge: float = 0.15,
        lost_ratio: float = 10.0,
        max_flow_error: float = 100.0,
        refine_iterations: int = 5,
        predict_batch_size: int = 4,
        finetune_steps: int = 0,
        finetune_lr: float = 1e-4,
        finetune_crop_size: int = 257,
    ):
        super().__init__()
        if optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
        self.save_hyperparameters()
        self.net = MP2S(backbone=backbone, output_stride=output_stride, aspp_channels=aspp_channels,
                        pretrained=pretrained and init_from is None, bn_momentum=bn_momentum, dropout=dropout,
                        prior_skip=prior_skip, refine_channels=refine_channels, refine_residual=refine_residual,
                        boundary_band=boundary_band, residual_band=residual_band,
                        residual_threshold=residual_threshold, guided_radius=guided_radius, guided_eps=guided_eps,
                        guided_in_training=guided_in_training)
        if backbone_weights:
            report = load_backbone_weights(self.net, backbone_weights)
            rank_zero_info(f"{backbone_weights}: {report.loaded} tensors loaded; {len(report.kept)} keep their "
                           "initialisation")
        if init_from:
            load_network_weights(self.net, init_from, config=self.hparams)
        set_bn_frozen(self.net, freeze_bn)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.net_ema = copy.deepcopy(self.net).requires_grad_(False) if ema_decay else None
        self._val_iou: list[float] = []
        self._val_baseline: list[float] = []

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

    def propagation_config(self) -> PropagationConfig:
        h = self.hparams
        return PropagationConfig(crop_size=h.crop_size, box_enlarge=h.box_enlarge, lost_ratio=h.lost_ratio,
                                 max_flow_error=h.max_flow_error, refine_iterations=h.refine_iterations)

    def make_propagator(self, net: MP2S | None = None) -> Propagator:
        """A plain-PyTorch propagator around ``net`` (default: this module's network)."""
        predictor = PatchPredictor(net or self.inference_net, flip=self.hparams.flip,
                                   batch_size=self.hparams.predict_batch_size)
        return Propagator(predictor, self.propagation_config())

    # ------------------------------------------------------------------ training
    def criterion(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (+ ``lovasz_weight`` x Lovász IoU loss) of logits [N,2,S,S] for targets [N,S,S] (255 = void)."""
        target = target.long()
        if (target == IGNORE).all():
            return logits.sum() * 0.0
        loss = F.cross_entropy(logits, target, ignore_index=IGNORE)
        if self.hparams.lovasz_weight:
            fg = torch.softmax(logits.float(), 1)[:, 1]
            loss = loss + self.hparams.lovasz_weight * lovasz_iou_loss(fg, target, IGNORE)
        return loss

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

        Measures the network as ``predict`` runs it: in float32 even under mixed-precision training, and averaged with
        the mirrored pass when ``flip`` is set.
        """
        with torch.autocast(self.device.type, enabled=False):
            loss, logits = self._loss(batch)
            fg = torch.softmax(logits.float(), 1)[:, 1]
            if self.hparams.flip:
                flipped = mirrored(batch["image"], batch["flow"], batch["prior"], batch.get("residual"))
                fg = (fg + torch.softmax(self(*flipped).float(), 1)[:, 1].flip(2)) / 2
        self.log("val/loss", loss, batch_size=batch["image"].shape[0], sync_dist=True)
        fg = fg.cpu().numpy()
        for k in range(fg.shape[0]):
            gt = batch["target_full"][k].cpu().numpy()
            x1, y1, x2, y2 = batch["box"][k].tolist()
            pred = paste_back(fg[k], (x1, y1, x2, y2), gt.shape) > 0.5
            self._val_iou.append(_iou(pred, gt))
            self._val_baseline.append(_iou(batch["prior_full"][k].cpu().numpy() > 0.5, gt))
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
    def predict_step(self, batch: Any, batch_idx: int = 0, dataloader_idx: int = 0):
        from .predict import predict_sequence

        return predict_sequence(self, batch)

    def finetuned_copy(self, samples) -> MP2S:
        """A copy of the network finetuned for ``finetune_steps`` on first-frame ``samples`` (an iterable of batches).

        Works inside ``predict`` (under ``inference_mode`` or ``no_grad``): the copy is made with grad enabled.
        """
        h = self.hparams
        with torch.inference_mode(False), torch.enable_grad():
            net = copy.deepcopy(self.inference_net)
            set_bn_frozen(net, True)  # MP2S remembers it: train() below keeps BN in eval mode
            net.train()
            opt = torch.optim.AdamW(mp2s_param_groups(net, h.finetune_lr, 0.0), lr=h.finetune_lr)
            for _, batch in zip(range(h.finetune_steps), samples):
                batch = {k: torch.as_tensor(np.asarray(v)).clone().to(self.device) for k, v in batch.items()}
                logits = net(rgb_to_mp2s(batch["image"]), batch["flow"], batch["prior"], batch.get("residual"))
                loss = self.criterion(logits, batch["target"])
                opt.zero_grad()
                loss.backward()
                opt.step()
            net.eval()
        return net


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of a binary prediction with a ground truth holding 0/1 and 255 (void, ignored); 1 when both are empty."""
    valid = gt != IGNORE
    g = (gt == 1) & valid
    p = pred & valid
    union = np.count_nonzero(p | g)
    return 1.0 if union == 0 else np.count_nonzero(p & g) / union
