"""Tests of vsreid.models: checkpoint compatibility, shapes, optimisation policy, ImageNet weights."""

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vsreid.models import (
    BACKBONES,
    MP2S,
    GuidedFilter,
    box,
    efficientnet_lite0,
    imagenet_weights_path,
    mp2s_param_groups,
    set_bn_frozen,
)
from vsreid.models.box import box_mean, pooled_box_mean, running_box_mean
from vsreid.models.dilated import DilatedConv2d
from vsreid.models.frozen_bn import ConvFrozenBN, batchnorm_in_weights
from vsreid.models.refine import _cat_as
from vsreid.models import inference_graph as inference_graph_module
from vsreid.models.inference_graph import ConvActivation, inference_graph

SHARED = Path(os.environ.get("VSREID_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
KEYS_JSON = SHARED / "reference" / "mp2s_state_dict_keys.json"
BLACKSWAN = SHARED / "data" / "davis2016-val-subset" / "JPEGImages" / "480p" / "blackswan" / "00000.jpg"


def _inputs(n: int, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, size, size, generator=g) * 255
    flow = torch.randn(n, 2, size, size, generator=g) * 5
    prior = torch.rand(n, 1, size, size, generator=g)
    return image, flow, prior


def _save_original(model: nn.Module, path: Path, **extra) -> None:
    """Write ``model`` the way PyTorch 0.4 did: legacy format, ``{'state_dict': ...}``, no num_batches_tracked."""
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": state, **extra}, path, _use_new_zipfile_serialization=False)


@pytest.fixture(scope="module")
def small_mp2s():
    """A resnet18 MP2S in the paper config with non-trivial BN statistics, in eval mode."""
    torch.manual_seed(0)
    model = MP2S(backbone="resnet18")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.normal_(0, 0.1)
    return model.eval()


def test_resnet101_state_dict_matches_original_keys():
    if not KEYS_JSON.is_file():
        pytest.skip(f"{KEYS_JSON} absent (set VSREID_SHARED to the shared folder)")
    reference = json.loads(KEYS_JSON.read_text())
    with torch.device("meta"):
        model = MP2S(backbone="resnet101")
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(got) == list(reference)
    assert got == reference


def test_from_original_round_trip(small_mp2s, tmp_path):
    path = tmp_path / "MP2S.pth.tar"
    _save_original(small_mp2s, path, config=argparse.Namespace(name="MP2S"), best_prec=np.float64(0.8), epoch=3)
    loaded = MP2S.from_original(path, backbone="resnet18")
    assert not loaded.training
    image, flow, prior = _inputs(1, 65)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image, flow, prior), small_mp2s(image, flow, prior), rtol=0, atol=0)


@pytest.mark.parametrize("change", ["missing", "unexpected", "shape", "not_a_checkpoint"])
def test_from_original_rejects_wrong_file(small_mp2s, tmp_path, change):
    path = tmp_path / f"{change}.pth.tar"
    state = {k: v for k, v in small_mp2s.state_dict().items() if not k.endswith("num_batches_tracked")}
    if change == "missing":
        del state["aspp.out_conv2d.weight"]
    elif change == "unexpected":
        state["module.extra.weight"] = torch.zeros(1)
    elif change == "shape":
        state["classifier.bias"] = torch.zeros(3)
    torch.save(state if change == "not_a_checkpoint" else {"state_dict": state}, path)
    expected = {"missing": "aspp.out_conv2d.weight", "unexpected": "module.extra.weight", "shape": "classifier.bias",
                "not_a_checkpoint": "state_dict"}[change]  # fmt: skip
    with pytest.raises(ValueError, match=str(path)) as info:
        MP2S.from_original(path, backbone="resnet18")
    assert expected in str(info.value)


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_output_shape(backbone, output_stride):
    torch.manual_seed(0)
    model = MP2S(backbone=backbone, output_stride=output_stride, aspp_channels=32).eval()
    with torch.no_grad():
        feats = model.backbone(torch.zeros(1, 3, 97, 97), torch.zeros(1, 1, 97, 97))
        logits = model(*_inputs(2, 97))
    assert feats.shape[-1] == -(-97 // output_stride)
    assert logits.shape == (2, 2, 97, 97)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_lite0"])
def test_image_normalisation_from_bgr_0_255(backbone):
    model = MP2S(backbone=backbone, aspp_channels=8).eval()
    seen = []
    model.backbone.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    image, flow, prior = _inputs(1, 33)
    with torch.no_grad():
        model(image, flow, prior)
    if backbone == "resnet18":
        expected = image - torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1)
    else:
        rgb = image.flip(1) / 255
        expected = (rgb - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225]
        ).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[0], expected)


def test_param_groups_and_bn_freezing():
    with torch.device("meta"):
        model = MP2S(backbone="resnet18", aspp_channels=16)
    groups = {g["name"]: g for g in mp2s_param_groups(model, lr=0.01, weight_decay=5e-4)}
    assert (groups["conv bias"]["lr"], groups["conv bias"]["weight_decay"]) == (0.02, 0.0)
    assert (groups["conv weight"]["lr"], groups["conv weight"]["weight_decay"]) == (0.01, 5e-4)
    assert (groups["bn"]["lr"], groups["bn"]["weight_decay"]) == (0.01, 5e-4)
    assert len(groups["conv bias"]["params"]) == 2 * (5 + 1)  # per stream: 5 ASPP convs + classifier
    grouped = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    with pytest.raises(ValueError, match="_fc"):
        mp2s_param_groups(efficientnet_lite0(head=True), 0.01, 0.0)

    set_bn_frozen(model, True)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert not any(m.training or m.weight.requires_grad for m in bns)
    assert model.aspp.out_conv2d.weight.requires_grad
    set_bn_frozen(model, False)
    assert all(m.training and m.weight.requires_grad for m in bns)


def test_efficientnet_lite0_imagenet_weights():
    cv2 = pytest.importorskip("cv2")
    if not BLACKSWAN.is_file():
        pytest.skip(f"{BLACKSWAN} absent (set VSREID_SHARED to the shared folder)")
    model = efficientnet_lite0(output_stride=32, pretrained=True, head=True).eval()
    rgb = cv2.resize(cv2.imread(str(BLACKSWAN))[:, :, ::-1], (224, 224), interpolation=cv2.INTER_AREA)
    x = (rgb.astype(np.float32) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    with torch.no_grad():
        probs = model.classify(torch.from_numpy(x.astype(np.float32)).permute(2, 0, 1)[None]).softmax(1)
    assert probs.argmax().item() == 100  # black swan


def test_efficientnet_lite0_flow_stream_reinitialises_stem():
    weights = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    model = efficientnet_lite0(in_channels=2, pretrained=True)
    assert model._conv_stem.weight.shape == (32, 2, 3, 3)
    assert torch.equal(model._blocks[15]._project_conv.weight, weights["_blocks.15._project_conv.weight"])
    assert not model.prob_encode.weight.any()


@pytest.mark.parametrize("output_stride", [8, 16])
def test_boundary_refiner_starts_as_the_coarse_network_and_learns_fine_corrections(output_stride):
    torch.manual_seed(0)
    refined = MP2S(backbone="efficientnet_lite0", output_stride=output_stride, aspp_channels=16, prior_skip=True,
                   refine_channels=8)
    plain = MP2S(backbone="efficientnet_lite0", output_stride=output_stride, aspp_channels=16, prior_skip=True)
    missing, unexpected = plain.load_state_dict(refined.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith("refiner.") for k in unexpected)
    _, low4, low2 = refined.backbone.forward_pyramid(torch.zeros(1, 3, 65, 65))
    assert (low4.shape[1:], low2.shape[1:]) == ((24, 17, 17), (16, 33, 33))
    inputs = _inputs(2, 65)
    refined.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(refined(*inputs), plain(*inputs), atol=1e-4, rtol=1e-4)
    # the zero-initialised correction is trainable (its gradient is not blocked)
    refined.train()
    refined(*inputs)[:, 1].sum().backward()
    assert refined.refiner.correction.weight.grad.abs().sum() > 0


def test_boundary_refiner_needs_efficientnet():
    with pytest.raises(ValueError, match="refine_channels"):
        MP2S(backbone="resnet18", refine_channels=8)


def test_boundary_refiner_can_see_the_warp_residual():
    torch.manual_seed(0)
    model = MP2S(backbone="efficientnet_lite0", output_stride=16, aspp_channels=16, prior_skip=True,
                 refine_channels=8, refine_residual=True).eval()
    assert model.refiner.fuse4[0][0].in_channels == 8 + 2 + 2  # features, coarse logits, prior and residual
    with torch.no_grad():
        model.refiner.correction.weight.normal_(0, 1)
    image, flow, prior = _inputs(1, 65)
    residual = torch.zeros(1, 1, 65, 65)
    with torch.no_grad():
        torch.testing.assert_close(model(image, flow, prior, residual), model(image, flow, prior))  # None = zeros
        assert not torch.allclose(model(image, flow, prior, residual + 40.0), model(image, flow, prior))
    with pytest.raises(ValueError, match="refine_residual"):
        MP2S(backbone="efficientnet_lite0", refine_residual=True)


def test_boundary_band_leaves_the_prior_alone_away_from_its_boundary():
    torch.manual_seed(0)
    model = MP2S(backbone="efficientnet_lite0", output_stride=16, aspp_channels=16, prior_skip=True,
                 refine_channels=8, boundary_band=4).eval()
    with torch.no_grad():  # non-zero corrections everywhere
        model.refiner.correction.bias.copy_(torch.tensor([3.0, -3.0]))
    image, flow, _ = _inputs(1, 65)
    prior = torch.zeros(1, 1, 65, 65)
    prior[..., 20:45, 20:45] = 1
    gate = model.band_gate(prior)[0, 0]
    assert gate[32, 32] == 0 and gate[5, 5] == 0  # far inside, far outside
    assert gate[32, 20] == 1 and gate[32, 44] == 1 and gate[19, 32] == 1  # on the boundary
    with torch.no_grad():
        logits = model(image, flow, prior)
        skip_only = model.prior_skip(2 * prior - 1)
    far = gate == 0
    torch.testing.assert_close(logits[0][:, far], skip_only[0][:, far])
    assert not torch.allclose(logits[0][:, ~far], skip_only[0][:, ~far])
    with pytest.raises(ValueError, match="prior_skip"):
        MP2S(backbone="efficientnet_lite0", boundary_band=4)


def test_residual_band_widens_the_gate_only_where_the_warp_failed():
    torch.manual_seed(0)
    model = MP2S(backbone="efficientnet_lite0", output_stride=16, aspp_channels=16, prior_skip=True,
                 refine_channels=8, boundary_band=4, residual_band=12, residual_threshold=20.0).eval()
    with torch.no_grad():
        model.refiner.correction.bias.copy_(torch.tensor([3.0, -3.0]))
    image, flow, _ = _inputs(1, 65)
    prior = torch.zeros(1, 1, 65, 65)
    prior[..., 20:45, 20:45] = 1
    residual = torch.zeros(1, 1, 65, 65)
    residual[..., :, 40:] = 50.0  # the warp failed on the right
    narrow, wide = model.band_gate(prior), model.band_gate(prior, residual)
    torch.testing.assert_close(model.band_gate(prior, torch.full_like(residual, 19.0)), narrow)  # under threshold
    assert torch.equal(wide[..., :40], narrow[..., :40])  # where the warp held, the narrow band
    assert narrow[0, 0, 32, 52] == 0 and wide[0, 0, 32, 52] == 1  # 8 px right of the boundary: only the wide band
    assert 0 < wide[0, 0, 32, 55] < 1 and wide[0, 0, 32, 62] == 0  # the wide band has an edge too
    with torch.no_grad():
        changed = model(image, flow, prior, residual) != model(image, flow, prior)
    assert changed[..., 40:].any() and not changed[..., :40].any()
    with pytest.raises(ValueError, match="boundary_band"):
        MP2S(backbone="efficientnet_lite0", prior_skip=True, residual_band=12)


def test_guided_filter_moves_a_shifted_mask_boundary_onto_the_colour_edge():
    guide = torch.zeros(1, 3, 64, 64)
    guide[..., 32:] = 1.0  # a vertical colour edge between columns 31 and 32
    guide += 0.02 * torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    truth = torch.zeros(1, 1, 64, 64)
    truth[..., 32:] = 1
    shifted = torch.zeros(1, 1, 64, 64)
    shifted[..., 29:] = 1  # the warped mask: 3 px off the edge
    filtered = GuidedFilter(radius=8, eps=1e-3)(guide, shifted) > 0.5
    assert (filtered != (truth > 0.5)).sum() < 0.1 * (shifted != truth).sum()
    flat = torch.full((1, 3, 64, 64), 0.5)  # no edge to follow: the filter is a plain box blur, the edge stays
    kept = GuidedFilter(radius=6, eps=1e-3)(flat, shifted) > 0.5
    assert torch.equal(kept[..., 8:-8, :], (shifted > 0.5)[..., 8:-8, :])
    with pytest.raises(ValueError, match="radius"):
        GuidedFilter(radius=0)


@pytest.mark.parametrize("shape", [(2, 3, 17, 40), (1, 1, 480, 854)])
@pytest.mark.parametrize("radius", [1, 5, 30])
def test_running_box_mean_equals_the_pooled_one(shape, radius):
    """The O(1)-per-pixel inference box mean gives the avg_pool2d values, windows clipped at the border included
    (r = 30 is wider than the 17-row image)."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(radius))
    torch.testing.assert_close(running_box_mean(x, radius), pooled_box_mean(x, radius), rtol=0, atol=1e-5)
    torch.testing.assert_close(running_box_mean(x + 300, radius), pooled_box_mean(x + 300, radius), rtol=1e-6,
                               atol=0)  # float64 running sums: no drift far from zero


def test_box_mean_keeps_the_differentiable_path_for_training():
    x = torch.rand(1, 2, 20, 30, requires_grad=True)
    box_mean(x, 3).sum().backward()
    torch.testing.assert_close(x.grad.sum(), torch.tensor(2 * 20 * 30.0))  # each window's weights sum to 1
    with torch.no_grad():
        torch.testing.assert_close(box_mean(x, 3), pooled_box_mean(x, 3), rtol=0, atol=1e-5)


def test_guided_filter_and_band_gate_at_inference_equal_their_training_path(monkeypatch):
    """The whole network's output with the running box means equals the one with avg_pool2d within 1e-4."""
    torch.manual_seed(0)
    model = MP2S(backbone="efficientnet_lite0", output_stride=16, aspp_channels=16, prior_skip=True,
                 refine_channels=8, boundary_band=5, residual_band=12, guided_radius=5).eval()
    image, flow, _ = _inputs(2, 97)
    prior = (torch.rand(2, 1, 97, 97) > 0.5).float()
    residual = torch.rand(2, 1, 97, 97) * 40
    with torch.no_grad():
        fast = torch.softmax(model(image, flow, prior, residual), 1)
        monkeypatch.setattr(box, "running_box_mean", pooled_box_mean)
        pooled = torch.softmax(model(image, flow, prior, residual), 1)
    torch.testing.assert_close(fast, pooled, rtol=0, atol=1e-4)


def test_guided_output_layer_is_differentiable_and_adds_no_weights():
    torch.manual_seed(0)
    config = dict(backbone="efficientnet_lite0", output_stride=16, aspp_channels=16, prior_skip=True)
    guided, plain = MP2S(**config, guided_radius=3), MP2S(**config)
    assert guided.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(guided.state_dict())
    image, flow, prior = _inputs(2, 65)
    guided.eval(), plain.eval()
    with torch.no_grad():
        fg = torch.softmax(plain(image, flow, prior), 1)[:, 1:]
        expected = GuidedFilter(3, guided.guided.eps)(image / 255, fg).clamp(1e-4, 1 - 1e-4)
        torch.testing.assert_close(torch.softmax(guided(image, flow, prior), 1)[:, 1:], expected)
    guided.train()
    guided(image, flow, prior)[:, 1].sum().backward()
    assert guided.prior_skip.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="num_classes"):
        MP2S(**config, guided_radius=3, num_classes=3)


def test_guided_filter_can_be_left_out_of_training():
    torch.manual_seed(0)
    config = dict(backbone="efficientnet_lite0", output_stride=16, aspp_channels=16, prior_skip=True)
    late, always, plain = MP2S(**config, guided_radius=3, guided_in_training=False), MP2S(**config, guided_radius=3), \
        MP2S(**config)
    always.load_state_dict(late.state_dict()), plain.load_state_dict(late.state_dict())
    inputs = _inputs(2, 65)
    with torch.no_grad():
        for m in (late, always, plain):
            m.eval()
        torch.testing.assert_close(late(*inputs), always(*inputs))  # inference applies the filter
        assert not torch.allclose(late(*inputs), plain(*inputs))
        for m in (late, plain):
            m.train(), m.dropout.eval()  # dropout off, BN in training mode
        torch.testing.assert_close(late(*inputs), plain(*inputs))  # training fits the unfiltered output


def test_lovasz_iou_loss_is_one_minus_iou_on_hard_masks_and_ignores_void():
    from vsreid.models.losses import lovasz_iou_loss

    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:6, 2:6] = 1
    half, over = torch.zeros(8, 8), torch.zeros(8, 8)
    half[2:6, 2:4] = 1  # IoU 8/16
    over[0:6, 2:6] = 1  # IoU 16/24
    torch.testing.assert_close(lovasz_iou_loss(torch.stack([half, over]), target),
                               torch.tensor(((1 - 8 / 16) + (1 - 16 / 24)) / 2))
    assert lovasz_iou_loss(target.float(), target) == 0
    voided = target.clone()
    voided[:, 0:2, 2:6] = 255  # the over-segmented rows are void: a perfect mask for the second crop
    torch.testing.assert_close(lovasz_iou_loss(torch.stack([half, over]), voided), torch.tensor((1 - 8 / 16) / 2))
    soft = torch.full((2, 8, 8), 0.5, requires_grad=True)
    lovasz_iou_loss(soft, target).backward()
    assert (soft.grad[:, 3, 3] < 0).all() and (soft.grad[:, 0, 0] > 0).all()  # raise the object, lower the rest


# ------------------------------------------------------------------------------------- ImageNet ResNet weights
def _resnet18_state(deep_stem: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random ResNet-18 state dict in torchvision layout (7x7 stem) or timm deep-stem layout (64-64-128)."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def conv(name, out_c, in_c, k):
        state[f"{name}.weight"] = torch.randn(out_c, in_c, k, k, generator=g) * 0.05

    def bn(name, c):
        state.update({f"{name}.weight": torch.rand(c, generator=g) + 0.5, f"{name}.bias": torch.randn(c, generator=g),
                      f"{name}.running_mean": torch.randn(c, generator=g), f"{name}.running_var": torch.rand(c) + 0.5,
                      f"{name}.num_batches_tracked": torch.tensor(7)})

    if deep_stem:
        conv("conv1.0", 64, 3, 3), bn("conv1.1", 64), conv("conv1.3", 64, 64, 3), bn("conv1.4", 64)
        conv("conv1.6", 128, 64, 3), bn("bn1", 128)
    else:
        conv("conv1", 64, 3, 7), bn("bn1", 64)
    inplanes = 128 if deep_stem else 64
    for i, planes in enumerate((64, 128, 256, 512), 1):
        for j in range(2):
            p = f"layer{i}.{j}"
            conv(f"{p}.conv1", planes, inplanes if j == 0 else planes, 3), bn(f"{p}.bn1", planes)
            conv(f"{p}.conv2", planes, planes, 3), bn(f"{p}.bn2", planes)
            if j == 0 and inplanes != planes:
                conv(f"{p}.downsample.0", planes, inplanes, 1), bn(f"{p}.downsample.1", planes)
        inplanes = planes
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512, generator=g), torch.zeros(1000)
    return state


def test_backbone_weights_in_torchvision_layout(tmp_path):
    from vsreid.lightning.module import VSReIDModule

    state = _resnet18_state(deep_stem=False)
    path = tmp_path / "resnet18-torchvision.pth"
    torch.save(state, path)
    module = VSReIDModule(backbone="resnet18", output_stride=8, aspp_channels=16, pretrained=False,
                          prior_skip=False, backbone_weights=str(path))
    for stream in (module.net.backbone, module.net.flow_backbone):
        got = stream.state_dict()
        assert torch.equal(got["layer3.1.conv2.weight"], state["layer3.1.conv2.weight"])
        assert torch.equal(got["layer4.0.downsample.1.running_var"], state["layer4.0.downsample.1.running_var"])
        assert not torch.equal(got["layer1.0.conv1.weight"][:, :64], state["layer1.0.conv1.weight"])  # 128-ch stem


def test_backbone_weights_in_timm_deep_stem_layout_fill_both_streams(tmp_path):
    from vsreid.models.resnet_weights import load_backbone_weights

    state = _resnet18_state(deep_stem=True)
    path = tmp_path / "resnet18s-timm.pth"
    torch.save({"state_dict": state}, path)
    net = MP2S(backbone="resnet18")
    report = load_backbone_weights(net, path)
    assert not [k for k in report.kept if "prob_encode" not in k]  # the prior encoder is MP2S's own
    image, flow = net.backbone.state_dict(), net.flow_backbone.state_dict()
    assert torch.equal(image["conv1_1.weight"], state["conv1.0.weight"])
    assert torch.equal(image["bn1_3.running_mean"], state["bn1.running_mean"])
    assert torch.allclose(flow["conv1_1.weight"], state["conv1.0.weight"].mean(1, keepdim=True).expand(-1, 2, -1, -1))
    assert torch.equal(flow["layer2.1.conv1.weight"], state["layer2.1.conv1.weight"])


def test_backbone_weights_refuse_the_wrong_file(tmp_path):
    from vsreid.data.errors import DataError
    from vsreid.models.resnet_weights import load_backbone_weights

    not_resnet = tmp_path / "lite0.pth"
    torch.save({"stem.conv.weight": torch.zeros(32, 3, 3, 3)}, not_resnet)
    with pytest.raises(DataError, match=f"^{not_resnet}: not a ResNet state dict"):
        load_backbone_weights(MP2S(backbone="resnet18"), not_resnet)
    resnet18 = tmp_path / "resnet18.pth"
    torch.save(_resnet18_state(deep_stem=True), resnet18)
    with pytest.raises(DataError, match=f"^{resnet18}: only .* layer tensors of backbone fit"):
        load_backbone_weights(MP2S(backbone="resnet34"), resnet18)


def _randomise_bn(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return model.eval()


@pytest.mark.parametrize("config", [
    dict(backbone="resnet18"),
    dict(backbone="efficientnet_lite0", output_stride=16, aspp_channels=16, prior_skip=True, refine_channels=8,
         refine_residual=True, boundary_band=5, residual_band=12, guided_radius=5),
])
def test_inference_graph_folds_batchnorm_with_identical_outputs(config):
    """Every BN fed by a conv is folded into it (only the stems' BN, fed by the image+prior sum, stay), the outputs
    equal the eager network's within 1e-4, and the network given is left as it was."""
    torch.manual_seed(0)
    model = _randomise_bn(MP2S(**config))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    graph = inference_graph(model)
    bns = [name for name, m in graph.named_modules() if isinstance(m, nn.BatchNorm2d)]
    stem_bn = "_bn0" if config["backbone"].startswith("efficientnet") else "bn1_1"
    assert bns == [f"backbone.{stem_bn}", f"flow_backbone.{stem_bn}"]
    image, flow, _ = _inputs(2, 97)
    prior = (torch.rand(2, 1, 97, 97) > 0.5).float()
    residual = torch.rand(2, 1, 97, 97) * 40
    with torch.no_grad():
        eager = torch.softmax(model(image, flow, prior, residual), 1)
        folded = torch.softmax(graph(image, flow, prior, residual), 1)
    torch.testing.assert_close(folded, eager, rtol=0, atol=1e-4)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(p.requires_grad for p in graph.parameters())
    fused = [m for m in graph.modules() if isinstance(m, ConvActivation)]
    acts = [name for name, m in graph.named_modules() if type(m) in (nn.ReLU, nn.ReLU6)]
    assert fused  # the ASPPs' ReLU, and Lite0's ReLU6 and the refiner's ReLU
    if config["backbone"].startswith("efficientnet"):
        assert acts == ["backbone.act", "flow_backbone.act"]  # only the stems' ReLU6, fed by the image+prior sum


def test_fused_convolution_and_activation_equal_the_two_ops(monkeypatch):
    """ConvActivation (oneDNN post-op on CPU) gives conv + ReLU / ReLU6's values, also on its path for other
    devices."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 17, 17).to(memory_format=torch.channels_last) * 4
    for conv in (nn.Conv2d(6, 8, 3, padding=1), nn.Conv2d(6, 6, 5, padding=4, dilation=2, groups=6, bias=False),
                 nn.Conv2d(6, 8, 1, stride=2)):
        conv = conv.eval().requires_grad_(False).to(memory_format=torch.channels_last)
        for kind, act in (("relu", torch.relu), ("hardtanh", lambda y: y.clamp(0, 6))):
            fused = ConvActivation(conv, kind)
            with torch.no_grad():
                expected = act(conv(x))
                torch.testing.assert_close(fused(x), expected, rtol=0, atol=1e-5)
                monkeypatch.setattr(inference_graph_module, "_FUSED_CONV", None)
                torch.testing.assert_close(fused(x), expected, rtol=0, atol=0)
                monkeypatch.undo()


def test_inference_graph_in_place_folds_the_given_network():
    """``in_place`` (prediction's finetuned copy) folds the network itself, with the same outputs as a folded copy."""
    torch.manual_seed(0)
    model = _randomise_bn(MP2S(backbone="efficientnet_lite0", output_stride=16, aspp_channels=16, prior_skip=True))
    copied = inference_graph(model)
    in_place = inference_graph(model, in_place=True)
    assert in_place is model
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 2  # only the stems' BN stay
    image, flow, _ = _inputs(2, 65)
    prior = (torch.rand(2, 1, 65, 65) > 0.5).float()
    with torch.no_grad():
        torch.testing.assert_close(in_place(image, flow, prior), copied(image, flow, prior), rtol=0, atol=1e-6)


def test_frozen_batchnorm_in_the_weights_trains_the_same_gradients():
    """Inside ``batchnorm_in_weights`` a network with frozen BN gives the same outputs and parameter gradients as
    with its BN layers (float64: the same math), holds no BN fed by a conv, and has its modules back afterwards."""
    torch.manual_seed(0)
    model = _randomise_bn(MP2S(backbone="efficientnet_lite0", output_stride=16, aspp_channels=16, prior_skip=True,
                               refine_channels=8, refine_residual=True, boundary_band=5, dropout=0.0)).double()
    set_bn_frozen(model, True)
    model.train()
    modules = dict(model.named_modules())
    image, flow, _ = _inputs(2, 65)
    prior = (torch.rand(2, 1, 65, 65) > 0.5).double()
    residual = torch.rand(2, 1, 65, 65).double() * 40

    def run() -> list[torch.Tensor]:
        model.zero_grad()
        out = model(image.double(), flow.double(), prior, residual)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out).double()).sum().backward()
        return [out.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None]

    reference = run()
    with batchnorm_in_weights(model):
        wrapped = [m for m in model.modules() if isinstance(m, ConvFrozenBN)]
        bns = [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
        assert len(wrapped) > 40 and bns == ["backbone._bn0", "flow_backbone._bn0"]  # the stems' BN: fed by a sum
        folded = run()
    assert len(folded) == len(reference) > 40
    for a, b in zip(folded, reference):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert dict(model.named_modules()) == modules  # the same module objects back in their places


def test_frozen_batchnorm_fold_refuses_a_batchnorm_in_training():
    conv, bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
    with pytest.raises(ValueError, match="must be frozen"):
        ConvFrozenBN(conv, bn.train())
    with pytest.raises(ValueError, match="must be frozen"):
        ConvFrozenBN(conv, bn.eval())  # its affine parameters still train
    model = MP2S(backbone="efficientnet_lite0", output_stride=16, aspp_channels=16).train()  # BN not frozen
    with batchnorm_in_weights(model):
        assert not any(isinstance(m, ConvFrozenBN) for m in model.modules())


@pytest.mark.parametrize("depthwise", [True, False])
@pytest.mark.parametrize("dilation,size", [(1, 21), (2, 21), (6, 13), (24, 21), (3, 8)])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_dilated_conv_backward_equals_autograd_of_conv2d(depthwise, dilation, size, memory_format):
    torch.manual_seed(0)
    channels, kernel = 6, (5 if depthwise else 3)
    fast = DilatedConv2d(channels, channels, kernel, dilation, groups=channels if depthwise else 1, bias=not depthwise)
    plain = nn.Conv2d(channels, channels, kernel, 1, dilation * (kernel // 2), dilation,
                      groups=channels if depthwise else 1, bias=not depthwise)
    plain.load_state_dict(fast.state_dict())  # same parameters, same keys
    fast, plain = fast.to(memory_format=memory_format), plain.to(memory_format=memory_format)
    x = torch.randn(2, channels, size, size + 3).to(memory_format=memory_format)
    grad = torch.randn(2, channels, size, size + 3)
    outs = []
    for conv in (fast, plain):
        xi = x.clone().requires_grad_()
        y = conv(xi)
        outs.append((y, *torch.autograd.grad(y, (xi, *conv.parameters()), grad)))
    for mine, reference in zip(*outs):
        assert mine.shape == reference.shape
        assert torch.allclose(mine, reference, rtol=1e-4, atol=1e-4)
    assert outs[0][2].abs().sum() > 0  # the kernel gradient is not trivially zero


def test_dilated_conv_trains_only_what_requires_grad():
    conv = DilatedConv2d(4, 4, 3, 2, groups=4, bias=False).requires_grad_(False)
    x = torch.randn(1, 4, 9, 9, requires_grad=True)
    conv(x).sum().backward()
    assert x.grad is not None and conv.weight.grad is None
    with pytest.raises(ValueError, match="odd kernel"):
        DilatedConv2d(4, 4, 2, 2)
    with pytest.raises(ValueError, match="groups"):
        DilatedConv2d(4, 8, 3, 2, groups=4)


def test_refiner_concatenates_in_the_memory_order_of_its_features():
    features = torch.randn(2, 8, 9, 9).to(memory_format=torch.channels_last)
    maps = [features, torch.randn(2, 2, 9, 9), torch.randn(2, 1, 9, 9)]
    out = _cat_as(features, maps)
    assert out.is_contiguous(memory_format=torch.channels_last)  # no copy before the next channels_last conv
    assert torch.equal(out, torch.cat(maps, 1))
    nchw = _cat_as(features.contiguous(), [features.contiguous(), maps[1]])
    assert nchw.is_contiguous()
