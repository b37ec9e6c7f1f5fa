"""Lightning layer: fit logs to TensorBoard, predict over DDP equals one device, interrupted predict resumes."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from davis_roots import write_davis_root
from lightning_helpers import REPO, SYNTHETIC, TINY_MODEL, predict_config, run_cli, tiny_weights
from vsreid.data.davis import DavisRoot
from vsreid.data.labels import read_labels
from vsreid.lightning.data import balanced_shards


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    lengths = {f"s{k}": n for k, n in enumerate((26, 28, 30, 33, 27))}
    write_davis_root(root, lengths, **SYNTHETIC)
    return root, list(lengths)


def test_balanced_shards_cover_everything_once():
    costs = [30, 10, 50, 20, 40, 5]
    for n in (1, 2, 3, 7):
        shards = balanced_shards(costs, n)
        assert sorted(i for s in shards for i in s) == list(range(len(costs)))
    loads = [sum(costs[i] for i in s) for s in balanced_shards(costs, 2)]
    assert max(loads) - min(loads) <= 10


def test_fit_logs_scalars_and_images_to_tensorboard(synth, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, names = synth
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 4, "log_every_n_steps": 1,
                    "val_check_interval": 2, "enable_model_summary": False, "default_root_dir": str(tmp_path)},
        "model": {**TINY_MODEL, "image_log_every_n_steps": 2, "lr": 1e-3, "lovasz_weight": 0.5},
        "data": {"class_path": "vsreid.lightning.data.PretrainDataModule",
                 "init_args": {"train_roots": [str(root)], "train_sequences": names[:3], "val_root": str(root),
                               "val_sequences": names[3:4], "val_frame_step": 8, "crop_size": 65, "batch_size": 2,
                               "samples_per_epoch": 8, "num_workers": 0, "flow_preset": "ultrafast",
                               "augment": {"saturation": 0.4, "max_sigma": 1.5}}},
    }
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(cfg))
    run_cli(["fit", "-c", str(tmp_path / "fit.yaml")])
    events = sorted((tmp_path / "lightning_logs").glob("version_*/events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = acc.Tags()
    for scalar in ("train/loss", "train/lr", "val/iou", "val/iou_copy_prior", "val/iou_gain"):
        assert scalar in tags["scalars"], tags["scalars"]
    assert {"train/samples", "val/samples"} <= set(tags["images"])
    image = acc.Images("train/samples")[0]
    assert image.width == 4 * 65 and image.height >= 65
    assert len(acc.Scalars("train/loss")) >= 3
    assert sorted((tmp_path / "lightning_logs").glob("version_*/checkpoints/*.ckpt"))


def test_pretrain_data_augments_as_configured(synth):
    from vsreid.data.augment import Augmentation
    from vsreid.lightning.data import PretrainDataModule

    root, names = synth
    stronger = Augmentation(saturation=0.4, channel_gain=0.15, max_sigma=1.5)
    for augment, expected in ((None, Augmentation()), (stronger, stronger)):
        dm = PretrainDataModule([str(root)], train_sequences=names[:1], crop_size=33, samples_per_epoch=2,
                                num_workers=0, flow_preset="ultrafast", augment=augment)
        dm.prepare_data()
        dm.setup("fit")
        assert dm.train_samples.augmenter.config == expected


def _predict(cfg: Path, out: Path, *extra: str, **kw):
    return run_cli(["predict", "-c", str(cfg), "--output", str(out), *extra], **kw)


def _pngs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.png"))}


@pytest.mark.ddp
def test_predict_two_processes_equals_one(synth, tmp_path):
    root, names = synth
    weights = tiny_weights(tmp_path / "tiny.pt")
    cfg = predict_config(tmp_path / "predict.yaml", root, weights, tmp_path / "logs")
    _predict(cfg, tmp_path / "one")
    _predict(cfg, tmp_path / "two", "--trainer.devices", "2", "--trainer.strategy", "ddp")
    one, two = _pngs(tmp_path / "one"), _pngs(tmp_path / "two")
    expected = sum(len(DavisRoot(root).frame_stems(n)) for n in names)
    assert len([k for k in one if not k.startswith("draft/")]) == expected
    assert one.keys() == two.keys()
    assert all(one[k] == two[k] for k in one), [k for k in one if one[k] != two[k]][:5]
    for out in (tmp_path / "one", tmp_path / "two"):
        assert sorted(p.parent.name for p in out.glob("*/.done")) == sorted(names)
    # each sequence was written by the rank the balanced sharding gave it, and both ranks worked
    costs = [len(DavisRoot(root).frame_stems(n)) * 2 for n in names]
    expected_rank = {names[i]: r for r, shard in enumerate(balanced_shards(costs, 2)) for i in shard}
    ranks = {n: json.loads((tmp_path / "two" / n / ".done").read_text())["rank"] for n in names}
    assert ranks == expected_rank and set(ranks.values()) == {0, 1}
    assert read_labels(tmp_path / "one" / names[0] / "00000.png").max() == 2


def _jf(root: Path, out: Path, names: list[str]) -> float:
    from vsreid.metrics.evaluation import evaluate_sequence, global_table, object_statistics

    davis = DavisRoot(root)
    stats = [object_statistics(*evaluate_sequence(
        np.stack([read_labels(out / n / f"{st}.png") for st in davis.frame_stems(n)]), davis.read_annotations(n),
        name=n)) for n in names]
    return 100 * global_table(np.concatenate(stats).mean(axis=0))["J&F-Mean"]


@pytest.mark.ddp
def test_multi_device_predict_returns_after_every_rank_and_stays_within_tolerance(tmp_path):
    """Rank 1 gets four sequences (four finetunings) against rank 0's one long one: when the command returns, every
    sequence is marked done, and with online finetuning (a float path that depends on the thread count) J&F stays
    within 0.3 of one process."""
    root = tmp_path / "synth"
    names = [f"s{k}" for k in range(5)]
    write_davis_root(root, dict(zip(names, (100, 26, 26, 26, 26))), **dict(SYNTHETIC, synthetic_seed=5))
    costs = [len(DavisRoot(root).frame_stems(n)) * 2 for n in names]
    assert [len(s) for s in balanced_shards(costs, 2)] == [1, 4]
    weights = tiny_weights(tmp_path / "tiny.pt")
    cfg = predict_config(tmp_path / "predict.yaml", root, weights, tmp_path / "logs", reid=False)
    finetune = ["--finetune_steps", "4", "--model.finetune_crop_size", "65"]
    _predict(cfg, tmp_path / "one", *finetune)
    # output to files, not pipes: a pipe would also wait for the other rank, which holds it open (a shell does not)
    log = tmp_path / "two.log"
    with open(log, "w") as f:
        code = subprocess.run([sys.executable, "-m", "vsreid", "predict", "-c", str(cfg), "--output",
                               str(tmp_path / "two"), *finetune, "--trainer.devices", "2", "--trainer.strategy", "ddp"],
                              cwd=REPO, stdout=f, stderr=subprocess.STDOUT, timeout=600).returncode
    done = sorted(p.parent.name for p in (tmp_path / "two").glob("*/.done"))
    assert code == 0, log.read_text()[-4000:]
    assert done == sorted(names), f"returned with {done} done"
    assert f"{len(names)} sequence(s) written to {tmp_path / 'two'} by 2 process(es)" in log.read_text()
    ranks = {n: json.loads((tmp_path / "two" / n / ".done").read_text())["rank"] for n in names}
    assert sorted(ranks.values()) == [0, 1, 1, 1, 1]
    one, two = _jf(root, tmp_path / "one", names), _jf(root, tmp_path / "two", names)
    a, b = _pngs(tmp_path / "one"), _pngs(tmp_path / "two")
    differ = sum(x != b[k] for k, x in a.items() if not k.startswith("draft/"))
    print(f"J&F one process {one:.3f}, two processes {two:.3f}; {differ} of {len(a) // 2} final masks differ")
    assert abs(one - two) <= 0.3, (one, two)


def test_interrupted_predict_resumes_without_partial_files(synth, tmp_path):
    root, names = synth
    weights = tiny_weights(tmp_path / "tiny.pt")
    cfg = predict_config(tmp_path / "predict.yaml", root, weights, tmp_path / "logs", reid=False)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "vsreid", "predict", "-c", str(cfg), "--output", str(out)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not list(out.glob("*/.done")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(p.parent.name for p in out.glob("*/.done"))
    assert 1 <= len(finished) < len(names), "the kill must land between the first and the last sequence"
    for png in out.rglob("*.png"):  # whatever is visible is a complete PNG
        with Image.open(png) as im:
            im.load()
    stamps = {p: p.stat().st_mtime_ns for seq in finished for p in (out / seq).glob("*.png")}
    proc = _predict(cfg, out)
    assert all(p.stat().st_mtime_ns == m for p, m in stamps.items()), "finished sequences were redone"
    assert sorted(p.parent.name for p in out.glob("*/.done")) == sorted(names)
    for seq in names:
        assert len(list((out / seq).glob("*.png"))) == len(DavisRoot(root).frame_stems(seq))
    assert not [p for p in out.rglob(".*") if p.name != ".done"], "temporary files left behind"


def test_exported_weights_rebuild_the_network_they_came_from(tmp_path):
    import torch

    from vsreid.commands.export_model import export
    from vsreid.models.checkpoints import load_network
    from vsreid.lightning.module import VSReIDModule

    torch.manual_seed(0)
    module = VSReIDModule(**{**TINY_MODEL, "refine_channels": 8, "boundary_band": 3, "guided_radius": 2}).eval()
    def ckpt_state(m):
        return {f"net.{k}": v for k, v in m.net.state_dict().items()}

    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": ckpt_state(module), "hyper_parameters": dict(module.hparams)}, ckpt)
    exported = export(ckpt, tmp_path / "tiny.pt")
    inputs = (torch.rand(2, 3, 65, 65) * 255, torch.randn(2, 2, 65, 65), torch.rand(2, 1, 65, 65).round())
    with torch.no_grad():
        expected = module.net(*inputs)
        for path, tol in ((ckpt, 1e-6), (exported, 0.05)):  # the exported file is half precision
            net = load_network(path)
            assert (net.refiner is not None, net.boundary_band, net.guided.radius, net.training) == (True, 3, 2, False)
            torch.testing.assert_close(net(*inputs), expected, atol=tol, rtol=tol)
    bare = tmp_path / "bare.pt"
    torch.save({"state_dict": module.net.state_dict()}, bare)
    with pytest.raises(ValueError, match="bare.pt: no network configuration"):
        load_network(bare)
    # the weights also fit a network without the guided filter, but it would compute something else: refused
    with pytest.raises(ValueError, match=r"tiny.pt: recorded with guided_radius=2 \(here 0\)"):
        VSReIDModule(**{**TINY_MODEL, "refine_channels": 8, "boundary_band": 3, "guided_radius": 0,
                        "init_from": str(exported)})
    # arguments left unset take what the file records
    recorded = VSReIDModule(init_from=str(exported))
    assert (recorded.net.refiner is not None, recorded.net.boundary_band, recorded.net.guided.radius) == (True, 3, 2)
    assert recorded.hparams.guided_radius == 2  # kept in the module's checkpoints too
    # the band has no weights: prediction may widen it (the shipped model is trained with 5, predicts with 10)
    wider = VSReIDModule(**{**TINY_MODEL, "refine_channels": 8, "boundary_band": 6, "guided_radius": 2,
                            "init_from": str(exported)})
    assert wider.net.boundary_band == 6
    plain = tmp_path / "plain.ckpt"  # trained without the filter: switching it on is allowed
    torch.save({"state_dict": ckpt_state(module), "hyper_parameters": {**module.hparams, "guided_radius": 0}}, plain)
    VSReIDModule(**{**TINY_MODEL, "refine_channels": 8, "boundary_band": 3, "guided_radius": 2,
                    "init_from": str(plain)})


def test_validation_measures_the_network_as_predict_runs_it(synth):
    """One-step val/iou: the flip-averaged network (as PatchPredictor runs it, with the residual of the warp) pasted
    back into the frame."""
    import numpy as np
    import torch
    from torch.utils.data import default_collate

    from vsreid.data.crops import paste_back
    from vsreid.data.flow import DISFlow, FlowCache
    from vsreid.data.samples import EvalPairs
    from vsreid.engine.predictor import PatchPredictor
    from vsreid.lightning.module import VSReIDModule, mask_iou

    root, names = synth
    davis = DavisRoot(root)
    pairs = EvalPairs(davis, names[3:4], FlowCache(davis, DISFlow("ultrafast")), size=65, frame_step=8)
    items = [pairs[k] for k in range(len(pairs))]
    torch.manual_seed(0)
    module = VSReIDModule(**{**TINY_MODEL, "refine_channels": 8, "boundary_band": 2, "residual_band": 12,
                             "residual_threshold": 5.0}).eval()
    with torch.no_grad():
        module.net.prior_skip.weight.zero_()  # a network whose output is not mirror-symmetric: its own random
        module.net.refiner.correction.weight.normal_(0, 5)  # decisions, not the prior's
        module.validation_step(default_collate(items), 0)
    crops = (np.stack([(it["image"].transpose(1, 2, 0) * 255) for it in items]),
             np.stack([it["flow"].transpose(1, 2, 0) for it in items]), np.stack([it["prior"][0] for it in items]))
    residuals = np.stack([it["residual"][0] for it in items])

    def pasted_iou(fg):
        return [mask_iou(paste_back(f, tuple(it["box"]), it["target_full"].shape) > 0.5, it["target_full"])
                for f, it in zip(fg, items)]

    expected = pasted_iou(PatchPredictor(module.net, flip=True)(*crops, residuals))
    # the flip and the residual both matter for this network, so the check below can fail
    assert not np.allclose(pasted_iou(PatchPredictor(module.net, flip=False)(*crops, residuals)), expected)
    assert not np.allclose(pasted_iou(PatchPredictor(module.net, flip=True)(*crops)), expected)
    np.testing.assert_allclose(module._val_iou, expected, atol=1e-6)

    module._val_iou, module._val_baseline = [], []
    module.hparams.prior_weight = 0.9  # the prior decides almost everywhere
    with torch.no_grad():
        module.validation_step(default_collate(items), 0)
    mixed = pasted_iou(PatchPredictor(module.net, flip=True, prior_weight=0.9)(*crops, residuals))
    assert not np.allclose(mixed, expected)
    np.testing.assert_allclose(module._val_iou, mixed, atol=1e-6)


def test_backbone_lr_scale_slows_only_the_image_backbones_pretrained_layers():
    from types import SimpleNamespace

    from vsreid.lightning.module import VSReIDModule

    def optimizer_groups(module):
        module._trainer = SimpleNamespace(estimated_stepping_batches=10)  # what the poly schedule reads
        return module.configure_optimizers()["optimizer"].param_groups

    module = VSReIDModule(**TINY_MODEL, lr=0.01, backbone_lr_scale=0.1)
    groups = optimizer_groups(module)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert sorted(rate) == sorted(id(p) for p in module.net.parameters())  # every parameter, once
    net = module.net
    assert rate[id(net.backbone._conv_stem.weight)] == pytest.approx(0.001)
    assert rate[id(net.backbone._bn0.bias)] == pytest.approx(0.001)
    assert rate[id(net.backbone.prob_encode.weight)] == pytest.approx(0.01)  # the prior input starts from zero
    assert rate[id(net.flow_backbone._conv_stem.weight)] == pytest.approx(0.01)
    assert rate[id(net.aspp.out_conv2d.weight)] == pytest.approx(0.01)
    plain = optimizer_groups(VSReIDModule(**TINY_MODEL, lr=0.01))
    assert {g["name"] for g in plain} == {"conv weight", "conv bias", "bn"}


def test_weight_average_is_what_validation_checkpoints_and_prediction_use(tmp_path, monkeypatch):
    import torch

    from vsreid.engine.segmenter import segment_sequence
    from vsreid.lightning.module import VSReIDModule
    from vsreid.lightning.predict import SequenceItem
    from vsreid.models.checkpoints import load_network
    from vsreid.models.mp2s import rgb_to_mp2s

    torch.manual_seed(0)
    module = VSReIDModule(**TINY_MODEL, ema_decay=0.99)
    start = {k: v.clone() for k, v in module.net_ema.named_parameters()}
    with torch.no_grad():
        for p in module.net.parameters():
            p.add_(1.0)
    module.on_train_batch_end(None, None, 0)  # no trainer: step 0, decay min(0.99, 1 / 4)
    for k, v in module.net_ema.named_parameters():
        torch.testing.assert_close(v, start[k] + 0.75)
    assert module.inference_net is module.net_ema
    image, flow, prior = torch.rand(1, 3, 65, 65), torch.randn(1, 2, 65, 65), torch.rand(1, 1, 65, 65)
    with torch.no_grad():
        torch.testing.assert_close(module.eval()(image, flow, prior), module.net_ema(rgb_to_mp2s(image), flow, prior))

    # prediction, the path `vsreid predict` takes (predict_step), runs the average, not the trained network
    import vsreid.lightning.module as module_code

    root = tmp_path / "synth"
    seq = "s0"
    write_davis_root(root, {seq: 26}, **SYNTHETIC)
    item = SequenceItem(str(root), seq, 26, 2, flow_preset="ultrafast", flow_dir=str(tmp_path / "flow"))
    module.hparams.reid = False
    used = []

    def recording(net, *args, **kwargs):
        used.append(net)
        return segment_sequence(net, *args, **kwargs)

    monkeypatch.setattr(module_code, "segment_sequence", recording)
    with torch.inference_mode():
        predicted = module.predict_step(item)
    assert used == [module.net_ema] and predicted.result.labels.shape == (26, 64, 104)

    ckpt = tmp_path / "ema.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
    ema_state = module.net_ema.state_dict()

    def same(state):
        return all(torch.equal(state[k], ema_state[k]) for k in ema_state)

    assert same(load_network(ckpt).state_dict())  # init_from and export-model read the average
    plain = VSReIDModule(**TINY_MODEL)  # e.g. predict --ckpt_path without ema_decay: the average becomes the net
    checkpoint = torch.load(ckpt, weights_only=False)
    plain.on_load_checkpoint(checkpoint)
    plain.load_state_dict(checkpoint["state_dict"])
    assert same(plain.net.state_dict())
    averaged = VSReIDModule(**TINY_MODEL, ema_decay=0.99)  # resuming a plain checkpoint starts the average there
    checkpoint = {"state_dict": {f"net.{k}": v for k, v in plain.net.state_dict().items()}}
    averaged.on_load_checkpoint(checkpoint)
    averaged.load_state_dict(checkpoint["state_dict"])
    assert same(averaged.net.state_dict()) and same(averaged.net_ema.state_dict())
    with pytest.raises(ValueError, match="ema_decay"):
        VSReIDModule(**TINY_MODEL, ema_decay=1.0)
