"""Speed ratios of the inference path in one process (issue 19): box means, warp, the Lite network, start-up.

Each pair of sides runs ``--rounds`` times, interleaved; the median round counts. All inputs come from the bundled
car-shadow sample (854x480): frames 10 and 11 with DIS flows both ways, and 3 objects (the car and two shifted copies).

- Box means at inference, OpenCV running sums (``running_box_mean``) against separable ``avg_pool2d``, on the shapes
  the Lite network uses (batches of 4 crops of 321 px and their mirrors): band gate radii 10 and 30, the whole guided
  filter (radius 5), and one full frame.
- Warp + consistency with 3 objects against the original's ``get_warp_label`` (transcribed below in this bench's own
  words: float64 positions, exact bilinear weights, numpy gathers): the paper config's step (shared positions and the
  probabilities) and the Lite network's (also the photometric residual over the objects' window).
- The shipped Lite network (``checkpoints/vsreid_lite0.pt``): object-frames/s with flip for a batch of 4 crops of
  321 px: the eager network with ``avg_pool2d`` box means (as before issue 19), with running-sum ones, with BN
  folded into the convolutions, with channels_last weights too, with in-place ReLU/ReLU6 fused into their
  convolutions as oneDNN post-ops (these five run the flip's two passes one after the other), and as prediction runs
  it: that graph with the two passes at once, each on one of the two threads (:mod:`vsreid.engine.cpu_split`), and
  on a CPU with native bfloat16 also under bfloat16 autocast (``inference_precision``); with ``--compile`` also
  ``torch.compile`` of it (measured, not used: it wins little and takes most of a minute to start);
  then its FLOPs against this machine's fp32 GEMM rate: about the most object-frames/s this network can reach here.
- One online finetuning step (4 samples of 321 px, AdamW, BN frozen) per finetuning scope: the whole network, all
  but the flow backbone, the heads over both backbones (the samples at once, one per thread, BN inside the
  convolutions' weights); the shipped scope also with the samples one after another, with BN layers in the graph
  too (session 27), with NCHW weights, with PyTorch's own backward pass of the dilated convolutions (before
  :class:`vsreid.models.dilated.DilatedConv2d`) and of the undilated depthwise 5x5 alone (before session 30); on a
  CPU with native bfloat16 also under bfloat16 autocast (``finetune_precision``, an option).
- The embedded re-ID's appearance features of one 854x480 frame (its drift test computes them for every frame):
  BN folded with NCHW weights, with channels_last weights, and the shipped net (also ReLU6 fused into the convs).
  Then its box refinement of five frames' correlation peaks as before session 34 (the colour of every variant
  compared, the cell cosine by ``F.cosine_similarity``) and as shipped (colour only where it can change the pick,
  the cosine as one matrix-vector product; the same boxes); and the colour of one frame's refinement variants: each
  box resized by ``cv2.resize`` (before session 39) against one summed-area table (shipped).
- End to end: the shipped settings on the bundled car-shadow (40 frames, 1 object; flow computed as it goes,
  finetuning, forward pass, re-ID) against the same with the settings and network graph of before issue 19
  (321 px crops with the 10 / 30 px bands, finetuning the whole network for 30 steps, BatchNorm unfolded,
  ``avg_pool2d`` box means, one pass at a time, the re-ID's box refinement as before session 34 and its colour
  resizes box by box, each finetuning batch and each flow made when first needed); on a CPU with native bfloat16
  also the settings the shipped ones were chosen against (:data:`OTHER_SETTINGS`: the whole network finetuned with
  everything in float32, or everything in bfloat16), those the shipped settings resolve to left out.
- ``vsreid --help`` wall time in a fresh interpreter (target < 1 s).
"""
from __future__ import annotations

import argparse
import copy
import itertools
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vsreid.data.crops import boxes_from_labels, crop_resize
from vsreid.data.davis import DavisRoot
from vsreid.data.flow import DISFlow
from vsreid.data.labels import read_frame, read_labels
from vsreid.data.warp import RESIDUAL_REACH, photometric_residual, warp_grid
from vsreid.engine import finetune, predictor, segmenter
from vsreid.engine.api import Segmenter
from vsreid.engine.finetune import FINETUNE_SCOPES, finetuned_copy
from vsreid.engine.predictor import PatchPredictor
from vsreid.engine.reid import appearance
from vsreid.engine.reid.appearance import AppearanceReID
from vsreid.engine.source import SequenceSource
from vsreid.models import box
from vsreid.models.checkpoints import load_network
from vsreid.models.dilated import DilatedConv2d
from vsreid.models.guided import GuidedFilter
from vsreid.metrics.measures import jaccard_and_boundary
from vsreid.models import inference_graph as inference_graph_module
from vsreid.models.inference_graph import inference_graph
from vsreid.models.mixed_precision import native_bfloat16, resolve_precision

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "samples"
WEIGHTS = REPO / "checkpoints" / "vsreid_lite0.pt"
SEQ, FRAME, CROP, CROPS = "car-shadow", 10, 321, 4  # CROP: the crops of before issue 19 (its 2.8 object-frames/s)
BEFORE_BANDS = {"boundary_band": 10, "residual_band": 30}  # the predict bands at 321 px of before issue 19
#: End-to-end sides beside the shipped settings on a CPU with native bfloat16: (finetune_scope, finetune_precision,
#: inference_precision), the settings the shipped ones were chosen against on the selection split (model card).
OTHER_SETTINGS = {"whole network, float32": ("all", "float32", "float32"),
                  "whole network, bfloat16": ("all", "bfloat16", "bfloat16")}
SECTIONS = ("box", "warp", "network", "finetune", "reid", "predict", "help")


def original_warp(values: np.ndarray, flow_to_source: np.ndarray, flow_from_source: np.ndarray,
                  max_error: float = 100.0) -> np.ndarray:
    """The original VS-ReID warp as its ``get_warp_label`` computes it (same arithmetic, float64 positions): values
    (H, W, C) from the source frame onto the target grid, 0 where the forward-backward check fails."""
    h, w = values.shape[:2]
    rows, cols = np.indices((h, w))
    y, x = rows + flow_to_source[..., 1], cols + flow_to_source[..., 0]
    top, left = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    keep = (top >= 0) & (top < h - 1) & (left >= 0) & (left < w - 1)
    corner_y = np.stack([top, top, top + 1, top + 1], -1).clip(0, h - 1)
    corner_x = np.stack([left, left + 1, left, left + 1], -1).clip(0, w - 1)
    weights = np.abs((1 - np.abs(corner_y - y[..., None])) * (1 - np.abs(corner_x - x[..., None])))
    back = sum(weights[..., k, None] * flow_from_source[corner_y[..., k], corner_x[..., k]] for k in range(4))
    keep &= np.linalg.norm(back + np.stack([x, y], -1) - np.stack([cols, rows], -1), axis=2) < max_error
    ry = rows + (flow_to_source[..., 1] - back[..., 1]) / 2
    rx = cols + (flow_to_source[..., 0] - back[..., 0]) / 2
    keep &= (ry >= 0) & (ry < h - 1) & (rx >= 0) & (rx < w - 1)
    out = np.zeros_like(values)
    out[keep] = values[ry[keep].round().astype(np.int64), rx[keep].round().astype(np.int64)]
    return out


def pooled_box_means():
    """Inside, :func:`vsreid.models.box.box_mean` takes the ``avg_pool2d`` path at inference too (as before issue 19)."""
    return mock.patch.object(box, "running_box_mean", box.pooled_box_mean)


def nchw_finetuning():
    """Inside, online finetuning trains a copy with NCHW weights, as before issue 19."""
    return mock.patch.object(finetune, "MEMORY_FORMAT", torch.contiguous_format)


@contextmanager
def unfused_activations():
    """Inside, :func:`inference_graph` and the re-ID's feature network leave the activations as modules of their own
    (as before session 26)."""
    def unfused(net, run):
        return net

    with mock.patch.object(inference_graph_module, "fuse_activations", unfused), \
            mock.patch.object(appearance, "fuse_activations", unfused):
        yield


def autograd_dilated_backward():
    """Inside, dilated convolutions train with PyTorch's own backward pass (as before session 26), not
    :class:`vsreid.models.dilated.DilatedConv2d`'s."""
    return mock.patch.object(DilatedConv2d, "_conv_forward", nn.Conv2d._conv_forward)


def autograd_undilated_backward():
    """Inside, the undilated depthwise 5x5 convolutions train with PyTorch's own backward pass (as before session 30);
    the dilated ones keep :class:`vsreid.models.dilated.DilatedConv2d`'s."""
    fast = DilatedConv2d._conv_forward

    def forward(conv, x, weight, bias):
        return (nn.Conv2d._conv_forward if conv.dilation == (1, 1) else fast)(conv, x, weight, bias)

    return mock.patch.object(DilatedConv2d, "_conv_forward", forward)


def batchnorm_in_the_graph():
    """Inside, online finetuning runs frozen BN layers as layers of their own (as before session 28), not inside the
    convolutions' weights (:mod:`vsreid.models.frozen_bn`)."""
    return mock.patch.object(finetune, "batchnorm_in_weights", nullcontext)


def samples_one_after_another():
    """Inside, a finetuning step's samples run one after the other on all of torch's threads (as before session 28),
    not at once on a thread each."""
    return mock.patch.object(finetune, "split_ways", lambda device, tasks: 1)


@contextmanager
def samples_and_flows_when_needed():
    """Inside, each finetuning batch is made when its step starts and each flow when the forward pass first reads it
    (as before session 44), not the next batch during a step and the sequence's flows during finetuning."""
    with mock.patch.object(finetune, "_made_ahead", lambda batches, count: itertools.islice(batches, count)), \
            mock.patch.object(segmenter, "flows_alongside", lambda source, enabled=True: nullcontext()):
        yield


def one_pass_at_a_time():
    """Inside, the flip's two passes run one after the other on all of torch's threads (as before session 27), not
    at once on a share each (:mod:`vsreid.engine.cpu_split`)."""
    return mock.patch.object(predictor, "split_ways", lambda device, tasks: 1)


@torch.no_grad()
def broadcast_cell_cosine(reid: AppearanceReID, grids: torch.Tensor, ref) -> np.ndarray:
    """The re-ID's feature similarity with the cell cosine by ``F.cosine_similarity`` (before session 34)."""
    global_sim = appearance._embed(grids, ref.mask) @ ref.embedding
    cell_sim = nn.functional.cosine_similarity((grids * ref.mask).flatten(1), (ref.grid * ref.mask).flatten()[None],
                                               dim=1)
    return ((global_sim + cell_sim) / 2).cpu().numpy().astype(np.float64)


def area_means_one_by_one(frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The re-ID's pixel boxes (M, 4) resized for their colour as before session 39: ``cv2.resize`` (INTER_AREA)
    of each box."""
    side = (appearance.COLOUR_SIDE, appearance.COLOUR_SIDE)
    return np.stack([cv2.resize(frame[y1:y2, x1:x2], side, interpolation=cv2.INTER_AREA)
                     for x1, y1, x2, y2 in boxes])


@contextmanager
def colour_before_session_39():
    """Inside, the re-ID resizes each box for its colour with ``cv2.resize`` (as before session 39; the same
    chunks on torch's threads)."""
    with mock.patch.object(appearance, "_area_means", area_means_one_by_one):
        yield


@contextmanager
def refinement_before_session_34():
    """Inside, the re-ID's box refinement compares the colour of every variant and takes the cell cosine by
    ``F.cosine_similarity`` (as before session 34)."""
    with mock.patch.object(appearance, "COLOUR_MAX", np.inf), \
            mock.patch.object(AppearanceReID, "_deep_similarity", broadcast_cell_cosine):
        yield


@contextmanager
def before_issue_19():
    """Inside, prediction runs the network as it was before issue 19: eager (BatchNorm unfolded), ``avg_pool2d``
    box means, finetuning with NCHW weights, autograd's dilated-convolution backward, BN layers in the graph and
    samples one after another, the flip's passes one at a time, the re-ID's refinement as before session 34 and its
    boxes resized for their colour one by one, each finetuning batch and each flow made when first needed."""
    with mock.patch.object(segmenter, "inference_graph", lambda net, in_place=False: net), pooled_box_means(), \
            nchw_finetuning(), autograd_dilated_backward(), batchnorm_in_the_graph(), samples_one_after_another(), \
            one_pass_at_a_time(), refinement_before_session_34(), colour_before_session_39(), \
            samples_and_flows_when_needed():
        yield


def load_step() -> dict:
    """Frames 10 -> 11 of the sample with DIS flows both ways, the combined probability (4, H, W) float32 of 3 objects
    on frame 10, and the objects' boxes on frame 11."""
    frames = [read_frame(SAMPLE / "JPEGImages" / "480p" / SEQ / f"{t:05d}.jpg") for t in (FRAME, FRAME + 1)]
    dis = DISFlow()
    to_source, from_source = dis(frames[1], frames[0]), dis(frames[0], frames[1])
    car = cv2.GaussianBlur((read_labels(SAMPLE / "Annotations" / "480p" / SEQ / f"{FRAME:05d}.png") > 0)
                           .astype(np.float32), (0, 0), 2)
    fg = np.stack([car, np.roll(car, (-120, 0), (0, 1)), np.roll(car, (60, -300), (0, 1))])
    fg = np.minimum(fg, 0.99)
    combined = np.concatenate([np.prod(1 - fg, 0, keepdims=True), fg])
    combined /= combined.sum(0, keepdims=True)
    labels = original_warp(combined.transpose(1, 2, 0), to_source, from_source).argmax(2)
    return {"frames": frames, "to": to_source, "from": from_source, "combined": combined,
            "boxes": boxes_from_labels(labels, (1, 2, 3), 0.15)}


def residual_window(boxes: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The propagator's residual window: the objects' boxes, widened by the blur's reach, inside the frame."""
    h, w = shape
    return (max(int(boxes[:, 0].min()) - RESIDUAL_REACH, 0), max(int(boxes[:, 1].min()) - RESIDUAL_REACH, 0),
            min(int(boxes[:, 2].max()) + RESIDUAL_REACH, w), min(int(boxes[:, 3].max()) + RESIDUAL_REACH, h))


def compare(name: str, sides: dict, rounds: int, unit: str = "ms", per: float | None = None) -> dict:
    """Run the sides ``rounds`` times interleaved; print each one's median and its ratio to the first side."""
    times, outputs = {k: [] for k in sides}, {}
    for r in range(rounds):
        for k in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            start = time.perf_counter()
            outputs[k] = sides[k]()
            times[k].append(time.perf_counter() - start)
    medians = {k: float(np.median(v)) for k, v in times.items()}
    base = next(iter(sides))
    print(f"\n{name}")
    for k, m in medians.items():
        rate = f"  {per / m:6.2f} object-frames/s" if per else ""
        value = 1e3 * m if unit == "ms" else m
        print(f"  {k:<44} {value:9.1f} {unit}{rate}  x{medians[base] / m:.1f} vs {base}")
    return outputs


def bench_box_means(rounds: int) -> None:
    torch.manual_seed(0)
    prior = (torch.nn.functional.avg_pool2d(torch.rand(2 * CROPS, 1, CROP, CROP), 31, 1, 15) > 0.5).float()
    guide, frame = torch.rand(2 * CROPS, 3, CROP, CROP), torch.rand(1, 1, 480, 854)
    cases = [(f"band gate blur r=10 on ({2 * CROPS},1,{CROP},{CROP})", prior, 10),
             (f"band gate blur r=30 on ({2 * CROPS},1,{CROP},{CROP})", prior, 30),
             ("box mean r=10 on (1,1,480,854)", frame, 10)]
    with torch.inference_mode():
        for name, x, r in cases:
            out = compare(name, {"avg_pool2d": lambda: box.pooled_box_mean(x, r),
                                 "running sums": lambda: box.running_box_mean(x, r)}, rounds)
            print(f"  max |difference| {(out['avg_pool2d'] - out['running sums']).abs().max().item():.1e}")
        guided = GuidedFilter(5)

        def pooled_guided():
            with pooled_box_means():
                return guided(guide, prior)
        out = compare(f"guided filter r=5 on {2 * CROPS} crops of {CROP}",
                      {"avg_pool2d": pooled_guided, "running sums": lambda: guided(guide, prior)}, rounds)
        print(f"  max |difference| {(out['avg_pool2d'] - out['running sums']).abs().max().item():.1e}")


def bench_warp(step: dict, rounds: int) -> None:
    to_source, from_source, combined = step["to"], step["from"], step["combined"]
    window = residual_window(step["boxes"], combined.shape[1:])

    def paper():
        return warp_grid(to_source, from_source).pull(combined.transpose(1, 2, 0))

    def lite():
        grid = warp_grid(to_source, from_source)
        return grid.pull(combined.transpose(1, 2, 0)), photometric_residual(*step["frames"][::-1], grid, window)

    out = compare("warp + consistency, 854x480, 3 objects (4 channels)",
                  {"original get_warp_label": lambda: original_warp(combined.transpose(1, 2, 0), to_source,
                                                                    from_source),
                   "vsreid, paper network (no residual)": paper,
                   "vsreid, Lite network (+ residual)": lite}, rounds)
    differ = (out["original get_warp_label"] != out["vsreid, paper network (no residual)"]).any(2).mean()
    print(f"  pixels whose warped value differs from the original's: {100 * differ:.3f} % "
          f"(flow sampled at 1/32 px by cv2.remap)")


def network_crops(step: dict) -> tuple[np.ndarray, ...]:
    """The 4 crops of 321 px of frame 11 the benches feed the network: image, flow, warped prior, residual."""
    boxes = step["boxes"]
    boxes = np.concatenate([boxes, boxes[:1]])[:CROPS]  # 4 crops: the 3 objects and the first again
    frame, prior = step["frames"][1], step["combined"].transpose(1, 2, 0)
    grid = warp_grid(step["to"], step["from"])
    warped, residual = grid.pull(prior), photometric_residual(frame, step["frames"][0], grid)
    return (np.stack([crop_resize(frame.astype(np.float32), b, CROP) for b in boxes]),
            np.stack([crop_resize(step["to"], b, CROP) for b in boxes]),
            np.stack([crop_resize(np.ascontiguousarray(warped[..., 1 + k % 3]), b, CROP)
                      for k, b in enumerate(boxes)]),
            np.stack([crop_resize(residual, b, CROP) for b in boxes]))


def bench_network(step: dict, rounds: int, with_compile: bool) -> None:
    net = load_network(WEIGHTS)
    crops = network_crops(step)
    eager, graph = PatchPredictor(net, flip=True, batch_size=CROPS), PatchPredictor(inference_graph(net), flip=True,
                                                                                      batch_size=CROPS)

    def one_at_a_time(predict):
        with one_pass_at_a_time():
            return predict(*crops)

    def pooled():
        with pooled_box_means():
            return one_at_a_time(eager)

    with unfused_activations():
        folded = PatchPredictor(inference_graph(net).to(memory_format=torch.contiguous_format), flip=True,
                                batch_size=CROPS)
        unfused = PatchPredictor(inference_graph(net), flip=True, batch_size=CROPS)
    sides = {"eager, avg_pool2d box means (before)": pooled,
             "eager, running-sum box means": lambda: one_at_a_time(eager),
             "BN folded, NCHW weights": lambda: one_at_a_time(folded),
             "BN folded, channels_last (session 16-25's graph)": lambda: one_at_a_time(unfused),
             "also ReLU/ReLU6 fused into convs (session 26's graph)": lambda: one_at_a_time(graph),
             "inference graph, the flip's passes at once (shipped)": lambda: graph(*crops)}
    if native_bfloat16("cpu"):
        bf16 = PatchPredictor(graph.net, flip=True, batch_size=CROPS, precision="bfloat16")
        sides["that graph under bfloat16 autocast (inference_precision)"] = lambda: bf16(*crops)
    if with_compile:
        compiled = PatchPredictor(torch.compile(inference_graph(net)), flip=True, batch_size=CROPS)
        start = time.perf_counter()
        compiled(*crops)
        print(f"\ntorch.compile (inductor): first call {time.perf_counter() - start:.1f} s")
        sides["inference graph, torch.compile"] = lambda: compiled(*crops)
    print(f"\nLite network: {WEIGHTS.name}, {torch.get_num_threads()} torch threads")
    out = compare(f"Lite forward with flip, {CROPS} crops of {CROP} px ({2 * CROPS} network crops)", sides, rounds,
                  per=CROPS)
    base = out["eager, running-sum box means"]
    for name, fg in out.items():
        print(f"  max |difference| of P(fg), {name} vs eager: {np.abs(fg - base).max():.1e}")
    gemm_bound(lambda: graph(*crops), lambda: one_at_a_time(eager), rounds)  # the counter sees the calling thread only


def gemm_bound(run_graph, run_eager, rounds: int) -> None:
    """Print the inference graph's FLOPs, this machine's fp32 GEMM rate (a 2048x2048 matmul, torch's threads) and
    the object-frames/s the graph would reach if all its FLOPs ran at that rate: about the most any graph of this
    network can reach here (the count includes the taps of dilated convolutions that fall on zero padding, which
    oneDNN may skip). The FLOPs are counted on the eager network (``run_eager``): the same convolutions, where the
    counter cannot see into the graph's fused oneDNN calls."""
    with FlopCounterMode(display=False) as counter:
        run_eager()
    flops = counter.get_total_flops() / CROPS  # per object-frame, both crops of the flip
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    matmul, graph = [], []
    for _ in range(max(rounds, 3)):
        for run, times in ((lambda: a @ b, matmul), (run_graph, graph)):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    gemm = 2 * 2048 ** 3 / float(np.median(matmul)) / 1e9
    rate = CROPS / float(np.median(graph))
    print(f"  inference graph: {flops / 1e9:.1f} GFLOP an object-frame with flip; fp32 GEMM here {gemm:.0f} GFLOP/s "
          f"-> {gemm * 1e9 / flops:.2f} object-frames/s at GEMM speed; measured {rate:.2f} "
          f"({100 * rate * flops / 1e9 / gemm:.0f}% of that bound)")


def bench_finetune(step: dict, rounds: int) -> None:
    net = load_network(WEIGHTS)
    image, flow, prior, residual = (torch.from_numpy(np.ascontiguousarray(x)) for x in network_crops(step))
    batch = {"image": image.permute(0, 3, 1, 2) / 255.0, "flow": flow.permute(0, 3, 1, 2),
             "prior": prior[:, None], "residual": residual[:, None], "target": (prior > 0.5).long()}
    sides = {f"scope {scope}": (lambda scope=scope: finetuned_copy(net, [batch], 1, 1e-4, scope=scope))
             for scope in FINETUNE_SCOPES}

    def nchw_image_scope():
        with nchw_finetuning():
            return finetuned_copy(net, [batch], 1, 1e-4, scope="image")

    def autograd_image_scope():
        with autograd_dilated_backward():
            return finetuned_copy(net, [batch], 1, 1e-4, scope="image")

    def undilated_autograd_image_scope():
        with autograd_undilated_backward():
            return finetuned_copy(net, [batch], 1, 1e-4, scope="image")

    def session_27_image_scope():
        with batchnorm_in_the_graph(), samples_one_after_another():
            return finetuned_copy(net, [batch], 1, 1e-4, scope="image")

    def serial_image_scope():
        with samples_one_after_another():
            return finetuned_copy(net, [batch], 1, 1e-4, scope="image")

    if native_bfloat16("cpu"):
        sides["scope image, bfloat16 autocast"] = lambda: finetuned_copy(net, [batch], 1, 1e-4, scope="image",
                                                                         precision="bfloat16")
    sides["scope image, BN layers in the graph, samples one after another (session 27)"] = session_27_image_scope
    sides["scope image, samples one after another"] = serial_image_scope
    sides["scope image, NCHW weights (before)"] = nchw_image_scope
    sides["scope image, autograd's dilated-conv backward (before)"] = autograd_image_scope
    sides["scope image, autograd's backward of the undilated 5x5 (before session 30)"] = undilated_autograd_image_scope
    compare(f"online finetuning: copy + 1 step of {CROPS} samples of {CROP} px "
            f"(weights {str(finetune.MEMORY_FORMAT).split('.')[-1]} unless said)", sides, rounds)


def bench_reid_features(step: dict, rounds: int) -> None:
    shipped = AppearanceReID().net
    with unfused_activations():
        unfused = AppearanceReID().net
    nchw = copy.deepcopy(unfused).to(memory_format=torch.contiguous_format)
    frame = torch.from_numpy(np.ascontiguousarray(step["frames"][1])).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        out = compare("re-ID appearance features of one 854x480 frame",
                      {"BN folded, NCHW weights": lambda: nchw(frame),
                       "BN folded, channels_last": lambda: unfused(frame),
                       "BN folded, channels_last, ReLU6 fused (shipped)": lambda: shipped(frame)}, rounds)
    before, _, now = out.values()
    print(f"  max |difference| of the features: {(before - now).abs().max():.1e} "
          f"(largest feature {before.abs().max():.0f})")
    reid = AppearanceReID()
    seq = SAMPLE / "Annotations" / "480p" / SEQ
    reid.prepare(SequenceSource(DavisRoot(SAMPLE), SEQ, None), read_labels(sorted(seq.glob("*.png"))[0]), [1])
    peaks = {t: reid._search(reid.frame_features(t))[0] for t in range(FRAME, FRAME + 5)}

    def refine():
        return [reid._refine(t, boxes, 0) for t, boxes in peaks.items()]

    def refine_before():
        with refinement_before_session_34(), colour_before_session_39():
            return refine()

    out = compare(f"re-ID box refinement, 5 frames' peaks ({sum(map(len, peaks.values()))} boxes, 144 variants each)",
                  {"before session 34": refine_before, "shipped: colour where it can change the pick": refine},
                  rounds)
    print(f"  the same boxes picked: {all(np.array_equal(a, b) for a, b in zip(*out.values()))}")
    frame = reid.source.frame(FRAME)
    variants = reid._variants(peaks[FRAME]).reshape(-1, 4)

    def one_by_one():
        with colour_before_session_39():
            return appearance._resized_boxes(frame, variants)

    out = compare(f"re-ID colour: {len(variants)} refinement variants of frame {FRAME} resized to "
                  f"{appearance.COLOUR_SIDE} px", {"cv2.resize box by box (before session 39)": one_by_one,
                                                   "summed-area table (shipped)":
                                                   lambda: appearance._resized_boxes(frame, variants)}, rounds)
    before, now = (v.astype(int) for v in out.values())
    print(f"  values equal: {np.mean(before == now):.5f}, largest difference {np.abs(before - now).max()}")


def bench_predict(rounds: int) -> None:
    seq = SAMPLE / "JPEGImages" / "480p" / SEQ
    mask = read_labels(next(iter(sorted((SAMPLE / "Annotations" / "480p" / SEQ).glob("*.png")))))
    now = Segmenter.from_pretrained(WEIGHTS)
    before = Segmenter(load_network(WEIGHTS, bands=BEFORE_BANDS),
                       replace(now.settings, propagation=replace(now.settings.propagation, crop_size=CROP),
                               finetune_crop_size=CROP, finetune_steps=30, finetune_scope="all",
                               finetune_precision="float32", inference_precision="float32", lovasz_weight=0.0,
                               prior_weight=0.0),
                       flow_preset=now.flow_preset)
    results = {}

    def run(seg: Segmenter, name: str) -> float:
        with tempfile.TemporaryDirectory() as work:
            state = seg.init_state(seq, work_dir=work)
            seg.add_mask(state, 0, mask)
            for _ in seg.propagate(state):
                pass
            results[name] = state.result
        return state.result.seconds

    def run_before():
        with before_issue_19():
            return run(before, "before")

    s = now.settings
    print(f"\nend to end on {SEQ} (40 frames, 1 object; flow {now.flow_preset} computed as it goes; re-ID): "
          f"now {s.propagation.crop_size} px crops, finetuning {s.finetune_steps} steps of scope {s.finetune_scope}; "
          f"before {CROP} px crops, 30 steps of scope all with cross-entropy alone, P(fg) without the prior mixed in")
    shipped = tuple(resolve_precision(p, "cpu", name) for p, name in
                    ((s.finetune_precision, "finetune_precision"), (s.inference_precision, "inference_precision")))
    print(f"  now: finetuning in {shipped[0]}, inference in {shipped[1]} (recorded {s.finetune_precision} / "
          f"{s.inference_precision}; native bfloat16 on this CPU: {native_bfloat16('cpu')})")
    sides = {"before issue 19": run_before, "now (shipped settings)": lambda: run(now, "now")}
    for name, (scope, tune, infer) in OTHER_SETTINGS.items():
        if native_bfloat16("cpu") and (scope, tune, infer) != (s.finetune_scope, *shipped):
            other = Segmenter(now.net, replace(s, finetune_scope=scope, finetune_precision=tune,
                                               inference_precision=infer), flow_preset=now.flow_preset)
            sides[name] = lambda other=other, name=name: run(other, name)
    compare("predict", sides, rounds, unit="s")
    gt = np.stack([read_labels(p) for p in sorted((SAMPLE / "Annotations" / "480p" / SEQ).glob("*.png"))])
    for name, result in results.items():
        j, f = jaccard_and_boundary(result.labels[1:-1] == 1, gt[1:-1] == 1)
        print(f"  {name}: J&F {50 * (np.mean(j) + np.mean(f)):.1f}")


def bench_help(rounds: int) -> None:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vsreid", "--help"], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    print(f"\nvsreid --help (fresh interpreter): median {np.median(times):.2f} s of {rounds}; target < 1 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per comparison (median counts)")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile of the inference graph (needs a C++ compiler; slow to start)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, help="run only these (default: all)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    print(f"machine: {os.cpu_count()} cores, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), opencv {cv2.__version__} "
          f"({cv2.getNumThreads()} threads); median of {args.rounds} interleaved rounds")
    step = load_step()
    sections = {"box": lambda: bench_box_means(args.rounds), "warp": lambda: bench_warp(step, args.rounds),
                "network": lambda: bench_network(step, args.rounds, args.compile),
                "finetune": lambda: bench_finetune(step, args.rounds),
                "reid": lambda: bench_reid_features(step, args.rounds), "predict": lambda: bench_predict(args.rounds),
                "help": lambda: bench_help(args.rounds)}
    for name in args.sections or sections:
        sections[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
