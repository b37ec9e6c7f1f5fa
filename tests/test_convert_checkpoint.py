"""`vsreid convert-checkpoint`: an original MP2S.pth.tar becomes a Lightning checkpoint with the same network."""
from __future__ import annotations

import subprocess
import sys

import torch
from torch import nn

from lightning_helpers import REPO
from vsreid.lightning.module import VSReIDModule
from vsreid.models import MP2S


def test_convert_checkpoint_keeps_every_weight_and_the_paper_settings(tmp_path):
    torch.manual_seed(0)
    original = MP2S(backbone="resnet101")
    for m in original.modules():  # statistics a fresh network would not have, so a skipped buffer shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    state = {k: v for k, v in original.state_dict().items() if not k.endswith("num_batches_tracked")}
    source, converted = tmp_path / "MP2S.pth.tar", tmp_path / "mp2s_r101.ckpt"
    torch.save({"state_dict": state, "epoch": 3}, source, _use_new_zipfile_serialization=False)

    proc = subprocess.run([sys.executable, "-m", "vsreid", "convert-checkpoint", str(source), str(converted)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert str(converted) in proc.stdout

    module = VSReIDModule.load_from_checkpoint(converted, map_location="cpu", weights_only=True)
    assert (module.hparams.optimizer, module.hparams.lr, module.hparams.weight_decay) == ("sgd", 0.001, 0.0005)
    assert module.net.backbone.__class__ is original.backbone.__class__
    loaded = module.net.state_dict()
    assert set(state) <= set(loaded)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    image, flow, prior = torch.rand(1, 3, 65, 65) * 255, torch.randn(1, 2, 65, 65), torch.rand(1, 1, 65, 65)
    with torch.no_grad():
        torch.testing.assert_close(module.net.eval()(image, flow, prior), original.eval()(image, flow, prior),
                                   rtol=0, atol=0)
