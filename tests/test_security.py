"""Nothing executes from a data file: crafted checkpoints and re-ID pickles are refused before their payload runs."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from davis_roots import write_davis_root
from lightning_helpers import REPO, SYNTHETIC, predict_config, tiny_weights
from vsreid.data.errors import DataError
from vsreid.data.safe_pickle import load_data_pickle
from vsreid.models.checkpoints import load_network, read_weights
from vsreid.models.mp2s import MP2S
from vsreid.models.safe_load import UnsafeCheckpointError


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file appearing means code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture
def crafted(tmp_path):
    """(checkpoint path, marker): a checkpoint-shaped file whose payload would create the marker."""
    marker = tmp_path / "payload-ran"
    path = tmp_path / "crafted.ckpt"
    state = torch.load(tiny_weights(tmp_path / "tiny.pt"), weights_only=True)["state_dict"]
    torch.save({"state_dict": state, "hyper_parameters": {"backbone": "efficientnet_lite0"}, "x": Payload(marker)},
               path)
    return path, marker


@pytest.mark.parametrize("load", [read_weights, load_network, lambda p: MP2S.from_original(p, backbone="resnet18")])
def test_crafted_checkpoint_is_refused_in_python(crafted, load):
    path, marker = crafted
    with pytest.raises(UnsafeCheckpointError, match=f"^{path}: refused: loading would have to execute "):
        load(path)
    assert not marker.exists()


def test_crafted_legacy_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "MP2S.pth.tar"
    torch.save({"state_dict": {}, "x": Payload(marker)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError):
        MP2S.from_original(path, backbone="resnet18")
    assert not marker.exists()


def _vsreid(*args, **kw):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "vsreid", *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, **kw)


def _one_error_line(proc, path):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert lines and str(path) in lines[-1] and "refused" in lines[-1], proc.stderr[-3000:]
    assert not any("Traceback" in line for line in lines), proc.stderr[-3000:]


def test_crafted_checkpoint_is_refused_by_convert_checkpoint(crafted, tmp_path):
    path, marker = crafted
    proc = _vsreid("convert-checkpoint", path, tmp_path / "out.ckpt")
    _one_error_line(proc, path)
    assert proc.stderr.strip().count("\n") == 0 and not proc.stdout.strip()
    assert not marker.exists() and not (tmp_path / "out.ckpt").exists()


@pytest.mark.parametrize("option", ["--model.init_from", "--ckpt_path"])
def test_crafted_checkpoint_is_refused_by_predict(crafted, tmp_path, option):
    path, marker = crafted
    root = tmp_path / "synth"
    write_davis_root(root, {"s0": 26}, **SYNTHETIC)
    cfg = predict_config(tmp_path / "predict.yaml", root, tiny_weights(tmp_path / "w.pt"), tmp_path / "logs")
    proc = _vsreid("predict", "-c", cfg, "--output", tmp_path / "out", option, path)
    _one_error_line(proc, path)
    assert not marker.exists()
    assert not list((tmp_path / "out").rglob("*.png"))


def test_crafted_reid_pickle_is_refused(tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "PersonSearch.pkl"
    path.write_bytes(pickle.dumps([[np.zeros((1, 6))], Payload(marker)], protocol=2))
    with pytest.raises(DataError, match=f"^{path}: refused: global io.open is not data"):
        load_data_pickle(path)
    assert not marker.exists()


def test_data_pickles_of_both_protocols_still_read(tmp_path):
    data = [[np.arange(12, dtype=np.float64).reshape(2, 6)], {"seq": [np.float32(0.5), (1, 2.0, "a", b"b")]}]
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        back = load_data_pickle(path)
        assert np.array_equal(back[0][0], data[0][0]) and back[1]["seq"][1] == data[1]["seq"][1]


@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n", b"PK\x03\x04broken zip"])
def test_wrong_checkpoint_file_is_one_clear_line(tmp_path, content):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"^{path}: not a PyTorch checkpoint") as info:
        read_weights(path)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match=f"^{tmp_path / 'missing.ckpt'}: checkpoint not found"):
        read_weights(tmp_path / "missing.ckpt")
