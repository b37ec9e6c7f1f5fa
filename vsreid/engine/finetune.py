"""Online finetuning: a copy of the network trained for a few steps on a sequence's annotated first frame."""
from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from vsreid.data.labels import VOID
from vsreid.data.samples import FirstFrameSamples
from vsreid.models.frozen_bn import batchnorm_in_weights
from vsreid.models.inference_graph import probe_mp2s
from vsreid.models.losses import segmentation_loss
from vsreid.models.mixed_precision import float32_depthwise, resolve_precision
from vsreid.models.mp2s import mp2s_param_groups, rgb_to_mp2s, set_bn_frozen

from .cpu_split import run_split, split_ways
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


#: What online finetuning trains, mapped to the MP2S parts it keeps as they are: ``all`` of it; ``image``: all but the
#: flow backbone; ``image_s8``: also keeps the image stream's layers below stride 8 (its high-resolution layers; the
#: refiner then reads fixed stride-2 and 4 features); ``heads``: the ASPPs, classifiers, prior skip and refiner over
#: both backbones. A kept part needs no backward pass. ``backbone@S`` stands for the image backbone's layers below
#: stride S (EfficientNet-Lite0 only).
FINETUNE_SCOPES = {"all": (), "image": ("flow_backbone",), "image_s8": ("flow_backbone", "backbone@8"),
                   "heads": ("backbone", "flow_backbone")}


def kept_parts(net: nn.Module, scope: str) -> list[nn.Module]:
    """The modules of MP2S ``net`` that finetuning with ``scope`` leaves as they are."""
    check_scope(scope)
    parts = []
    for name in FINETUNE_SCOPES[scope]:
        path, _, stride = name.partition("@")
        module = net.get_submodule(path)
        if stride and not hasattr(module, "layers_below"):
            raise ValueError(f"finetune_scope {scope!r} needs an efficientnet_lite0 image backbone")
        parts += module.layers_below(int(stride)) if stride else [module]
    return parts


def check_scope(scope: str) -> None:
    """ValueError unless ``scope`` is a key of :data:`FINETUNE_SCOPES`."""
    if scope not in FINETUNE_SCOPES:
        raise ValueError(f"finetune_scope {scope!r}: expected one of {tuple(FINETUNE_SCOPES)}")


#: Samples per backward pass: a step's batch is run in parts of this many and their gradients summed in part order
#: (the same step, as BN is frozen), so the autograd buffers held at once are those of one sample per CPU thread
#: (about 0.2 GB for the Lite network's image stream at 321 px) whatever the batch size; one sample per pass costs no
#: more time per step than two (``bench/bench_speed.py``). On the CPU the parts run at once, one per torch thread
#: (:mod:`vsreid.engine.cpu_split`).
BACKWARD_SAMPLES = 1

#: Memory order of the finetuned copy's weights (and so of its convolutions): channels_last steps are x1.16 faster
#: than NCHW on the 2-core CPU (``bench/bench_speed.py --sections finetune``), the same training up to float rounding.
MEMORY_FORMAT = torch.channels_last


class _DrawnDropout2d(nn.Module):
    """``nn.Dropout2d`` whose noise the training loop drew beforehand for the part the calling thread runs (see
    :func:`_draw_noise`): the same draws as one sample after another, whichever thread runs which part."""

    local = threading.local()

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.local.noise.pop(0) if self.training else x


def _draw_noise(p: float, shapes: list[tuple[int, int]], device: torch.device) -> list[torch.Tensor]:
    """The noise ``nn.Dropout2d(p)`` draws from the default generator for inputs of (N, C) ``shapes`` in turn:
    [N,C,1,1] of 0 and 1/(1-p)."""
    return [torch.empty(n, c, 1, 1, device=device).bernoulli_(1 - p).div_(1 - p) for n, c in shapes]


def _dropout_channels(net: nn.Module) -> list[int]:
    """The channels of the input of each of MP2S ``net``'s ``dropout`` calls in one forward pass, in order."""
    channels = []
    hook = net.dropout.register_forward_pre_hook(lambda m, inputs: channels.append(inputs[0].shape[1]))
    training = net.training
    try:
        with torch.no_grad():
            probe_mp2s(net.eval())
    finally:
        hook.remove()
        net.train(training)
    return channels


def finetuned_copy(net: nn.Module, batches: Iterable[dict], steps: int, lr: float, lovasz_weight: float = 0.0,
                   seed: int = 0, scope: str = "all", precision: str = "float32") -> nn.Module:
    """A copy of MP2S ``net`` trained for ``steps`` AdamW steps (learning rate ``lr``, BN frozen; the parts of
    :data:`FINETUNE_SCOPES` ``scope``) on ``batches`` (dicts of image, flow, prior, target tensors as the samples give
    them), in eval mode; each batch runs in parts of :data:`BACKWARD_SAMPLES`. ``net`` is left as it was; works
    under ``inference_mode``/``no_grad`` (the copy is trained with grad enabled). Frozen BN layers train inside the
    convolutions' weights (:mod:`vsreid.models.frozen_bn`). Dropout draws from its own random stream seeded with
    ``seed``, in sample order before a step's parts run, so a sequence gets the same copy whatever ran before it in
    the process and whichever thread runs which part. ``precision`` (:data:`vsreid.models.mixed_precision.PRECISIONS`):
    ``bfloat16`` runs the forward passes under bfloat16 autocast, depthwise convolutions in float32 on the CPU
    (weights, gradients and optimizer in float32); ``auto`` where the device computes bfloat16 natively."""
    check_scope(scope)
    device = next(net.parameters()).device
    bfloat16 = resolve_precision(precision, device) == "bfloat16"
    devices = [device] if device.type == "cuda" else []
    with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=devices):
        tuned = copy.deepcopy(net).eval().to(memory_format=MEMORY_FORMAT)
        set_bn_frozen(tuned, True)  # MP2S remembers it: train() below keeps BN in eval mode
        depthwise = float32_depthwise(tuned) if bfloat16 and device.type == "cpu" else contextlib.nullcontext()
        with batchnorm_in_weights(tuned), depthwise:
            _train(tuned, batches, steps, lr, lovasz_weight, seed, scope, device, bfloat16)
    return tuned.eval().requires_grad_(False)


def _made_ahead(batches: Iterable[dict], count: int) -> Iterator[dict]:
    """The first ``count`` of ``batches``, each next one made on a thread of its own while the caller trains on the
    current one (sample making is NumPy and OpenCV work, mostly outside the GIL, on cores the step leaves idle)."""
    source = iter(batches)
    with ThreadPoolExecutor(1, thread_name_prefix="vsreid-samples") as pool:
        pending = pool.submit(next, source, None)
        for made in range(count):
            batch = pending.result()
            if batch is None:
                return
            if made + 1 < count:
                pending = pool.submit(next, source, None)
            yield batch


def _train(tuned: nn.Module, batches: Iterable[dict], steps: int, lr: float, lovasz_weight: float, seed: int,
           scope: str, device: torch.device, bfloat16: bool = False) -> None:
    """:func:`finetuned_copy`'s training of ``tuned`` in place (BN frozen; forward passes under bfloat16 autocast
    when ``bfloat16``)."""
    torch.manual_seed(seed)
    tuned.train()
    for part in kept_parts(tuned, scope):
        part.requires_grad_(False)
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]}
              for g in mp2s_param_groups(tuned, lr, 0.0)]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)
    params = [p for g in opt.param_groups for p in g["params"]]
    dropout = tuned.dropout if isinstance(tuned.dropout, nn.Dropout2d) and tuned.dropout.p > 0 else None
    channels = _dropout_channels(tuned) if dropout is not None else []
    if dropout is not None:
        tuned.dropout = _DrawnDropout2d(dropout.p)

    def gradients(part: dict, of_batch: tuple[int, int], noise: list[torch.Tensor], accumulate: bool):
        _DrawnDropout2d.local.noise = noise
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bfloat16):  # per thread: inside the part
            logits = tuned(rgb_to_mp2s(part["image"]), part["flow"], part["prior"], part.get("residual"))
        loss = segmentation_loss(logits.float(), part["target"], lovasz_weight, of_batch)
        return loss.backward() if accumulate else torch.autograd.grad(loss, params, allow_unused=True)

    for batch in _made_ahead(batches, steps):
        batch = {k: torch.as_tensor(np.asarray(v)).clone().to(device) for k, v in batch.items()}
        of_batch = (max(1, int((batch["target"] != VOID).sum())), len(batch["target"]))
        parts = [{k: v[start:start + BACKWARD_SAMPLES] for k, v in batch.items()}
                 for start in range(0, len(batch["target"]), BACKWARD_SAMPLES)]
        noises = [_draw_noise(dropout.p, [(len(part["target"]), c) for c in channels], device) if dropout else []
                  for part in parts]  # in part order, from the seeded stream
        ways = split_ways(device, len(parts))
        opt.zero_grad()
        if ways == 1:  # one part after another, gradients accumulated by autograd
            for part, noise in zip(parts, noises):
                gradients(part, of_batch, noise, accumulate=True)
        else:
            grads = run_split([lambda part=part, noise=noise: gradients(part, of_batch, noise, accumulate=False)
                               for part, noise in zip(parts, noises)], ways)
            for k, p in enumerate(params):
                for g in grads:  # in part order: the same sum whichever thread finished first
                    if g[k] is not None:
                        if p.grad is None:
                            p.grad = g[k]
                        else:  # in place: the parts' gradients are ours (autograd.grad made them)
                            p.grad.add_(g[k])
            del grads
        opt.step()
    opt.zero_grad(set_to_none=True)  # nothing of training outlives it: gradients and optimizer state freed
    del opt
    if dropout is not None:
        tuned.dropout = dropout
