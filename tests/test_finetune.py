"""Online finetuning: the parts it trains, gradient accumulation equal to the whole batch, the loss split in parts,
the parts of a step at once."""
from __future__ import annotations

import copy
import threading

import pytest
import torch

from vsreid.data.labels import VOID
from vsreid.engine import finetune
from vsreid.engine.finetune import FINETUNE_SCOPES, finetuned_copy, kept_parts
from vsreid.models import MP2S, mp2s_param_groups, set_bn_frozen
from vsreid.models.mp2s import rgb_to_mp2s
from vsreid.models.losses import segmentation_loss

SIZE = 65


def _net(dropout: float = 0.0) -> MP2S:
    torch.manual_seed(0)
    return MP2S(backbone="efficientnet_lite0", output_stride=16, aspp_channels=16, prior_skip=True,
                refine_channels=8, refine_residual=True, dropout=dropout).eval()


def _batch(n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    prior = (torch.rand(n, 1, SIZE, SIZE, generator=g) > 0.5).float()
    target = (torch.rand(n, SIZE, SIZE, generator=g) > 0.4).long()
    target[0, :20] = VOID  # parts with different void counts
    return {"image": torch.rand(n, 3, SIZE, SIZE, generator=g), "flow": torch.randn(n, 2, SIZE, SIZE, generator=g),
            "prior": prior, "residual": torch.rand(n, 1, SIZE, SIZE, generator=g) * 40, "target": target}


def _changed(before: torch.nn.Module, after: torch.nn.Module, part: str) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(getattr(before, part).parameters(),
                                                     getattr(after, part).parameters()))


@pytest.mark.parametrize("scope", list(FINETUNE_SCOPES))
def test_finetuning_trains_its_scope_only_and_leaves_the_network_alone(scope):
    net = _net()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    tuned = finetuned_copy(net, [_batch()] * 3, 3, 1e-3, scope=scope)
    kept = {f"{name}.{p}" for name, module in net.named_modules() if any(module is m for m in kept_parts(net, scope))
            for p, _ in module.named_parameters()}
    before, after = dict(net.named_parameters()), dict(tuned.named_parameters())
    for name in before:
        if name in kept:
            assert torch.equal(before[name], after[name]), name
    for part in ("backbone", "flow_backbone", "aspp", "flow_aspp", "refiner"):
        whole = all(name in kept for name in before if name.startswith(part + "."))
        assert _changed(net, tuned, part) == (not whole), part
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert not tuned.training and not any(p.requires_grad for p in tuned.parameters())


def test_stride_scopes_keep_the_image_streams_high_resolution_layers():
    net = _net()
    below8 = kept_parts(net, "image_s8")
    assert net.flow_backbone in below8 and net.backbone._conv_stem in below8
    blocks = [b for b in net.backbone._blocks if b in below8]
    assert blocks == list(net.backbone._blocks[:len(blocks)])  # the first blocks, up to the last at stride 4
    assert [s for b, s in zip(net.backbone._blocks, net.backbone.block_strides) if b in below8] == [2, 4, 4]


def test_unknown_scope_is_refused():
    with pytest.raises(ValueError, match="finetune_scope 'backbone'"):
        finetuned_copy(_net(), [_batch()], 1, 1e-3, scope="backbone")


def test_batch_in_parts_is_the_same_step_as_the_whole_batch(monkeypatch):
    net, batches = _net(), [_batch(seed=s) for s in range(2)]
    monkeypatch.setattr(finetune, "BACKWARD_SAMPLES", 4)
    whole = finetuned_copy(net, batches, 2, 1e-3, lovasz_weight=0.5)
    monkeypatch.setattr(finetune, "BACKWARD_SAMPLES", 1)
    parts = finetuned_copy(net, batches, 2, 1e-3, lovasz_weight=0.5)
    for (name, a), b in zip(whole.named_parameters(), parts.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=name)


def test_channels_last_weights_train_the_same_copy_as_nchw(monkeypatch):
    net, batches = _net(), [_batch(seed=s) for s in range(2)]
    monkeypatch.setattr(finetune, "MEMORY_FORMAT", torch.contiguous_format)
    nchw = finetuned_copy(net, batches, 2, 1e-3)
    monkeypatch.setattr(finetune, "MEMORY_FORMAT", torch.channels_last)
    last = finetuned_copy(net, batches, 2, 1e-3)
    assert any(p.dim() == 4 and not p.is_contiguous() for p in last.parameters())  # really channels_last
    for (name, a), b in zip(nchw.named_parameters(), last.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=name)
    x = _batch(seed=5)
    with torch.no_grad():
        torch.testing.assert_close(last(x["image"], x["flow"], x["prior"], x["residual"]),
                                   nchw(x["image"], x["flow"], x["prior"], x["residual"]), rtol=0, atol=1e-4)


def test_loss_parts_sum_to_the_whole_batch_loss():
    torch.manual_seed(0)
    logits, target = torch.randn(4, 2, SIZE, SIZE), _batch()["target"]
    whole = segmentation_loss(logits, target, lovasz_weight=0.5)
    of_batch = (int((target != VOID).sum()), 4)
    parts = sum(segmentation_loss(logits[i:i + 1], target[i:i + 1], 0.5, of_batch) for i in range(4))
    torch.testing.assert_close(parts, whole)


def test_predict_module_refuses_an_unknown_scope_or_precision_when_built():
    from vsreid.lightning.module import VSReIDModule

    with pytest.raises(ValueError, match="finetune_scope 'everything'"):
        VSReIDModule(backbone="resnet18", finetune_scope="everything")
    with pytest.raises(ValueError, match="finetune_precision 'half'"):
        VSReIDModule(backbone="resnet18", finetune_precision="half")
    assert VSReIDModule(backbone="resnet18", finetune_precision="auto").segment_settings().finetune_precision == "auto"
    with pytest.raises(ValueError, match="inference_precision 'half'"):
        VSReIDModule(backbone="resnet18", inference_precision="half")
    settings = VSReIDModule(backbone="resnet18", inference_precision="bfloat16").segment_settings()
    assert (settings.inference_precision, settings.finetune_precision) == ("bfloat16", "float32")
    with pytest.raises(ValueError, match="prior_weight must be in"):
        VSReIDModule(backbone="resnet18", prior_weight=1.0)
    assert VSReIDModule(backbone="resnet18", prior_weight=0.2).segment_settings().prior_weight == 0.2


def test_predict_module_takes_the_recorded_lovasz_weight_unless_given(tmp_path):
    from vsreid.lightning.module import VSReIDModule

    weights = tmp_path / "lite.pt"
    net = _net()
    network = {"backbone": "efficientnet_lite0", "output_stride": 16, "aspp_channels": 16, "prior_skip": True,
               "refine_channels": 8, "refine_residual": True}
    torch.save({"state_dict": net.state_dict(), "network": network,
                "predict": {"lovasz_weight": 0.5, "finetune_steps": 3}}, weights)
    assert VSReIDModule(init_from=str(weights)).segment_settings().lovasz_weight == 0.5
    assert VSReIDModule(init_from=str(weights), lovasz_weight=0.0).segment_settings().lovasz_weight == 0.0
    assert VSReIDModule(backbone="resnet18").segment_settings().lovasz_weight == 0.0


def _copy_one_sample_after_another(net, batches, steps: int, lr: float, seed: int = 0):
    """The finetuning loop as it was before the parts ran at once: ``nn.Dropout2d`` drawing from the seeded stream,
    BN layers in the graph, gradients accumulated by ``backward`` sample after sample."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        tuned = copy.deepcopy(net)
        set_bn_frozen(tuned, True)
        tuned.train()
        opt = torch.optim.AdamW(mp2s_param_groups(tuned, lr, 0.0), lr=lr)
        for _, batch in zip(range(steps), batches):
            of_batch = (max(1, int((batch["target"] != VOID).sum())), len(batch["target"]))
            opt.zero_grad()
            for k in range(len(batch["target"])):
                part = {key: v[k:k + 1] for key, v in batch.items()}
                logits = tuned(rgb_to_mp2s(part["image"]), part["flow"], part["prior"], part["residual"])
                segmentation_loss(logits, part["target"], 0.0, of_batch).backward()
            opt.step()
    return tuned.eval()


def test_parts_at_once_train_the_copy_of_one_sample_after_another(monkeypatch):
    """A step's samples on the CPU's threads at once, with BN in the weights and dropout drawn beforehand in sample
    order, train the same copy as the plain loop (same draws; float rounding only), and the same copy on one thread
    (``split_ways`` 1: the parts on the calling thread)."""
    net, batches = _net(dropout=0.3), [_batch(seed=s) for s in range(2)]
    ways = []
    monkeypatch.setattr(finetune, "split_ways", lambda device, n: ways.append(2) or 2)
    at_once = finetuned_copy(net, batches, 2, 1e-3)
    assert ways and isinstance(at_once.dropout, torch.nn.Dropout2d)  # the copy has its own dropout module back
    monkeypatch.setattr(finetune, "split_ways", lambda device, n: 1)
    one_thread = finetuned_copy(net, batches, 2, 1e-3)
    reference = _copy_one_sample_after_another(net, batches, 2, 1e-3)
    other_seed = finetuned_copy(net, batches, 2, 1e-3, seed=1)
    for (name, a), b, c in zip(at_once.named_parameters(), one_thread.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=name)
        torch.testing.assert_close(a, c, rtol=0, atol=1e-5, msg=name)
    assert any((a - c).abs().max() > 1e-4 for a, c in zip(other_seed.parameters(), reference.parameters()))


def test_bfloat16_finetuning_trains_nearly_the_float32_copy(monkeypatch):
    """Under bfloat16 autocast (depthwise convolutions in float32) the copy moves the way the float32 one does, on
    the threads at once as one after another, and is not the float32 copy (the products are rounded)."""
    net, batches = _net(dropout=0.3), [_batch(seed=s) for s in range(2)]
    reference = finetuned_copy(net, batches, 2, 1e-3)
    deltas = {}
    for ways in (1, 2):
        monkeypatch.setattr(finetune, "split_ways", lambda device, n, ways=ways: ways)
        tuned = finetuned_copy(net, batches, 2, 1e-3, precision="bfloat16")
        deltas[ways] = torch.cat([(t - p).flatten() for t, p in zip(tuned.parameters(), net.parameters())])
        assert all(p.dtype == torch.float32 for p in tuned.parameters())
    ref = torch.cat([(t - p).flatten() for t, p in zip(reference.parameters(), net.parameters())])
    for delta in deltas.values():
        assert torch.cosine_similarity(delta, ref, dim=0) > 0.9
        assert not torch.equal(delta, ref)
    torch.testing.assert_close(deltas[1], deltas[2], rtol=0, atol=1e-5)


def test_float32_depthwise_keeps_depthwise_convolutions_out_of_autocast():
    from vsreid.models.mixed_precision import float32_depthwise

    dense, depthwise = torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1, groups=4)
    net, x = torch.nn.Sequential(dense, depthwise), torch.randn(1, 4, 8, 8)
    with float32_depthwise(net), torch.autocast("cpu", dtype=torch.bfloat16):
        assert dense(x).dtype == torch.bfloat16 and depthwise(x).dtype == torch.float32
        assert net(x).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):  # afterwards the modules are as they were
        assert depthwise(x).dtype == torch.bfloat16 and "_conv_forward" not in vars(depthwise)


def test_precision_auto_follows_the_device_and_unknown_ones_are_refused():
    from vsreid.engine.segmenter import SegmentSettings
    from vsreid.models.mixed_precision import native_bfloat16, resolve_precision

    assert resolve_precision("auto", "cpu") == ("bfloat16" if native_bfloat16("cpu") else "float32")
    assert resolve_precision("float32", "cpu") == "float32"
    with pytest.raises(ValueError, match="finetune_precision 'fp16'"):
        SegmentSettings(finetune_precision="fp16")
    with pytest.raises(ValueError, match="inference_precision 'fp16'"):
        SegmentSettings(inference_precision="fp16")
    with pytest.raises(ValueError, match="finetune_precision 'half'"):
        finetuned_copy(_net(), [_batch()], 1, 1e-3, precision="half")


def test_the_next_batch_is_made_on_another_thread_while_a_step_trains_and_none_beyond_the_last_step():
    made, threads, second_made = [], set(), threading.Event()

    def endless():
        k = 0
        while True:
            made.append(k)
            threads.add(threading.current_thread())
            if k == 1:
                second_made.set()
            yield {"k": k}
            k += 1

    got = []
    for batch in finetune._made_ahead(endless(), 3):
        got.append(batch["k"])
        if batch["k"] == 0:  # batch 1 is made while batch 0 is still in hand
            assert second_made.wait(10)
    assert got == [0, 1, 2] and made == [0, 1, 2]
    assert threading.current_thread() not in threads
    assert [b["k"] for b in finetune._made_ahead(iter([{"k": 0}, {"k": 1}]), 5)] == [0, 1]
