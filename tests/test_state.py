"""The boxed per-object probability store behaves like the dense (T, N, H, W) float16 array it replaces."""
import numpy as np
import pytest

from vsreid.engine.state import ObjectProbs, initial_state, plane_argmax


def test_object_probs_match_a_dense_array_under_every_write():
    rng = np.random.default_rng(0)
    T, N, H, W = 3, 3, 40, 50
    probs, dense = ObjectProbs(T, N, H, W), np.zeros((T, N, H, W), np.float16)
    for _ in range(60):
        t, i = int(rng.integers(T)), int(rng.integers(N))
        action = rng.integers(4)
        if action == 0:
            x1, y1 = int(rng.integers(0, W - 1)), int(rng.integers(0, H - 1))
            x2, y2 = int(rng.integers(x1 + 1, W + 1)), int(rng.integers(y1 + 1, H + 1))
            patch = rng.random((y2 - y1, x2 - x1)).astype(np.float32)
            probs.set(t, i, (x1, y1, x2, y2), patch)
            dense[t, i] = 0
            dense[t, i, y1:y2, x1:x2] = patch
        elif action == 1:
            probs.clear(t, i)
            dense[t, i] = 0
        else:
            where = rng.random((H, W)) > 0.6
            keep = i if action == 3 else None
            probs.erase(t, where, keep)
            for j in range(N):
                if j != keep:
                    dense[t, j][where] = 0
        np.testing.assert_array_equal(probs.dense(), dense)
        np.testing.assert_array_equal(probs.plane(t, i), dense[t, i].astype(np.float32))
    saved, dense_saved = probs.snapshot(0), dense[0].copy()
    probs.erase(0, np.ones((H, W), bool))
    probs.restore(0, saved)
    np.testing.assert_array_equal(probs.dense()[0], dense_saved)
    np.testing.assert_array_equal(probs.frame(1), dense[1].astype(np.float32))
    np.testing.assert_array_equal(probs.crop(2, 1, (5, 6, 30, 20)), dense[2, 1, 6:20, 5:30].astype(np.float32))


def test_object_probs_refuse_a_patch_that_does_not_fit_its_box():
    with pytest.raises(ValueError, match="patch of shape"):
        ObjectProbs(1, 1, 10, 10).set(0, 0, (0, 0, 4, 4), np.ones((3, 4), np.float32))


def test_memory_grows_with_the_boxes_not_the_frames():
    first = np.zeros((480, 854), np.uint8)
    first[100:140, 200:260] = 1
    state = initial_state(first, [1], num_frames=1000)
    assert state.probs.nbytes == 40 * 60 * 2  # the dense float16 array would hold 1000 x 480 x 854 x 2 bytes
    np.testing.assert_array_equal(state.labels(0), first)


def test_plane_argmax_is_numpys_argmax_with_the_first_plane_on_ties():
    rng = np.random.default_rng(0)
    for planes in range(1, 7):
        coarse = rng.integers(0, 3, (planes, 37, 53)).astype(np.float32) / 2  # many exact ties
        fine = rng.random((planes, 37, 53), dtype=np.float32)
        for values in (coarse, fine, np.zeros_like(fine)):
            out = plane_argmax(values)
            assert out.dtype == np.uint8
            np.testing.assert_array_equal(out, np.argmax(values, axis=0))
