"""Work split across the CPU's threads: the flip's two passes at once, the same probabilities."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from vsreid.engine import cpu_split, predictor
from vsreid.engine.cpu_split import run_split, split_ways
from vsreid.engine.predictor import PatchPredictor
from vsreid.models.checkpoints import load_network

SIZE = 65
WEIGHTS = Path(__file__).resolve().parents[1] / "checkpoints" / "vsreid_lite0.pt"


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_split_runs_tasks_at_once_in_order_on_shared_threads(two_threads):
    seen, barrier = [], threading.Barrier(2, timeout=10)  # both tasks must be running at the same time

    def task(k):
        barrier.wait()
        seen.append((threading.current_thread() is threading.main_thread(), torch.get_num_threads(),
                     torch.is_grad_enabled()))
        return k

    with torch.no_grad():
        assert run_split([lambda k=k: task(k) for k in range(2)], 2) == [0, 1]
    assert seen == [(False, 1, False)] * 2
    assert torch.get_num_threads() == 2  # the caller's count again
    assert run_split([lambda: threading.current_thread() is threading.main_thread()], 1) == [True]
    assert split_ways("cpu", 4) == 2 and split_ways("cpu", 1) == 1 and split_ways("cuda", 2) == 1


def test_split_passes_on_a_task_error(two_threads):
    def fail():
        raise ValueError("bad crop")

    with pytest.raises(ValueError, match="bad crop"):
        run_split([lambda: 1, fail], 2)
    assert torch.get_num_threads() == 2


def test_flip_passes_at_once_give_the_single_pass_probabilities(two_threads, monkeypatch):
    rng = np.random.default_rng(0)
    crops = (rng.uniform(0, 255, (3, SIZE, SIZE, 3)), rng.normal(0, 2, (3, SIZE, SIZE, 2)),
             rng.uniform(0, 1, (3, SIZE, SIZE)), rng.uniform(0, 40, (3, SIZE, SIZE)))
    net = load_network(WEIGHTS)  # a trained network: a randomly initialised one gives the same P(fg) mirrored
    calls = []
    monkeypatch.setattr(predictor, "run_split", lambda tasks, ways: calls.append(ways) or run_split(tasks, ways))
    split = PatchPredictor(net, flip=True, batch_size=2)(*crops)
    assert calls == [2, 2]  # two batches, each as two passes at once
    monkeypatch.setattr(predictor, "split_ways", lambda device, tasks: 1)
    single = PatchPredictor(net, flip=True, batch_size=2)(*crops)
    assert calls == [2, 2]  # one pass of both halves, not split
    np.testing.assert_allclose(split, single, rtol=0, atol=1e-5)
    unflipped = PatchPredictor(net, flip=False, batch_size=2)(*crops)
    assert np.abs(unflipped - single).max() > 1e-3  # the flip matters, so the comparison above can fail


def test_bfloat16_inference_stays_close_to_float32_on_both_split_paths(two_threads, monkeypatch):
    """``precision="bfloat16"`` runs the network under bfloat16 autocast in each pass (the split's threads too):
    P(fg) near the float32 one but not equal to it, whichever way the flip's passes run."""
    rng = np.random.default_rng(1)
    crops = (rng.uniform(0, 255, (2, SIZE, SIZE, 3)), rng.normal(0, 2, (2, SIZE, SIZE, 2)),
             rng.uniform(0, 1, (2, SIZE, SIZE)), rng.uniform(0, 40, (2, SIZE, SIZE)))
    net = load_network(WEIGHTS)
    exact = PatchPredictor(net, flip=True, batch_size=2)(*crops)
    split = PatchPredictor(net, flip=True, batch_size=2, precision="bfloat16")(*crops)
    monkeypatch.setattr(predictor, "split_ways", lambda device, tasks: 1)
    single = PatchPredictor(net, flip=True, batch_size=2, precision="bfloat16")(*crops)
    for bf16 in (split, single):
        assert bf16.dtype == np.float32
        assert 1e-4 < np.abs(bf16 - exact).mean() < 0.01 and np.abs(bf16 - exact).max() < 0.2
    np.testing.assert_allclose(split, single, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="inference_precision 'half'"):
        PatchPredictor(net, precision="half")


def test_prior_weight_mixes_the_prior_crop_into_the_probabilities(two_threads):
    rng = np.random.default_rng(2)
    crops = (rng.uniform(0, 255, (2, SIZE, SIZE, 3)), rng.normal(0, 2, (2, SIZE, SIZE, 2)),
             (rng.uniform(0, 1, (2, SIZE, SIZE)) > 0.5).astype(np.float32), rng.uniform(0, 40, (2, SIZE, SIZE)))
    net = load_network(WEIGHTS)
    alone = PatchPredictor(net, flip=True, batch_size=2)(*crops)
    for flip in (True, False):
        network = PatchPredictor(net, flip=flip, batch_size=2)(*crops)
        mixed = PatchPredictor(net, flip=flip, batch_size=2, prior_weight=0.2)(*crops)
        np.testing.assert_allclose(mixed, 0.8 * network + 0.2 * crops[2], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(PatchPredictor(net, flip=True, batch_size=2, prior_weight=0.0)(*crops), alone)
    for weight in (1.0, -0.1):
        with pytest.raises(ValueError, match="prior_weight must be in"):
            PatchPredictor(net, prior_weight=weight)


def test_split_threads_are_reused(two_threads):
    run_split([lambda: 0, lambda: 1], 2)
    pools = dict(cpu_split._pools)
    run_split([lambda: 0, lambda: 1], 2)
    assert cpu_split._pools == pools
