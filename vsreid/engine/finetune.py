"""Online finetuning: a copy of the network trained for a few steps on a sequence's annotated first frame."""
from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from vsreid.data.samples import FirstFrameSamples
from vsreid.models.losses import segmentation_loss
from vsreid.models.mp2s import mp2s_param_groups, rgb_to_mp2s, set_bn_frozen

from .source import SequenceSource


def first_frame_batches(source: SequenceSource, crop_size: int, steps: int, batch_size: int = 4,
                        seed: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches of augmented samples of the sequence's first frame (deformed priors; see
    :class:`vsreid.data.samples.FirstFrameSamples`), the same for the same sequence and seed."""
    samples = FirstFrameSamples(source.root, [source.seq], source.flow_cache, size=crop_size,
                                samples_per_epoch=batch_size * max(1, steps), seed=seed)
    while True:
        for start in range(0, len(samples), batch_size):
            items = [samples[k] for k in range(start, min(len(samples), start + batch_size))]
            yield {key: torch.from_numpy(np.stack([it[key] for it in items])) for key in items[0]}


def finetuned_copy(net: nn.Module, batches: Iterable[dict], steps: int, lr: float, lovasz_weight: float = 0.0,
                   seed: int = 0) -> nn.Module:
    """A copy of MP2S ``net`` trained for ``steps`` AdamW steps (learning rate ``lr``, BN frozen) on ``batches``
    (dicts of image, flow, prior, target tensors as the samples give them), in eval mode. ``net`` is left as it was;
    works under ``inference_mode``/``no_grad`` (the copy is trained with grad enabled). Dropout draws from its own
    random stream seeded with ``seed``, so a sequence gets the same copy whatever ran before it in the process."""
    device = next(net.parameters()).device
    devices = [device] if device.type == "cuda" else []
    with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        tuned = copy.deepcopy(net)
        set_bn_frozen(tuned, True)  # MP2S remembers it: train() below keeps BN in eval mode
        tuned.train()
        opt = torch.optim.AdamW(mp2s_param_groups(tuned, lr, 0.0), lr=lr)
        for _, batch in zip(range(steps), batches):
            batch = {k: torch.as_tensor(np.asarray(v)).clone().to(device) for k, v in batch.items()}
            logits = tuned(rgb_to_mp2s(batch["image"]), batch["flow"], batch["prior"], batch.get("residual"))
            loss = segmentation_loss(logits, batch["target"], lovasz_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)  # nothing of training outlives it: gradients and optimizer state freed
        del opt
    return tuned.eval().requires_grad_(False)
