"""Optical flow: .flo files, DIS accuracy on synthetic motion, the Flow/480p cache and the ``vsreid flow`` tool."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import cv2
import numpy as np
import pytest

from davis_roots import write_davis_root
from vsreid.cli import main
from vsreid.data.errors import DataError
from vsreid.data.flow import DISFlow, FarnebackFlow, FlowCache, make_flow_estimator, read_flo, write_flo
from vsreid.data.labels import write_frame
from vsreid.engine.segmenter import flows_alongside
from vsreid.engine.source import SequenceSource

STEP = (2.0, 1.0)  # (dx, dy) px per frame in the synthetic sequences
SIZE = (96, 128)


def texture(height: int, width: int, seed: int) -> np.ndarray:
    """A multi-scale random texture, (H, W, 3) float32 in [0, 255]."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width), np.float32)
    for sigma in (1, 2, 4, 8):
        img += cv2.GaussianBlur(rng.standard_normal((height, width)).astype(np.float32), (0, 0), sigma) * sigma
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return np.repeat(img[..., None], 3, axis=2)


def translate(img: np.ndarray, d: tuple[float, float]) -> np.ndarray:
    """Content moved by d = (dx, dy) px (bicubic), so the flow from ``img`` to the result is d."""
    m = np.float32([[1, 0, d[0]], [0, 1, d[1]]])
    return cv2.warpAffine(img, m, img.shape[1::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def to_u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def moving_texture(seq: str, t: int, rng=None) -> np.ndarray:
    """Frame t of sequence "a" (texture 0), "b" (texture 1)...: the texture translated by STEP per frame."""
    return to_u8(translate(texture(*SIZE, seed=ord(seq) - ord("a")), (STEP[0] * t, STEP[1] * t)))


#: DAVIS-layout roots (no annotations) whose sequences translate a texture by STEP per frame, with an empty
#: ``Flow/480p``, which caches then use, unless ``flow_folder=False``.
make_root = partial(write_davis_root, sequences=("a",), frames=5, size=SIZE, objects=0, image=moving_texture,
                    flow_folder=True)


def flow_files(folder):
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------------ .flo files
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (17, 1), (436, 1024), (480, 854)])
def test_flo_round_trip_is_bitwise_and_matches_opencv(tmp_path, shape):
    rng = np.random.default_rng(shape[0] * shape[1])
    flow = (rng.standard_normal(shape + (2,)) * 50).astype(np.float32)
    flow.flat[:4] = [np.nan, np.inf, -0.0, 1e9][: flow.size]
    path = write_flo(tmp_path / "x.flo", flow)
    assert path.stat().st_size == 12 + 8 * shape[0] * shape[1]
    back = read_flo(path)
    assert back.dtype == np.float32 and back.shape == shape + (2,)
    assert np.array_equal(back.view(np.uint32), flow.view(np.uint32))
    assert np.array_equal(cv2.readOpticalFlow(str(path)).view(np.uint32), flow.view(np.uint32))
    assert cv2.writeOpticalFlow(str(tmp_path / "cv.flo"), flow)
    assert (tmp_path / "cv.flo").read_bytes() == path.read_bytes()
    assert flow_files(tmp_path) == ["cv.flo", "x.flo"]  # no temporary left behind


def test_write_flo_rejects_a_non_flow_array(tmp_path):
    with pytest.raises(ValueError, match=r"\(H, W, 2\)"):
        write_flo(tmp_path / "x.flo", np.zeros((4, 5, 3), np.float32))
    assert not list(tmp_path.iterdir())


def _header(magic=202021.25, width=4, height=3):
    return np.array([magic], "<f4").tobytes() + np.array([width, height], "<i4").tobytes()


@pytest.mark.parametrize("content, problem", [
    (b"", "truncated .flo file (0 bytes, no complete header)"),
    (b"PIEH\x04\x00", "truncated .flo file (6 bytes, no complete header)"),
    (_header(magic=1.0) + bytes(96), "not a .flo file (magic number 1.0, expected 202021.25)"),
    (b"\x89PNG\r\n\x1a\n" + bytes(100), "not a .flo file"),
    (_header(width=-4) + bytes(96), "absurd flow size -4x3 in the header"),
    (_header(width=1 << 20, height=1 << 20), "absurd flow size 1048576x1048576 in the header"),
    (_header() + bytes(95), "truncated .flo file (107 bytes, expected 108 for 4x3)"),
    (_header() + bytes(100), "4 bytes after the 4x3 flow data"),
])
def test_bad_flo_files_give_one_line_errors(tmp_path, content, problem):
    path = tmp_path / "bad.flo"
    path.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_flo(path)
    assert str(e.value).startswith(f"{path}: {problem}")
    assert "\n" not in str(e.value)


def test_missing_flo_file(tmp_path):
    with pytest.raises(DataError, match="nope.flo: file not found$"):
        read_flo(tmp_path / "nope.flo")


# ------------------------------------------------------------------------------------------------ estimators
def epe(flow: np.ndarray, truth, where: np.ndarray) -> float:
    return float(np.linalg.norm(flow - np.float32(truth), axis=2)[where].mean())


@pytest.mark.parametrize("preset", ["ultrafast", "fast", "medium"])
def test_dis_recovers_a_subpixel_translation(preset):
    d = (3.4, -2.2)
    a = texture(240, 320, seed=0)
    flow = DISFlow(preset)(to_u8(a), to_u8(translate(a, d)))
    assert flow.shape == (240, 320, 2) and flow.dtype == np.float32
    interior = np.zeros((240, 320), bool)
    interior[16:-16, 16:-16] = True
    error = epe(flow, d, interior)
    print(f"DIS {preset} translation {d}: EPE {error:.3f} px")
    assert error < 0.5


def test_dis_computes_the_same_flows_from_several_threads_at_once():
    pairs = [(to_u8(a), to_u8(translate(a, (1.5 * s, -1.0)))) for s, a in ((s, texture(240, 320, seed=s))
                                                                           for s in range(4))]
    dis = DISFlow("medium")
    alone = [dis(a, b) for a, b in pairs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda pair: dis(*pair), pairs * 3))
    assert all(np.array_equal(flow, alone[k % 4]) for k, flow in enumerate(together))


@pytest.mark.parametrize("preset", ["ultrafast", "fast", "medium"])
def test_dis_tracks_a_rigid_object_over_a_static_background(preset):
    h, w, d = 240, 320, (6.0, 3.0)
    background, obj = texture(h, w, seed=1), texture(h, w, seed=2)
    yy, xx = np.mgrid[:h, :w]

    def scene(offset):
        inside = ((xx - 140 - offset[0]) / 70) ** 2 + ((yy - 120 - offset[1]) / 50) ** 2 < 1
        return to_u8(np.where(inside[..., None], translate(obj, offset), background)), inside

    (a, in_a), (b, in_b) = scene((0, 0)), scene(d)
    flow = DISFlow(preset)(a, b)
    kernel = np.ones((17, 17), np.uint8)
    object_interior = cv2.erode(in_a.astype(np.uint8), kernel).astype(bool)
    static = ~cv2.dilate((in_a | in_b).astype(np.uint8), kernel).astype(bool)
    static[:8], static[-8:], static[:, :8], static[:, -8:] = False, False, False, False
    object_error, background_error = epe(flow, d, object_interior), epe(flow, (0, 0), static)
    print(f"DIS {preset} object {d}: EPE {object_error:.3f} px on the object, {background_error:.3f} on the background")
    assert object_error < 0.5 and background_error < 0.5


def test_make_flow_estimator():
    dis = make_flow_estimator("dis", preset="fast")
    assert isinstance(dis, DISFlow) and dis.preset == "fast"
    assert make_flow_estimator().preset == "medium"
    assert isinstance(make_flow_estimator("farneback", preset="medium"), FarnebackFlow)
    assert make_flow_estimator("precomputed") is None
    with pytest.raises(ValueError, match="unknown flow method 'raft'"):
        make_flow_estimator("raft")
    with pytest.raises(ValueError, match="unknown DIS preset 'slow'"):
        DISFlow("slow")


# ------------------------------------------------------------------------------------------------ the cache
def test_cache_names_follow_the_seed_layout(tmp_path):
    frames = 5
    root = make_root(tmp_path, frames=frames)
    cache = FlowCache(root, DISFlow("fast"))
    stats = cache.fill("a", progress=False)
    assert (stats.computed, stats.skipped) == (frames - 1, 0)
    expected = [f"{t:05d}.flo" for t in range(frames - 1)] + [f"{t:05d}.rflo" for t in range(1, frames)]
    assert flow_files(root.flow_dir / "a") == sorted(expected)
    assert [p.name for p in cache.paths("a")] == expected
    assert all(p.parent == tmp_path / "Flow" / "480p" / "a" for p in cache.paths("a"))
    interior = (slice(16, -16), slice(16, -16))
    forward, backward = cache.forward("a", 1), cache.backward("a", 2)  # 1 -> 2 and 2 -> 1
    assert forward.shape == backward.shape == (96, 128, 2) and forward.dtype == np.float32
    assert np.allclose(np.median(forward[interior], axis=0), STEP, atol=0.2)
    assert np.allclose(np.median(backward[interior], axis=0), np.negative(STEP), atol=0.2)
    with pytest.raises(IndexError):
        cache.forward("a", frames - 1)
    with pytest.raises(IndexError):
        cache.backward("a", 0)


def test_cache_uses_the_frames_own_stems(tmp_path):
    root = make_root(tmp_path, frames=3, first=10)
    FlowCache(root, DISFlow("ultrafast")).fill("a", progress=False)
    assert flow_files(root.flow_dir / "a") == ["00010.flo", "00011.flo", "00011.rflo", "00012.rflo"]


def test_forward_computes_only_the_requested_file_then_reads_it(tmp_path):
    root = make_root(tmp_path, frames=3)
    cache = FlowCache(root, DISFlow("ultrafast"))
    computed = cache.backward("a", 2)
    assert flow_files(root.flow_dir / "a") == ["00002.rflo"]
    assert np.array_equal(FlowCache(root, None).backward("a", 2), computed)


def test_fill_skips_existing_files(tmp_path):
    root = make_root(tmp_path, frames=4)
    cache = FlowCache(root, DISFlow("ultrafast"))
    cache.fill("a", progress=False)
    mtimes = {p: p.stat().st_mtime_ns for p in cache.paths("a")}
    stats = cache.fill("a", progress=False)
    assert (stats.computed, stats.skipped) == (0, 3)
    assert {p: p.stat().st_mtime_ns for p in cache.paths("a")} == mtimes
    removed = cache.backward_path("a", 2)
    removed.unlink()
    stats = cache.fill("a", progress=False)
    assert (stats.computed, stats.skipped) == (1, 2)
    assert removed.exists()
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items() if p != removed)


def test_fill_reads_each_frame_once(tmp_path, monkeypatch):
    import vsreid.data.flow as flow_module

    root = make_root(tmp_path, frames=5)
    reads = []
    real = flow_module.read_frame
    monkeypatch.setattr(flow_module, "read_frame", lambda p: reads.append(p.name) or real(p))
    FlowCache(root, DISFlow("ultrafast")).fill("a", progress=False)
    assert reads == [f"{t:05d}.jpg" for t in range(5)]


def test_fill_never_exposes_a_partial_file(tmp_path):
    root = make_root(tmp_path, frames=5)
    folder = root.flow_dir / "a"
    dis, calls = DISFlow("ultrafast"), []

    def failing_estimator(a, b):
        # every file visible under a final name is complete whenever the estimator runs
        if folder.is_dir():
            for p in folder.iterdir():
                assert not p.name.startswith(".")
                assert read_flo(p).shape == (96, 128, 2)
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("estimator crashed")
        return dis(a, b)

    cache = FlowCache(root, failing_estimator)
    with pytest.raises(RuntimeError, match="estimator crashed"):
        cache.fill("a", progress=False)
    assert flow_files(folder) == ["00000.flo", "00001.flo", "00001.rflo"]
    assert cache.fill("a", progress=False).computed == 3  # resumes after the last complete pair


def test_a_flow_of_the_wrong_size_is_a_one_line_error(tmp_path):
    root = make_root(tmp_path, sequences=["dog"], size=(480, 854), flow_folder=False,
                     image=lambda seq, t, rng: np.zeros((480, 854, 3), np.uint8))
    bad = write_flo(root.flow_dir / "dog" / "00003.flo", np.zeros((436, 1024, 2), np.float32))
    message = f"{tmp_path}/Flow/480p/dog/00003.flo: flow is 1024x436, frames are 854x480"
    for cache in (FlowCache(root, None), FlowCache(root, DISFlow("ultrafast"))):
        with pytest.raises(DataError) as e:
            cache.forward("dog", 3)
        assert str(e.value) == message
    with pytest.raises(DataError) as e:
        FlowCache(root, DISFlow("ultrafast")).fill("dog", progress=False)
    assert str(e.value) == message
    assert bad.stat().st_size == 12 + 8 * 436 * 1024  # left as it was


def test_frames_of_different_sizes_are_a_one_line_error(tmp_path):
    root = make_root(tmp_path, frames=3)
    odd = write_frame(root.frames_dir / "a" / "00002.jpg", np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(DataError) as e:
        FlowCache(root, DISFlow("ultrafast")).fill("a", progress=False)
    assert str(e.value) == f"{odd}: frame size 64x64 differs from 00001.jpg's 128x96"


def test_precomputed_cache_names_the_missing_file(tmp_path):
    root = make_root(tmp_path, frames=3)
    cache = FlowCache(root, make_flow_estimator("precomputed"))
    for call in (lambda: cache.forward("a", 1), lambda: cache.fill("a", progress=False)):
        with pytest.raises(DataError, match=r"Flow/480p/a/0000[01]\.flo: flow file missing and computing is disabled"):
            call()
    assert not (root.flow_dir / "a").exists()


def test_without_a_flow_folder_the_cache_lives_in_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VSREID_CACHE", str(tmp_path / "cache"))
    root = make_root(tmp_path / "davis", frames=2, flow_folder=False)
    cache = FlowCache(root, DISFlow("ultrafast"))
    cache.fill("a", progress=False)
    assert cache.flow_dir.parent == tmp_path / "cache" / "flow" and cache.flow_dir.name.startswith("davis-")
    assert flow_files(cache.flow_dir / "a") == ["00000.flo", "00001.rflo"]
    assert sorted(p.name for p in (tmp_path / "davis").iterdir()) == ["JPEGImages"]  # nothing written into the data
    assert FlowCache(make_root(tmp_path / "other" / "davis", frames=2, flow_folder=False), None).flow_dir != \
        cache.flow_dir  # two roots of one name do not share a cache


def test_cache_flow_dir_can_be_elsewhere(tmp_path):
    root = make_root(tmp_path / "davis", frames=2, flow_folder=False)
    FlowCache(root, DISFlow("ultrafast"), flow_dir=tmp_path / "flows").fill("a", progress=False)
    assert flow_files(tmp_path / "flows" / "a") == ["00000.flo", "00001.rflo"]
    assert not root.flow_dir.exists()


# ------------------------------------------------------------------------------------------------ vsreid flow
def test_flow_command_with_two_workers(tmp_path, capsys):
    root = make_root(tmp_path, sequences=("a", "b"), frames=4)
    args = ["flow", "--davis-root", str(tmp_path), "--workers", "2", "--preset", "ultrafast"]
    assert main(args) == 0
    assert "2 sequences, 6 pairs computed, 0 skipped" in capsys.readouterr().out
    for seq in ("a", "b"):
        assert flow_files(root.flow_dir / seq) == sorted(p.name for p in FlowCache(root, None).paths(seq))
    mtimes = {p: p.stat().st_mtime_ns for p in root.flow_dir.rglob("*")}
    assert main(args) == 0
    assert "2 sequences, 0 pairs computed, 6 skipped" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in root.flow_dir.rglob("*")} == mtimes


def test_flow_command_sequences_and_out(tmp_path, capsys):
    make_root(tmp_path / "davis", sequences=("a", "b"), frames=3)
    out = tmp_path / "flows"
    assert main(["flow", "--davis-root", str(tmp_path / "davis"), "--sequences", "b", "--out", str(out),
                 "--method", "farneback"]) == 0
    assert "1 sequences, 2 pairs computed, 0 skipped" in capsys.readouterr().out
    assert [p.name for p in out.iterdir()] == ["b"]


def test_flow_command_reports_a_worker_error_in_one_line(tmp_path, capsys):
    root = make_root(tmp_path, sequences=("a", "b"), frames=3)
    bad = write_flo(root.flow_dir / "b" / "00001.flo", np.zeros((4, 4, 2), np.float32))
    assert main(["flow", "--davis-root", str(tmp_path), "--workers", "2", "--preset", "ultrafast"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"vsreid flow: error: {bad}: flow is 4x4, frames are 128x96"


class _Recording(DISFlow):
    """DIS that notes the threads it runs on; its first call sets ``started`` and takes ``delay`` seconds more."""

    def __init__(self, delay: float = 0.0):
        super().__init__("ultrafast")
        self.threads, self.started, self.delay = set(), threading.Event(), delay

    def __call__(self, frame_a, frame_b):
        self.threads.add(threading.current_thread().name)
        if not self.started.is_set():
            self.started.set()
            time.sleep(self.delay)
        return super().__call__(frame_a, frame_b)


def test_flows_alongside_fill_the_cache_on_a_thread_of_their_own(tmp_path):
    root = make_root(tmp_path, frames=6)
    dis = _Recording()
    cache = FlowCache(root, dis)
    with flows_alongside(SequenceSource(root, "a", cache), enabled=False):
        pass
    assert not (root.flow_dir / "a").exists()
    with flows_alongside(SequenceSource(root, "a", cache)):
        pass
    assert all(p.exists() for p in cache.paths("a"))
    assert dis.threads and all(name.startswith("vsreid-flow") for name in dis.threads)
    with flows_alongside(SequenceSource(root, "a", FlowCache(root, None))):  # precomputed only: nothing to fill
        pass


def test_flows_alongside_stop_after_the_pair_at_hand_when_the_block_fails(tmp_path):
    root = make_root(tmp_path, frames=6)
    dis = _Recording(delay=0.3)
    with pytest.raises(RuntimeError, match="finetuning failed"):
        with flows_alongside(SequenceSource(root, "a", FlowCache(root, dis))):
            assert dis.started.wait(10)
            raise RuntimeError("finetuning failed")
    assert flow_files(root.flow_dir / "a") == ["00000.flo", "00001.rflo"]
