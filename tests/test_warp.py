"""The original VS-ReID backward warp with its forward-backward check, and the photometric residual of a warp."""
import cv2
import numpy as np
import pytest

from vsreid.data.warp import RESIDUAL_REACH, compose_flows, photometric_residual, warp_grid


def test_translation_moves_values_exactly():
    rng = np.random.default_rng(0)
    src = rng.random((30, 40, 3)).astype(np.float32)
    to_src = np.zeros((30, 40, 2), np.float32)
    to_src[..., 0], to_src[..., 1] = -3, 2  # target p comes from source p + (-3, 2) (x, y)
    from_src = -to_src
    out = warp_grid(to_src, from_src).pull(src)
    assert np.array_equal(out[5:20, 10:30], src[7:22, 7:27])
    assert (out[28:] == 0).all() and (out[:, :3] == 0).all()  # pulled from outside the image


def test_inconsistent_flow_is_rejected_and_threshold_is_configurable():
    labels = np.ones((20, 20), np.uint8)
    to_src = np.zeros((20, 20, 2), np.float32)
    from_src = np.zeros((20, 20, 2), np.float32)
    from_src[:, 10:, 0] = 8.0  # the backward check misses by 8 px on the right half
    assert warp_grid(to_src, from_src).pull(labels)[:19, :15].all()  # 8 px < 100 px: kept (the loose default)
    strict = warp_grid(to_src, from_src, max_error=5.0).pull(labels)
    assert strict[:19, :9].all() and not strict[:, 10:].any()  # the last row and column are never valid


def test_averages_the_two_estimates_and_rounds():
    src = np.arange(20 * 20, dtype=np.float32).reshape(20, 20)
    to_src = np.zeros((20, 20, 2), np.float32)
    from_src = np.zeros((20, 20, 2), np.float32)
    to_src[..., 0] = 4.0
    from_src[..., 0] = -2.0  # estimates 4 and 2 px: averaged to 3
    out = warp_grid(to_src, from_src).pull(src)
    assert out[10, 5] == src[10, 8]


def test_region_equals_the_full_frame_inside_and_zero_outside():
    rng = np.random.default_rng(1)
    values = rng.integers(0, 5, (40, 60)).astype(np.uint8)
    to_src = rng.normal(0, 2, (40, 60, 2)).astype(np.float32)
    from_src = rng.normal(0, 2, (40, 60, 2)).astype(np.float32)
    full = warp_grid(to_src, from_src).pull(values)
    part = warp_grid(to_src, from_src, region=(5, 10, 50, 30)).pull(values)
    assert np.array_equal(part[10:30, 5:50], full[10:30, 5:50])
    part[10:30, 5:50] = 0
    assert not part.any()


def test_composed_flow_follows_the_first_flow_into_the_second():
    first = np.zeros((20, 30, 2), np.float32)
    first[..., 0] = 4.0  # a -> b: 4 px right
    second = np.zeros((20, 30, 2), np.float32)
    second[:, 15:, 1] = 2.0  # b -> c: 2 px down, only where b's x >= 15
    out = compose_flows(first, second)
    assert np.allclose(out[:, :11], [4, 0]) and np.allclose(out[:, 11:], [4, 2])  # b's x = a's x + 4


def test_photometric_residual_is_high_only_where_the_warp_fails():
    rng = np.random.default_rng(2)
    source = cv2.GaussianBlur(rng.integers(0, 255, (60, 80, 3)).astype(np.uint8), (0, 0), 2)
    to_src = np.zeros((60, 80, 2), np.float32)
    to_src[..., 0] = 5.0  # target p comes from source p + (5, 0)
    frame = np.full_like(source, 128)  # new content enters on the right
    frame[:, :75] = source[:, 5:]
    frame[20:40, 20:40] = 0  # something the warp cannot explain (a black occluder on a mid-grey texture)
    res = photometric_residual(frame, source, warp_grid(to_src, -to_src))
    assert res.dtype == np.float32 and res.shape == (60, 80)
    assert res[:15, :70].max() < 1.0 and res[45:54, :70].max() < 1.0  # the warp explains the frame: ~0
    assert res[25:35, 25:35].min() > 20  # the occluder
    assert res[:, 76:].min() > 20  # pulled from outside the source: rejected, no source value


def test_photometric_residual_over_a_region_is_exact_inside_its_reach():
    rng = np.random.default_rng(3)
    frame, source = (rng.integers(0, 255, (50, 70, 3)).astype(np.uint8) for _ in range(2))
    to_src = rng.normal(0, 2, (50, 70, 2)).astype(np.float32)
    from_src = rng.normal(0, 2, (50, 70, 2)).astype(np.float32)
    grid = warp_grid(to_src, from_src)
    full = photometric_residual(frame, source, grid)
    r = RESIDUAL_REACH
    part = photometric_residual(frame, source, grid, region=(10, 0, 60, 40))
    np.testing.assert_array_equal(part[:40 - r, 10 + r:60 - r], full[:40 - r, 10 + r:60 - r])  # top: image border
    assert not np.allclose(part[:40, 10:60], full[:40, 10:60])  # the reach matters
    assert not part[40:].any() and not part[:, :10].any()  # outside the region: not computed


def test_one_grid_moves_every_array_as_the_original_warp_would():
    """The positions are computed once and shared: pulling with them equals the original warp of each array, for
    any value type, over the whole frame and over windows of it."""
    rng = np.random.default_rng(4)
    to_src = cv2.GaussianBlur(rng.normal(0, 20, (40, 60, 2)).astype(np.float32), (0, 0), 3)  # smooth, a few px
    from_src = -to_src + rng.normal(0, 1, (40, 60, 2)).astype(np.float32)
    grid = warp_grid(to_src, from_src, max_error=2.0)
    assert 0.2 < (grid.maps[..., 0] >= 0).mean() < 0.95  # the check rejects some pixels, keeps most
    for values in (rng.random((40, 60, 5)).astype(np.float32), rng.integers(0, 9, (40, 60)).astype(np.uint8),
                   rng.random((40, 60)) > 0.5, rng.random((40, 60, 1))):
        np.testing.assert_array_equal(grid.pull(values), _reference_warp(values, to_src, from_src, 2.0))
        assert grid.pull(values).dtype == values.dtype and grid.pull(values).shape == values.shape
        np.testing.assert_array_equal(grid.pull_window(values, (7, 3, 50, 31)), grid.pull(values)[3:31, 7:50])
    part = warp_grid(to_src, from_src, max_error=2.0, region=(5, 10, 50, 30))
    np.testing.assert_array_equal(part.maps, grid.maps[10:30, 5:50])
    with pytest.raises(ValueError, match="not inside"):
        part.pull_window(values, (0, 0, 10, 10))
    with pytest.raises(ValueError, match="computed for"):
        grid.pull(np.zeros((41, 60), np.float32))
    with pytest.raises(TypeError, match="int64"):
        grid.pull(np.zeros((40, 60), np.int64))


def _reference_warp(values, to_src, from_src, max_error):
    """The warp written out pixel by pixel (bilinear flow sampling as cv2 does it, 1/32 px)."""
    h, w = values.shape[:2]
    out = np.zeros_like(values)
    back = cv2.remap(from_src, *(np.mgrid[0:h, 0:w][::-1].astype(np.float32) + to_src.transpose(2, 0, 1)),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    for y in range(h):
        for x in range(w):
            qx, qy = x + to_src[y, x, 0], y + to_src[y, x, 1]
            bx, by = back[y, x]
            rx, ry = x + (to_src[y, x, 0] - bx) / 2, y + (to_src[y, x, 1] - by) / 2
            if (0 <= qx < w - 1 and 0 <= qy < h - 1 and np.hypot(qx + bx - x, qy + by - y) < max_error
                    and 0 <= rx < w - 1 and 0 <= ry < h - 1):
                out[y, x] = values[int(np.round(ry)), int(np.round(rx))]
    return out
