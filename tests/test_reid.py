"""Re-ID: the original's pickles driving a recovery, the recovery rules, the embedded appearance provider, the report
and ``vsreid evaluate-reid``.

The recovery tests run the real engine (Propagator, warp, crops) with a trivial "network" that copies its prior
(``lambda images, flows, priors, residuals: priors``): what the recovery re-initialises is then exactly what ends
up in the labels.
"""
from __future__ import annotations

import csv
import json
import pickle
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from davis_roots import write_davis_root
from vsreid.cli import main as cli_main
from vsreid.data.crops import object_box, share_inside
from vsreid.data.davis import DavisRoot
from vsreid.data.errors import DataError
from vsreid.data.flow import FlowCache, write_flo
from vsreid.engine.boxes import enclosing_iou
from vsreid.engine import propagator as propagator_module
from vsreid.engine.predictor import PatchPredictor
from vsreid.engine.propagator import PropagationConfig, Propagator
from vsreid.engine.reid import (AppearanceReID, OriginalSearchResults, RecoveryConfig, build_report, presence,
                                recover)
from vsreid.engine.reid.appearance import COLOUR_SIDE, REFINE_STEPS, _merge_nested, _ring_weights
from vsreid.engine.reid.recovery import (FrameViews, _best_candidate, breaks_track, restore_spoiled_neighbours,
                                        track_jump)
from vsreid.engine.source import SequenceSource
from vsreid.engine.state import initial_state
from vsreid.models import MP2S

H, W = 64, 96
LENGTHS = {"seqa": 5, "seqb": 8}  # the split, in order: seqb's frames start at global frame 5
OBJ1_BEFORE, OBJ1_AFTER, OBJ2 = (10, 20, 30, 40), (60, 20, 80, 40), (40, 45, 55, 60)  # x1, y1, x2, y2
LOST_AT = 3  # object 1 is absent in frames 3-5 and back at OBJ1_AFTER in frames 6-7
COPY_PRIOR = lambda images, flows, priors, residuals: priors  # noqa: E731  the trivial network: output = prior
CONFIG = PropagationConfig(crop_size=33)


def _fill(labels, box, value):
    x1, y1, x2, y2 = box
    labels[y1:y2, x1:x2] = value


def _labels(seq, t):
    """Object 1 at OBJ1_BEFORE, absent in frames LOST_AT..5, then at OBJ1_AFTER; object 2 at OBJ2 throughout."""
    labels = np.zeros((H, W), np.uint8)
    if t < LOST_AT or t > 5:
        _fill(labels, OBJ1_BEFORE if t < LOST_AT else OBJ1_AFTER, 1)
    _fill(labels, OBJ2, 2)
    return labels


def _frame(seq, t, rng):
    """Noise with object 1 red and object 2 blue."""
    frame, labels = rng.integers(0, 255, (H, W, 3), dtype=np.uint8), _labels(seq, t)
    frame[labels == 1], frame[labels == 2] = (250, 0, 0), (0, 0, 250)
    return frame


def _flow(seq, t, step):
    """Zero, except that the backward flow of frame LOST_AT points out of the image where object 1 was."""
    flow = np.zeros((H, W, 2), np.float32)
    if step == -1 and t == LOST_AT:
        _fill(flow[..., 0], OBJ1_BEFORE, 1000.0)
    return flow


def _tiny_root(path):
    """Two sequences in DAVIS layout with ground truth on every frame and zero flow, except that seqb's backward
    flow of frame 3 points out of the image where object 1 was, so the warp drops it and the draft loses it."""
    return write_davis_root(path, LENGTHS, size=(H, W), labels=_labels, image=_frame, flow=_flow,
                            splits={"tiny": list(LENGTHS)})


def _rows(*rows):
    """(K, 6) rows of the original layout: x1, y1, x2, y2, detector score (dropped), re-ID score."""
    return np.array([[*box, 0.99, score] for box, score in rows], np.float64).reshape(-1, 6)


def _write_pickles(root: DavisRoot, person: dict, objects: dict, total: int | None = None, person_class=(0.9, 0.1)):
    """The three pickles (protocol 2, as Python 2 wrote them); ``person``/``objects`` map (seq, t, id) -> rows."""
    frames = [(seq, t) for seq, n in LENGTHS.items() for t in range(n)]
    for name, table in (("PersonSearch", person), ("ObjectSearch", objects)):
        data = [[table.get((seq, t, oid), _rows()) for oid in (1, 2)] for seq, t in frames][:total]
        path = root.root / name / "480p" / "tiny.pkl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(data, protocol=2))
    classes = {}
    for seq in LENGTHS:
        vectors = np.zeros((2, 200))
        vectors[:, 123] = person_class
        classes[seq] = [vectors[0], vectors[1]]
    (root.root / "Class/480p").mkdir(parents=True, exist_ok=True)
    (root.root / "Class/480p/tiny.pkl").write_bytes(pickle.dumps(classes, protocol=2))


def _source(root: DavisRoot, seq="seqb") -> SequenceSource:
    return SequenceSource(root, seq, FlowCache(root, None))


def _start(root: DavisRoot, predictor=COPY_PRIOR):
    source = _source(root)
    propagator = Propagator(predictor, CONFIG)
    first = root.read_annotation("seqb", "00000")
    state = propagator.start(source, first, [1, 2])
    propagator.run_forward(source, state)
    return source, propagator, state, first


def _stuck_draft(path):
    """``_start`` on a tiny root whose backward flow at LOST_AT is zero: the copy-prior draft keeps object 1 where it
    was instead of losing it, so only a drift test can find it lost. Returns (source, propagator, state)."""
    root = _tiny_root(path)
    write_flo(root.root / "Flow/480p/seqb" / f"{LOST_AT:05d}.rflo", np.zeros((H, W, 2), np.float32))
    return _start(root)[:3]


def test_propagation_hands_the_predictor_the_residual_of_its_warp(tmp_path):
    """Warped priors come with the photometric residual of their warp (low on the objects, whose colour the warp
    carries over, high on the background noise); priors a re-identification seeds come with None."""
    calls = []

    def recording(images, flows, priors, residuals):
        calls.append((priors, residuals))
        return priors

    source, propagator, state, _ = _start(_tiny_root(tmp_path), recording)
    assert len(calls) == source.num_frames - 1
    for priors, residuals in calls:
        assert residuals is not None and residuals.shape == priors.shape
        assert residuals[priors > 0.99].mean() < 15 and residuals[priors < 0.01].mean() > 40
    calls.clear()
    propagator.reinitialize(source, state, 6, 0, OBJ1_AFTER)
    assert calls and all(residuals is None for _, residuals in calls)


def test_no_residual_is_computed_for_a_network_that_reads_none(tmp_path, monkeypatch):
    """A predictor whose network reads no residual (the paper config) gets None, the residual is not computed, and the
    propagation is otherwise the same."""
    class PaperNetwork:
        uses_residual = False

        def __call__(self, images, flows, priors, residuals):
            assert residuals is None
            return priors

    root = _tiny_root(tmp_path)
    _, _, with_residual, _ = _start(root)

    def not_needed(*args, **kwargs):
        raise AssertionError("residual computed for a network that reads none")

    monkeypatch.setattr(propagator_module, "photometric_residual", not_needed)
    _, _, without, _ = _start(root, PaperNetwork())
    np.testing.assert_array_equal(without.probs.dense(), with_residual.probs.dense())
    small = dict(backbone="efficientnet_lite0", output_stride=16, aspp_channels=16)
    assert not PatchPredictor(MP2S(**small)).uses_residual
    assert PatchPredictor(MP2S(**small, refine_channels=8, refine_residual=True)).uses_residual
    assert MP2S(**small, prior_skip=True, boundary_band=4, residual_band=8).uses_residual


# -------------------------------------------------------------------- (a) the pickles drive a recovery
def test_original_pickles_drive_a_recovery(tmp_path):
    root = _tiny_root(tmp_path)
    global_6 = LENGTHS["seqa"] + 6
    assert global_6 == 11
    # the person pass (object 1 is a person) finds it at its true place; ObjectSearch has a worse, wrong box
    wrong = (5, 45, 25, 60)
    _write_pickles(root, person={("seqb", 6, 1): _rows((OBJ1_AFTER, 0.9)), ("seqb", 6, 2): _rows((OBJ1_AFTER, 0.2)),
                                 ("seqb", 7, 1): _rows((OBJ1_AFTER, 0.85))},
                   objects={("seqb", 6, 1): _rows((wrong, 0.8)), ("seqb", 6, 2): _rows((wrong, 0.1))})
    provider = OriginalSearchResults.from_davis_root(root, "tiny")
    source, propagator, state, first = _start(root)
    draft = np.stack([state.labels(t) for t in range(state.num_frames)])
    assert (draft[LOST_AT:, :, :] == 1).sum() == 0, "the draft must have lost object 1"
    assert (draft == 2).sum(axis=(1, 2)).min() > 0

    provider.prepare(source, first, [1, 2])
    assert provider.class_scores(0)[123] == pytest.approx(0.9)
    provider.set_pass("object")
    np.testing.assert_array_equal(provider.candidates(6, 0), [[*wrong, 0.8]])  # columns 0-3 and 5
    log = recover(propagator, source, state, provider, RecoveryConfig())

    assert [(r.frame, r.object_index, r.kind) for r in log.recoveries] == [(6, 0, "person")]
    assert log.recoveries[0].box == tuple(float(v) for v in OBJ1_AFTER)
    for t in (6, 7):
        obj = state.labels(t) == 1
        assert obj.sum() > 100
        x1, y1, x2, y2 = OBJ1_AFTER
        assert obj[y1:y2, x1:x2].sum() == obj.sum(), f"frame {t}: object 1 outside the re-identified box"
    assert (state.labels(6) == 2).sum() == (draft[6] == 2).sum()

    report = build_report("seqb", draft, provider, log, [1, 2])
    assert report["lost"] == [[t, 1] for t in range(LOST_AT, 7)]
    assert report["candidates"]["6:1"] == [[*wrong, 0.8]] and report["candidates"]["3:1"] == []
    assert report["recoveries"] == [{"frame": 6, "object_id": 1, "box": [60.0, 20.0, 80.0, 40.0], "score": 0.9,
                                     "kind": "person"}]
    json.dumps(report)


# ----------------------------------------------------------------------------- (b) wrong pickle length
def test_wrong_pickle_length_names_file_and_numbers(tmp_path):
    root = _tiny_root(tmp_path)
    _write_pickles(root, {}, {}, total=12)
    with pytest.raises(DataError) as err:
        OriginalSearchResults.from_davis_root(root, "tiny")
    msg = str(err.value)
    assert "PersonSearch/480p/tiny.pkl" in msg and "12 frames" in msg and "13 frames" in msg
    assert "\n" not in msg


# ---------------------------------------------------------------------------------- (c) recovery rules
class _Table:
    """A provider serving fixed candidates: ``rows[i]`` (K, 5) for every frame."""

    def __init__(self, rows):
        self.rows = [np.asarray(r, np.float64).reshape(-1, 5) for r in rows]

    def prepare(self, source, first_labels, object_ids):
        pass

    def candidates(self, t, i):
        return self.rows[i]

    def class_scores(self, i):
        return None


def _state_frame1(obj1_box=None, obj2_box=None):
    """A 3-frame state (only frame 1 is searched) with the given objects present in frame 1."""
    first = np.zeros((H, W), np.uint8)
    _fill(first, OBJ1_BEFORE, 1)
    _fill(first, OBJ2, 2)
    state = initial_state(first, [1, 2], 3)
    for i, box in enumerate((obj1_box, obj2_box)):
        if box is not None:
            mask = np.zeros((H, W), np.float16)
            _fill(mask, box, 1)
            state.probs.set_plane(1, i, mask)
    return state


def test_candidate_on_a_visible_object_is_rejected_by_enclosing_box_iou():
    visible = (40, 20, 60, 40)
    state = _state_frame1(obj2_box=visible)  # object 1 is missing in frame 1, object 2 is visible there
    present = presence(state)[1]
    assert not present[0] and present[1]
    robust = object_box(state.labels(1) == 2, box_enlargement=0.0, ratio=0.99)
    over = (46, 20, 66, 40)  # shifted by 6 px: intersection / enclosing box > 0.3
    beside = (52, 26, 72, 46)  # standard IoU 0.22, enclosing-box "IoU" lower: accepted
    assert enclosing_iou(over, robust) > 0.3 > enclosing_iou(beside, robust)
    far = (70, 5, 90, 25)
    for box, accepted in ((over, False), (beside, True), (far, True)):
        provider = _Table([[[*box, 0.9]], [[*box, 0.1]]])
        found = _best_candidate(FrameViews(state), provider, [0, 1], RecoveryConfig())
        assert (found is not None) == accepted, box
        if accepted:
            assert found == (1, 0, tuple(float(v) for v in box), 0.9)


def test_candidate_scored_higher_by_another_missing_object_is_rejected():
    box, other = (60, 20, 80, 40), (5, 45, 25, 60)
    provider = _Table([[[*box, 0.8], [*other, 0.2]], [[*box, 0.9], [*other, 0.6]]])
    both_missing = _state_frame1()
    found = _best_candidate(FrameViews(both_missing), provider, [0, 1], RecoveryConfig())
    assert found == (1, 1, tuple(float(v) for v in box), 0.9)
    # object 2 visible elsewhere: its higher score for the box no longer counts
    provider = _Table([[[*box, 0.8]], [[*box, 0.9]]])
    state = _state_frame1(obj2_box=(0, 0, 15, 15))
    found = _best_candidate(FrameViews(state), provider, [0, 1], RecoveryConfig())
    assert found == (1, 0, tuple(float(v) for v in box), 0.8)
    assert _best_candidate(FrameViews(state), provider, [0, 1], RecoveryConfig(score_threshold=0.85)) is None


class _Frames(_Table):
    """A provider serving ``rows[t][i]`` (K, 5) in frame t (none in frames it does not list)."""

    def __init__(self, rows):
        self.rows = {t: [np.asarray(r, np.float64).reshape(-1, 5) for r in per] for t, per in rows.items()}

    def candidates(self, t, i):
        return self.rows[t][i] if t in self.rows else np.zeros((0, 5))


def test_a_candidate_must_recur_in_a_neighbouring_frame():
    """Object 1 is missing in frame 1 of a 3-frame state; a candidate there (20 x 20 px) is accepted only when a box
    in frame 0 or 2 is within half an object size and a factor 2.5 in area, or object 1's own mask there is mostly
    inside it."""
    box, missing = (60, 20, 80, 40), [[], []]
    state = _state_frame1()
    found = lambda provider, **kw: _best_candidate(FrameViews(state), provider, [0, 1],  # noqa: E731
                                                   RecoveryConfig(**kw))
    flash = _Frames({1: [[[*box, 0.9]], []]})
    assert found(flash) is None
    assert found(flash, require_recurrence=False) == (1, 0, tuple(float(v) for v in box), 0.9)
    for neighbour, recurs_ in (((66, 26, 86, 46), True),  # shifted by 0.42 object sizes
                               ((70, 20, 90, 40), True),  # by 0.5 ...
                               ((71, 20, 91, 40), False),  # ... and 0.55
                               ((55, 15, 85, 45), True),  # x2.25 the area
                               ((52, 12, 88, 48), False),  # x3.24
                               ((0, 0, 20, 20), False)):
        for t in (0, 2):  # either neighbour, at any score
            rows = {1: [[[*box, 0.9]], []], t: [[[*neighbour, 0.1]], []]}
            assert (found(_Frames(rows)) is not None) == recurs_, (neighbour, t)
    # object 1's own mask in frame 0 (OBJ1_BEFORE) mostly inside a candidate of frame 1: the track goes on
    around = (5, 15, 35, 45)
    assert found(_Frames({1: [[[*around, 0.9]], []], 0: missing, 2: missing})) == (
        1, 0, tuple(float(v) for v in around), 0.9)
    assert found(_Frames({1: [[[20, 20, 40, 40, 0.9]], []]})) is not None  # half of it inside (200 of 400 px)
    assert found(_Frames({1: [[[21, 20, 41, 40, 0.9]], []]})) is None  # 180 px


# ------------------------------------------------------------------------------------- (d) termination
def test_recovery_terminates_when_a_provider_always_answers(tmp_path):
    """A network that erases everything keeps every object lost, so each round re-identifies a new (frame, object)
    pair: the loop must stop after (T - 2) x N rounds (first and last frames are never searched). Undoing the
    failed (empty) re-initialisations, it also stops after (T - 2) x N tries, or N x max_failures."""
    erase = lambda images, flows, priors, residuals: np.zeros_like(priors)  # noqa: E731
    source, propagator, state, first = _start(_tiny_root(tmp_path), erase)
    provider = _Table([[[60, 20, 80, 40, 0.95], [0, 0, 20, 20, 0.1]], [[60, 20, 80, 40, 0.1], [0, 0, 20, 20, 0.9]]])
    log = recover(propagator, source, state, provider, RecoveryConfig(undo_failed=False))
    t, n = state.num_frames, state.num_objects
    pairs = [(r.frame, r.object_index) for r in log.recoveries]
    assert len(pairs) == len(set(pairs)) == (t - 2) * n <= t * n
    assert all(state.anchors[f, i] == f for f, i in pairs)
    source, propagator, state, first = _start(_tiny_root(tmp_path / "undo"), erase)
    anchors = state.anchors.copy()
    log = recover(propagator, source, state, provider, RecoveryConfig(undo_failed=True))
    tried = [(r.frame, r.object_index) for r in log.undone]
    assert not log.recoveries and len(tried) == len(set(tried)) == (t - 2) * n
    np.testing.assert_array_equal(state.anchors, anchors)  # nothing was kept
    source, propagator, state, first = _start(_tiny_root(tmp_path / "limited"), erase)
    log = recover(propagator, source, state, provider, RecoveryConfig(undo_failed=True, max_failures=2))
    assert not log.recoveries and sorted(r.object_index for r in log.undone) == [0, 0, 1, 1]
    source, propagator, state, first = _start(_tiny_root(tmp_path / "capped"), erase)
    assert len(recover(propagator, source, state, provider, RecoveryConfig(max_rounds=3, undo_failed=False)
                       ).recoveries) == 3


def test_a_failed_candidate_is_not_tried_again_where_it_continues(tmp_path):
    """Every re-initialisation fails (the network erases everything). Object 1's best candidate stays in one place in
    frames 1-4 and is elsewhere in frames 5-6. With skip_failed_chains N, a failure is not tried again in the next N
    frames where the same candidate continues: N = 6 tries frame 1 (not 2-4) and the other place once (5, not 6);
    N = 2 tries frame 1 (not 2-3), then 4 and 5; without it (0), every frame is tried."""
    erase = lambda images, flows, priors, residuals: np.zeros_like(priors)  # noqa: E731
    here, there = (60, 20, 80, 40), (0, 44, 20, 64)  # 3.2 object sizes apart
    rows = {t: [[[*(here if t < 5 else there), 0.9 if t < 5 else 0.8]], []] for t in range(8)}
    for skip, tried in ((6, [1, 5]), (2, [1, 4, 5]), (0, [1, 2, 3, 4, 5, 6])):
        source, propagator, state, _ = _start(_tiny_root(tmp_path / str(skip)), erase)
        log = recover(propagator, source, state, _Frames(rows), RecoveryConfig(skip_failed_chains=skip))
        assert not log.recoveries
        assert sorted(r.frame for r in log.undone) == tried and {r.object_index for r in log.undone} == {0}


# ------------------------------------------------------------------------ (d') drift and observed views
class _Verifying(_Table):
    """A provider that knows the ground truth of seqb: object 1 (index 0) is a candidate only where it is back
    (frames 6, 7), and a mask of it is drifted wherever it does not cover the ground truth. Records ``observe``."""

    def __init__(self):
        super().__init__([[], []])
        self.observed, self.without_view = [], []

    def candidates(self, t, i):
        return np.array([[*OBJ1_AFTER, 0.9]]) if i == 0 and t > 5 else np.zeros((0, 5))

    def is_drifted(self, t, i, box, threshold=None):
        return i == 0 and t >= LOST_AT and (t <= 5 or _iou(box, OBJ1_AFTER) < 0.5)

    def observe(self, t, i, box, view=True):
        self.observed.append((t, i))
        if not view:
            self.without_view.append((t, i))


class _ExtraInFrame4(_Verifying):
    """Like _Verifying, but object 1 (absent from frame 4) has one candidate there: box EXTRA scored SCORE."""

    EXTRA: tuple[int, int, int, int]
    SCORE: float

    def candidates(self, t, i):
        if i == 0 and t == 4:
            return np.array([[*self.EXTRA, self.SCORE]])
        return super().candidates(t, i)


class _WrongFirst(_ExtraInFrame4):
    """Object 1's best candidate in frame 4 is a box on the background, which the drift test rejects once
    re-initialised there."""

    EXTRA, SCORE = (40, 5, 60, 18), 0.95

    def is_drifted(self, t, i, box, threshold=None):
        return i == 0 and (t == 4 or super().is_drifted(t, i, box))


def test_a_reinitialisation_that_fails_the_drift_test_is_undone(tmp_path):
    root = _tiny_root(tmp_path)
    source, propagator, state, _ = _start(root)
    probs4, anchors4 = state.probs.frame(4), state.anchors[4].copy()
    no_recurrence = dict(distractor_window=2, require_recurrence=False)  # frame 4's box is a one-frame flash
    log = recover(propagator, source, state, _WrongFirst(), RecoveryConfig(**no_recurrence))
    assert [(r.frame, r.object_index) for r in log.undone] == [(4, 0)]
    assert [(r.frame, r.object_index) for r in log.recoveries] == [(6, 0)]  # the right one is still found
    assert not (state.labels(4) == 1).any()
    np.testing.assert_array_equal(state.anchors[4, 1], anchors4[1])
    np.testing.assert_array_equal(state.probs.plane(4, 1), probs4[1])
    # without the undo, the wrong box is kept (and propagated)
    source, propagator, state, _ = _start(_tiny_root(tmp_path / "kept"))
    log = recover(propagator, source, state, _WrongFirst(), RecoveryConfig(**no_recurrence, undo_failed=False))
    assert (4, 0) in [(r.frame, r.object_index) for r in log.recoveries]


def test_a_mask_stuck_where_the_object_was_is_dropped_and_the_object_recovered(tmp_path):
    source, propagator, state = _stuck_draft(tmp_path)
    assert presence(state)[:, 0].all()  # the draft never loses it: without a drift test nothing can be recovered
    provider = _Verifying()
    # the recovery's track holds frame 7 alone, so it shows views with views_need_track=1 (not the default 3)
    log = recover(propagator, source, state, provider, RecoveryConfig(distractor_window=2, views_need_track=1))
    # dropped from the draft: frames 3-7; re-found in frame 6, propagated back over 5-3 where it is dropped again
    assert sorted(log.drifted) == sorted([(t, 0) for t in range(LOST_AT, 8)] + [(t, 0) for t in range(LOST_AT, 6)])
    assert [(r.frame, r.object_index) for r in log.recoveries] == [(6, 0)]
    for t in range(LENGTHS["seqb"]):
        mask = state.labels(t) == 1
        if LOST_AT <= t <= 5:
            assert not mask.any(), t
        else:
            assert _iou(object_box(mask, box_enlargement=0.0), OBJ1_BEFORE if t < LOST_AT else OBJ1_AFTER) > 0.5, t
    # frames near the anchors were shown to the provider: frame 0's window for both objects, then the recovery's
    assert {(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (6, 0), (7, 0)} <= set(provider.observed)
    assert (LOST_AT, 0) not in provider.observed  # object 1 was missing there
    assert not provider.without_view


def test_without_views_from_recoveries_a_recovery_teaches_only_distractors(tmp_path):
    """``views_from_recoveries=False``: the frames near a re-identification are shown to the provider without
    keeping views of the object; the first frame's still are."""
    source, propagator, state = _stuck_draft(tmp_path)
    provider = _Verifying()
    log = recover(propagator, source, state, provider, RecoveryConfig(distractor_window=2,
                                                                      views_from_recoveries=False))
    assert [(r.frame, r.object_index) for r in log.recoveries] == [(6, 0)]
    assert {(6, 0), (7, 0)} <= set(provider.without_view)
    assert all(t >= 6 for t, _ in provider.without_view) and (0, 0) in provider.observed


def test_a_recovery_shows_views_only_where_its_track_holds(tmp_path):
    """``views_need_track=K``: a re-identification shows the provider views of its object only when K of the frames
    it re-propagated still hold the object after the drift drops. The recovery in frame 6 keeps one (frame 7; the
    masks it carried back over frames 5-3 are dropped)."""
    for need, viewless in ((1, False), (2, True)):
        source, propagator, state = _stuck_draft(tmp_path / str(need))
        provider = _Verifying()
        log = recover(propagator, source, state, provider, RecoveryConfig(distractor_window=2,
                                                                          views_need_track=need))
        assert [(r.frame, r.object_index) for r in log.recoveries] == [(6, 0)]
        assert set(provider.without_view) == ({(6, 0), (7, 0)} if viewless else set()), need
        assert {(6, 0), (7, 0)} <= set(provider.observed)  # distractors are taught either way


class _LookAlike(_ExtraInFrame4):
    """In frame 4, while object 1 is hidden, a look-alike far from both of object 1's places scores 0.8 as object 1
    and passes its drift test wherever a mask covers it."""

    EXTRA, SCORE = (56, 0, 80, 20), 0.8

    def is_drifted(self, t, i, box, threshold=None):
        return not (i == 0 and _iou(box, self.EXTRA) > 0.5) and super().is_drifted(t, i, box)


def _vanishing_root(path):
    """_tiny_root, with the forward flow of frame 5 pointing out of the image where object 1 is back in frame 6: a
    backward propagation from frame 6 loses it in frame 5, as it should (it is hidden there)."""
    root = _tiny_root(path)
    flow = np.zeros((H, W, 2), np.float32)
    _fill(flow[..., 0], OBJ1_AFTER, 1000.0)
    write_flo(root.root / "Flow/480p/seqb/00005.flo", flow)
    return root


def test_a_reidentification_that_jumps_from_the_objects_track_is_undone(tmp_path):
    """Object 1 is re-found in frame 6 (score 0.9); propagated backward, it is lost in frame 5, so it never meets
    the frame-2 track. Then the look-alike of frame 4 (0.8) propagates into frame 3, next to object 1's
    tracks in frames 2 and 6, 2.9 object sizes from the frame-2 one: with max_jump 2 it is undone, frames and all.
    (Frame 5 stays with frame 6's anchor, as near as frame 4's: each frame keeps its nearest anchor's prediction.)"""
    source, propagator, state, _ = _start(_vanishing_root(tmp_path))
    before = {t: (state.probs.frame(t), state.anchors[t].copy()) for t in (3, 4, 5)}
    no_recurrence = dict(distractor_window=2, require_recurrence=False)  # the look-alike shows in frame 4 only
    log = recover(propagator, source, state, _LookAlike(), RecoveryConfig(**no_recurrence, max_jump=2.0))
    assert [(r.frame, r.object_index) for r in log.recoveries] == [(6, 0)]
    assert [(r.frame, r.object_index) for r in log.undone] == [(4, 0)]
    for t in (3, 4, 5):
        assert not (state.labels(t) == 1).any(), t
        np.testing.assert_array_equal(state.probs.plane(t, 1), before[t][0][1])
    views = FrameViews(state)
    assert tuple(views.tight(2)[0]) == OBJ1_BEFORE and tuple(views.tight(6)[0]) == (62, 22, 77, 37)
    # centre distance over the geometric-mean side: 49.5 px over (20 x 20 x 15 x 15) ** 0.25 px
    assert track_jump(views, 0, 2, 6) == pytest.approx(np.hypot(49.5, 0.5) / (400 * 225) ** 0.25)
    assert track_jump(views, 0, 2, 3) == 0.0  # absent from frame 3
    # without the test (None, or .inf on the command line) the look-alike is kept in frames 3 and 4
    for off in (None, float("inf")):
        source, propagator, state, _ = _start(_vanishing_root(tmp_path / f"kept-{off}"))
        log = recover(propagator, source, state, _LookAlike(), RecoveryConfig(**no_recurrence, max_jump=off))
        assert [(r.frame, r.object_index) for r in log.recoveries] == [(6, 0), (4, 0)]
        for t in (3, 4):
            assert _iou(object_box(state.labels(t) == 1, box_enlargement=0.0), _LookAlike.EXTRA) > 0.5, t


class _LookAlikeAlone(_LookAlike):
    """_LookAlike whose masks of object 1 in frame 3 fail the drift test: re-found in frame 4, the look-alike's
    track is frame 4 alone, one frame short of object 1's frame-2 track."""

    def is_drifted(self, t, i, box, threshold=None):
        return (i == 0 and t == 3) or super().is_drifted(t, i, box)


def test_a_reidentification_far_from_the_track_across_missing_frames_is_undone(tmp_path):
    """With its frame-3 mask dropped, the look-alike of frame 4 never meets object 1's frame-2 track in adjacent
    frames, so the adjacent-frames test keeps it at max_jump 1.2; across the missing frame 3 it lies more than 1.2
    object sizes a frame from the frame-2 track (``jump_across_gaps``) and is undone, frames and all."""
    for across in (False, True):
        source, propagator, state, _ = _start(_vanishing_root(tmp_path / str(across)))
        config = RecoveryConfig(distractor_window=2, require_recurrence=False, max_jump=1.2, jump_across_gaps=across)
        log = recover(propagator, source, state, _LookAlikeAlone(), config)
        if across:
            assert [(r.frame, r.object_index) for r in log.recoveries] == [(6, 0)]
            assert [(r.frame, r.object_index) for r in log.undone] == [(4, 0)]
            assert not (state.labels(4) == 1).any()
        else:
            assert [(r.frame, r.object_index) for r in log.recoveries] == [(6, 0), (4, 0)] and not log.undone
            views = FrameViews(state)
            assert not views.presence[3, 0] and views.presence[4, 0]
            assert track_jump(views, 0, 2, 4) > 2 * 1.2 and track_jump(views, 0, 4, 6) <= 2 * 1.2


def test_the_track_test_across_gaps_bounds_the_move_per_missing_frame():
    """``breaks_track(..., across_gaps=True)``: a re-propagated track held only in frame 5, next to an existing track
    in frames 0-2 (20 px boxes), may be at most max_jump object sizes per frame away from frame 2 (here 3 frames:
    4.5 sizes at 1.5). 5 sizes away it breaks the track, 4 sizes away it does not; without ``across_gaps`` neither
    does (frame 3, next to the track, is empty). The same holds toward a track after it (frames 8-9)."""
    def views_with(x_new):
        boxes = {t: (0, 0, 20, 20) for t in (0, 1, 2)} | {5: (x_new, 0, x_new + 20, 20)}
        boxes |= {t: (x_new + 100, 0, x_new + 120, 20) for t in (8, 9)}
        empty = (0, 0, 1, 1)
        tight = {t: np.array([boxes.get(t, empty)], np.float64) for t in range(10)}
        presence = np.array([[t in boxes] for t in range(10)])
        return SimpleNamespace(state=SimpleNamespace(num_frames=10), presence=presence, tight=tight.__getitem__)

    far, near = views_with(100), views_with(80)  # 5 and 4 object sizes from frame 2's box
    assert track_jump(far, 0, 2, 5) == pytest.approx(5.0) and track_jump(near, 0, 2, 5) == pytest.approx(4.0)
    assert breaks_track(far, 0, 2, None, 1.5, across_gaps=True)
    assert not breaks_track(near, 0, 2, None, 1.5, across_gaps=True)
    assert not breaks_track(far, 0, 2, None, 1.5) and not breaks_track(far, 0, 2, 8, 1.5)
    # after the gap: frame 8 lies 5 sizes past frame 5 (3 frames: 4.5 allowed); with no track before, only that side
    assert breaks_track(far, 0, None, 8, 1.5, across_gaps=True) and not breaks_track(far, 0, None, 8, 1.7,
                                                                                      across_gaps=True)


def test_a_reidentification_is_judged_by_its_track_after_drifted_masks_are_dropped(tmp_path):
    """Object 1 is re-found in frame 6; propagated backward, its mask stays where it is back (zero flow) through the
    frames where it is hidden (3-5), up to frame 3, next to its frame-2 track 2.5 object sizes away. Those masks fail
    the drift test and are dropped before the track test, so the re-identification does not run into the frame-2
    track and is kept. (The draft keeps object 1 where it was, zero backward flow at frame 3: dropped as drifted.)"""
    source, propagator, state = _stuck_draft(tmp_path)
    log = recover(propagator, source, state, _Verifying(), RecoveryConfig(distractor_window=2, max_jump=1.5))
    assert [(r.frame, r.object_index) for r in log.recoveries] == [(6, 0)] and not log.undone
    assert {(t, 0) for t in range(LOST_AT, 6)} <= set(log.drifted)
    for t in range(LOST_AT, 6):
        assert not (state.labels(t) == 1).any(), t
    assert _iou(object_box(state.labels(6) == 1, box_enlargement=0.0), OBJ1_AFTER) > 0.5


class _MildDrift(_Verifying):
    """Like _Verifying, but its drifted masks are only mildly unlike the object: they pass a drift test at 0.2."""

    def is_drifted(self, t, i, box, threshold=None):
        return threshold != 0.2 and super().is_drifted(t, i, box)


def test_dropped_masks_that_reid_does_not_replace_are_put_back(tmp_path):
    source, propagator, state = _stuck_draft(tmp_path / "restore")
    draft = np.stack([state.labels(t) for t in range(state.num_frames)])
    provider = _MildDrift()
    log = recover(propagator, source, state, provider, RecoveryConfig(distractor_window=2, drift_restore=0.2))
    assert [(r.frame, r.object_index) for r in log.recoveries] == [(6, 0)]
    assert (6, 0) in log.drifted and (6, 0) not in log.restored  # dropped there, then re-found: not put back
    assert sorted(log.restored) == [(t, 0) for t in range(LOST_AT, 6)]  # searched, nothing found: put back
    for t in range(LENGTHS["seqb"]):
        assert (state.labels(t) == 1).any(), t
    assert build_report("seqb", draft, provider, log, [1, 2])["restored"] == [[t, 1] for t in range(LOST_AT, 6)]
    # below the restore level (or without it) a drop is final
    source, propagator, state = _stuck_draft(tmp_path / "final")
    log = recover(propagator, source, state, _MildDrift(), RecoveryConfig(distractor_window=2, drift_restore=0.1))
    assert log.restored == [] and not (state.labels(LOST_AT) == 1).any()


class _ChangedLook(_Table):
    """Object 1 (index 0) is where the stuck draft keeps it, but looks changed in frames LOST_AT..5: the draft's masks
    there fail the drift test and pass the restore test. Its one candidate, in frame 4 at ``box``, re-initialises
    it; the masks propagated from there into frames 3 and 5 fail both tests (a re-propagation's failed mask)."""

    def __init__(self, box):
        super().__init__([[], []])
        self.box = box

    def candidates(self, t, i):
        return np.array([[*self.box, 0.9]]) if (t, i) == (4, 0) else np.zeros((0, 5))

    def is_drifted(self, t, i, box, threshold=None):
        if i != 0 or not LOST_AT <= t <= 5:
            return False
        if _iou(box, OBJ1_BEFORE) > 0.9:  # the draft's mask
            return threshold != 0.2
        return t != 4  # the re-initialised mask passes; what it propagates does not


@pytest.mark.parametrize("box, kept", [((14, 20, 34, 40), True), (OBJ1_AFTER, False)])
def test_a_failed_repropagation_keeps_the_dropped_mask_it_repeats(tmp_path, box, kept):
    """The draft's masks of object 1 in frames 3-5 are dropped but may be put back (drift_restore). A
    re-identification in frame 4 propagates into frames 3 and 5, where its masks are dropped for good. Where they lie
    in the draft's place (box IoU >= 0.5), they repeat the draft's track and their drop leaves the draft's masks to be
    put back; elsewhere (OBJ1_AFTER) the draft's masks are forgotten and frames 3 and 5 stay empty."""
    source, propagator, state = _stuck_draft(tmp_path)
    config = RecoveryConfig(distractor_window=2, drift_restore=0.2, require_recurrence=False, max_jump=None)
    log = recover(propagator, source, state, _ChangedLook(box), config)
    assert [(r.frame, r.object_index) for r in log.recoveries] == [(4, 0)]
    assert _iou(object_box(state.labels(4) == 1, box_enlargement=0.0), box) > 0.5
    assert sorted(log.restored) == ([(3, 0), (5, 0)] if kept else [])
    for t in (3, 5):
        mask = state.labels(t) == 1
        assert (_iou(object_box(mask, box_enlargement=0.0), OBJ1_BEFORE) > 0.9) if kept else not mask.any(), t
    # without keep_repeated (before session 32) the final drops forget the draft's masks in either place
    source, propagator, state, _ = _start(_tiny_root(tmp_path / "forget"))
    log = recover(propagator, source, state, _ChangedLook(box), replace(config, keep_repeated=False))
    assert log.restored == []


@pytest.mark.parametrize("box, confirmed", [((12, 28, 28, 40), True), (OBJ1_AFTER, False)])
def test_a_candidate_inside_a_kept_mask_confirms_it(tmp_path, box, confirmed):
    """With confirm_kept, the candidate in frame 4 is not accepted where it lies inside the box of the draft's mask
    dropped there but kept (the lower part of object 1): the draft's masks of frames 3-5 are put back whole. Elsewhere
    (OBJ1_AFTER) it is accepted as without the rule."""
    source, propagator, state = _stuck_draft(tmp_path)
    config = RecoveryConfig(distractor_window=2, drift_restore=0.2, require_recurrence=False, max_jump=None,
                            confirm_kept=0.7)
    log = recover(propagator, source, state, _ChangedLook(box), config)
    assert [(r.frame, r.object_index) for r in log.recoveries] == ([] if confirmed else [(4, 0)])
    if confirmed:
        assert sorted(log.restored) == [(t, 0) for t in range(LOST_AT, 6)]
        for t in range(LOST_AT, 6):
            assert _iou(object_box(state.labels(t) == 1, box_enlargement=0.0), OBJ1_BEFORE) > 0.9, t


def test_share_inside():
    assert share_inside((12, 28, 28, 40), OBJ1_BEFORE) == 1.0
    assert share_inside((0, 20, 20, 40), OBJ1_BEFORE) == 0.5
    assert share_inside(OBJ1_AFTER, OBJ1_BEFORE) == 0.0 and share_inside((5, 5, 5, 9), OBJ1_BEFORE) == 0.0


# ----------------------------------------------------------------------------- (e) appearance provider
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A 3-object synthetic sequence (object 2 leaves the frame and comes back; a look-alike of object 1) written in
    DAVIS layout, with the generated sequence (for the look-alike's masks)."""
    from vsreid.data.synthetic import generate_sequence, write_sequence

    path = tmp_path_factory.mktemp("synth")
    seq = generate_sequence("synth-2", 2, size=(240, 432), num_frames=34)
    write_sequence(path, seq)
    return DavisRoot(path), seq


def _background_boxes(labels: np.ndarray, bw: int, bh: int, count: int = 4) -> np.ndarray:
    """Up to ``count`` (x1, y1, x2, y2) boxes of size bw x bh on a coarse grid that touch no labelled object."""
    h, w = labels.shape
    boxes = [(x, y, x + bw, y + bh) for y in np.linspace(0, h - bh, 4).astype(int)
             for x in np.linspace(0, w - bw, 6).astype(int) if not labels[y:y + bh, x:x + bw].any()]
    return np.array(boxes[:count], np.float64).reshape(-1, 4)


def test_appearance_reid_finds_a_reappearing_object(synthetic):
    root, seq = synthetic
    meta = seq.meta
    exit_event = meta["events"]["exit"]
    i = exit_event["object"] - 1
    obj = meta["objects"][i]
    reappear = [t for t in range(exit_event["absent"][1], len(obj["area"]))
                if obj["area"][t] >= 0.9 * obj["full_area"][t]][:5]
    assert len(reappear) == 5
    ids = [o["id"] for o in meta["objects"]]
    reid = AppearanceReID()
    reid.prepare(_source(root, seq.name), seq.labels[0], ids)
    assert reid.class_scores(0) is None
    hits = 0
    for t in reappear:
        truth = object_box(seq.labels[t] == i + 1, box_enlargement=0.0)
        cands = reid.candidates(t, i)
        assert cands.shape[1] == 5 and np.all((cands[:, 4] >= 0) & (cands[:, 4] <= 1))
        for j in range(len(ids)):  # row r is the same box for every object
            np.testing.assert_array_equal(reid.candidates(t, j)[:, :4], cands[:, :4])
        best = cands[np.argmax(cands[:, 4])]
        hits += _iou(best[:4], truth) >= 0.5 and best[4] > 0.5
        # background boxes of the object's size, and the look-alike of object 1, are less similar to this object
        x1, y1, x2, y2 = truth
        others = _background_boxes((seq.labels[t] > 0) | seq.distractor_masks[0, t], x2 - x1, y2 - y1)
        if seq.distractor_masks[0, t].any():
            distractor = object_box(seq.distractor_masks[0, t], box_enlargement=0.0)
            others = np.vstack([others, np.array(distractor, np.float64)])
        sims = reid.similarity(t, np.vstack([np.array([truth], np.float64), others]))[i]
        assert len(others) and np.all(sims[1:] < sims[0]), (t, sims)
    assert hits >= 4, f"best candidate right in {hits} of {len(reappear)} reappearance frames"


def _iou(a, b):
    from vsreid.commands.evaluate_reid import box_iou

    return box_iou(a, b)


# ----------------------------------------------------------------------------------- (f) evaluate-reid
def test_evaluate_reid_counts(tmp_path, capsys):
    root = _tiny_root(tmp_path / "root")
    results = tmp_path / "out"
    (results / "seqb").mkdir(parents=True)
    report = {
        "sequence": "seqb", "object_ids": [1, 2],
        # object 1 is truly absent in 3-5 and back at OBJ1_AFTER in 6-7
        "lost": [[3, 1], [4, 1], [5, 1], [6, 1], [7, 1]],
        "candidates": {"6:1": [[61, 21, 81, 41, 0.9], [0, 0, 10, 10, 0.3]],  # IoU 0.82: recalled
                       "7:1": [[70, 20, 90, 40, 0.7]],  # IoU 1/3: not recalled
                       "3:1": [[60, 20, 80, 40, 0.2]]},
        "recoveries": [{"frame": 6, "object_id": 1, "box": [60, 20, 80, 40], "score": 0.9, "kind": "object"},
                       {"frame": 4, "object_id": 1, "box": [60, 20, 80, 40], "score": 0.6, "kind": "object"},
                       {"frame": 6, "object_id": 2, "box": [60, 20, 80, 40], "score": 0.7, "kind": "object"}],
    }
    (results / "seqb" / "reid.json").write_text(json.dumps(report))
    code = cli_main(["evaluate-reid", "--davis-root", str(root.root), "--results", str(results),
                     "--sequences", "seqb"])
    assert code == 0
    rows = list(csv.DictReader((results / "reid_results.csv").open()))
    assert [r["sequence"] for r in rows] == ["seqb", "TOTAL"]
    row = rows[0]
    assert (row["lost"], row["lost_in_gt"], row["recalled"], row["correctly_lost"]) == ("5", "2", "1", "3")
    assert float(row["recall"]) == pytest.approx(0.5)
    assert (row["recoveries"], row["correct"]) == ("3", "1")
    assert float(row["precision"]) == pytest.approx(1 / 3, abs=1e-4)
    assert "TOTAL" in capsys.readouterr().out

    code = cli_main(["evaluate-reid", "--davis-root", str(root.root), "--results", str(results),
                     "--sequences", "seqa"])
    err = capsys.readouterr().err
    assert code == 2 and "seqa/reid.json" in err and len(err.strip().splitlines()) == 1


def test_evaluate_reid_breakdown(tmp_path):
    """Where re-ID fails, from a hand-made draft, final result and report of seqb (GT: object 1 absent in 3-5, at
    OBJ1_AFTER from 6; object 2 at OBJ2 throughout)."""
    from vsreid.data.labels import write_labels

    root = _tiny_root(tmp_path / "root")
    results = tmp_path / "out"
    background = (0, 50, 10, 60)
    for t in range(LENGTHS["seqb"]):
        draft, final = _labels("seqb", t), _labels("seqb", t)
        draft[draft == 1] = 0
        if t in (1, 2):
            _fill(draft, OBJ1_BEFORE, 1)
        elif t in (4, 6):
            _fill(draft, background, 1)  # drifted onto the background (t=4: the object is truly absent)
        elif t == 5:
            _fill(draft, OBJ2, 1)  # drifted onto object 2, which the draft then misses
        if t == 6:
            final[final == 1] = 0
            _fill(final, (60, 20, 80, 30), 1)  # re-initialised on half the object: mask IoU 0.5
        write_labels(results / "draft" / "seqb" / f"{t:05d}.png", draft)
        write_labels(results / "seqb" / f"{t:05d}.png", final)
    report = {
        "sequence": "seqb", "object_ids": [1, 2], "score_threshold": 0.5,
        "lost": [[3, 1], [4, 1], [5, 2], [6, 1], [2, 2]],  # (5, 1) on object 2 not caught; (2, 2) was fine
        "candidates": {"6:1": [[0, 0, 10, 10, 0.9], [61, 21, 81, 41, 0.4]],  # right one, not on top
                       "5:2": [[40, 45, 55, 60, 0.45]],  # right and on top, below the threshold
                       "2:2": [[40, 45, 55, 60, 0.8]]},  # right, on top, above
        "recoveries": [{"frame": 6, "object_id": 1, "box": list(OBJ1_AFTER), "score": 0.9, "kind": "object"},
                       {"frame": 5, "object_id": 1, "box": list(OBJ2), "score": 0.7, "kind": "object"},
                       # inside object 2 but too small: wrong by box IoU (0.16), right by its centre
                       {"frame": 7, "object_id": 2, "box": [44, 50, 51, 55], "score": 0.6, "kind": "object"}],
    }
    (results / "seqb" / "reid.json").write_text(json.dumps(report))
    assert cli_main(["evaluate-reid", "--davis-root", str(root.root), "--results", str(results)]) == 0
    row = next(csv.DictReader((results / "reid_results.csv").open()))
    counts = {k: int(row[k]) for k in ("off", "off_empty", "off_bg", "off_obj", "false_lost", "lost", "lost_in_gt",
                                        "recalled", "correctly_lost", "recoveries", "correct", "wrong_on_obj")}
    assert counts == {"off": 5, "off_empty": 2, "off_bg": 2, "off_obj": 1, "false_lost": 1, "lost": 5,
                      "lost_in_gt": 3, "recalled": 3, "correctly_lost": 2, "recoveries": 3, "correct": 1,
                      "wrong_on_obj": 1}
    ratios = {k: float(row[k]) for k in ("lost_detected", "drift_caught", "recall", "recall_top1", "recall_accept",
                                         "recall_centre", "precision", "precision_centre", "reinit_iou",
                                         "reinit_iou_correct")}
    assert ratios == pytest.approx({"lost_detected": 0.8, "drift_caught": 2 / 3, "recall": 1.0, "recall_top1": 2 / 3,
                                    "recall_accept": 1 / 3, "recall_centre": 1.0, "precision": 1 / 3,
                                    "precision_centre": 2 / 3, "reinit_iou": 0.5, "reinit_iou_correct": 0.5},
                                   abs=1e-4)


def test_appearance_reid_upsamples_frames_with_small_objects(synthetic):
    """Frames are upsampled so that the smallest first-frame object spans ``object_cells`` cells, within
    ``max_pixels`` and never below the frame's own size; boxes stay in frame pixels."""
    root, seq = synthetic
    ids = [o["id"] for o in seq.meta["objects"]]
    side = min(np.sqrt(np.prod(np.diff(np.reshape(object_box(seq.labels[0] == i, box_enlargement=0.0), (2, 2)),
                                       axis=0))) for i in ids)
    for kw, factor in (({"object_cells": 6}, 6 * 16 / side), ({"object_cells": 0.1}, 1.0),
                       ({"object_cells": 50, "max_pixels": 4 * 240 * 432}, 2.0)):
        reid = AppearanceReID(**kw)
        reid.prepare(_source(root, seq.name), seq.labels[0], ids)
        assert reid.upsample == pytest.approx(factor) and reid.stride == pytest.approx(16 / factor)
        assert reid.frame_features(0).shape[1:] == (np.ceil(240 * factor / 16), np.ceil(432 * factor / 16))
        boxes = reid.candidates(1, 0)[:, :4]
        assert len(boxes) and np.all(boxes >= 0) and np.all(boxes[:, 2] <= 432) and np.all(boxes[:, 3] <= 240)


def test_appearance_reid_refines_a_peak_box_onto_its_object(synthetic):
    """A box off the object (shrunk, stretched and shifted) is refined to one that overlaps it better."""
    root, seq = synthetic
    objects = seq.meta["objects"]
    reid = AppearanceReID()
    reid.prepare(_source(root, seq.name), seq.labels[0], [o["id"] for o in objects])
    before, after = [], []
    for t in range(1, len(seq.labels), 4):
        for i, obj in enumerate(objects):
            if obj["area"][t] >= 0.9 * obj["full_area"][t]:
                truth = object_box(seq.labels[t] == obj["id"], box_enlargement=0.0)
                x1, y1, x2, y2 = truth
                w, h = x2 - x1, y2 - y1
                off = np.array([[x1 + 0.2 * w, y1, x1 + w, y1 + 0.8 * h]], np.float64)
                before.append(_iou(off[0], truth))
                after.append(_iou(reid._refine(t, off, i)[0], truth))
    assert len(before) >= 10 and np.mean(after) > np.mean(before) + 0.1 and np.mean(after) > 0.75


def test_appearance_reid_refinement_tries_the_given_scales_only(synthetic):
    """With ``refine_steps=(1.0,)`` refinement only shifts a box; with a larger step it may grow it."""
    root, seq = synthetic
    ids = [o["id"] for o in seq.meta["objects"]]
    x1, y1, x2, y2 = object_box(seq.labels[1] == ids[0], box_enlargement=0.0)
    w, h = x2 - x1, y2 - y1
    small = np.array([[x1 + 0.3 * w, y1 + 0.3 * h, x2 - 0.3 * w, y2 - 0.3 * h]], np.float64)  # inside the object
    sizes = {}
    for steps in ((1.0,), (1.0, 2.0)):
        reid = AppearanceReID(refine_steps=steps)
        reid.prepare(_source(root, seq.name), seq.labels[0], ids)
        box = reid._refine(1, small, 0)[0]
        sizes[steps] = (box[2] - box[0], box[3] - box[1])
    np.testing.assert_allclose(sizes[1.0,], (small[0, 2] - small[0, 0], small[0, 3] - small[0, 1]))
    assert sizes[1.0, 2.0] != sizes[1.0,] and all(np.array(sizes[1.0, 2.0]) > np.array(sizes[1.0,]))


def test_appearance_reid_refinement_tolerance_keeps_the_largest_near_best_box(synthetic):
    """With ``refine_tolerance`` refinement keeps the largest variant within that similarity of the most similar one:
    a box nested in an object grows, its similarity stays within the tolerance, and a tolerance every variant meets
    keeps the largest step."""
    root, seq = synthetic
    ids = [o["id"] for o in seq.meta["objects"]]
    x1, y1, x2, y2 = object_box(seq.labels[1] == ids[0], box_enlargement=0.0)
    w, h = x2 - x1, y2 - y1
    small = np.array([[x1 + 0.3 * w, y1 + 0.3 * h, x2 - 0.3 * w, y2 - 0.3 * h]], np.float64)  # inside the object
    boxes, sims = {}, {}
    for tolerance in (0.0, 0.03, 2.0):
        reid = AppearanceReID(refine_tolerance=tolerance)
        reid.prepare(_source(root, seq.name), seq.labels[0], ids)
        boxes[tolerance] = box = reid._refine(1, small, 0)[0]
        sims[tolerance] = reid.similarity(1, box[None])[0, 0]
    area = {k: (b[2] - b[0]) * (b[3] - b[1]) for k, b in boxes.items()}
    assert area[0.03] > area[0.0] and sims[0.03] >= sims[0.0] - 0.03 - 1e-6
    small_area = (small[0, 2] - small[0, 0]) * (small[0, 3] - small[0, 1])
    assert area[2.0] == pytest.approx(max(REFINE_STEPS) ** 2 * small_area)


@pytest.mark.parametrize("tolerance, merge, ring", [(0.0, None, 0.0), (0.005, None, 0.0), (0.03, 0.03, 0.0),
                                                    (0.005, None, 0.2)])
def test_refinement_compares_colour_only_where_it_can_change_the_pick(synthetic, monkeypatch, tolerance, merge, ring):
    """Skipping the colour of variants that cannot be kept picks the same boxes as comparing every variant, with
    fewer boxes resized."""
    from vsreid.engine.reid import appearance

    root, seq = synthetic
    ids = [o["id"] for o in seq.meta["objects"]]
    resized, bins, shipped = [], appearance._colour_bins, appearance.COLOUR_MAX

    def counted(frame, boxes):
        resized.append(len(boxes))
        return bins(frame, boxes)

    monkeypatch.setattr(appearance, "_colour_bins", counted)
    picks, counts = {}, {}
    for bound in (shipped, np.inf):  # np.inf: every variant's colour is compared
        monkeypatch.setattr(appearance, "COLOUR_MAX", bound)
        reid = AppearanceReID(refine_tolerance=tolerance, merge_nested=merge, ring_weight=ring)
        reid.prepare(_source(root, seq.name), seq.labels[0], ids)
        resized.clear()
        picks[bound] = [reid._refine(t, reid._search(reid.frame_features(t))[i], i)
                        for t in range(1, len(seq.labels), 3) for i in range(len(ids))]
        counts[bound] = sum(resized)
    assert sum(len(p) for p in picks[np.inf]) >= 20
    for pruned, full in zip(picks[shipped], picks[np.inf], strict=True):
        np.testing.assert_array_equal(pruned, full)
    assert counts[shipped] < counts[np.inf]


def test_ring_weights_mark_the_cells_around_a_box():
    """The ring around a box in the middle of the frame is its outer box's border (RING = 0.25: 4 of 24 cells a
    side); at the frame's corner only the two inner sides remain; a box filling the frame has no ring."""
    boxes = np.array([[40, 40, 88, 88], [0, 0, 48, 48], [0, 0, 200, 100]], np.float64)
    outer, weights = _ring_weights(boxes, (100, 200))
    np.testing.assert_allclose(outer, [[28, 28, 100, 100], [0, 0, 60, 60], [0, 0, 200, 100]])
    ring = weights.reshape(3, COLOUR_SIDE, COLOUR_SIDE)
    inside = np.zeros((COLOUR_SIDE, COLOUR_SIDE), bool)
    inside[4:20, 4:20] = True
    np.testing.assert_array_equal(ring[0], ~inside)
    corner = np.zeros((COLOUR_SIDE, COLOUR_SIDE), bool)
    corner[:, 19:] = corner[19:, :] = True  # 2.5 px cells over the 60 px outer box: centres from 48.75 px on
    np.testing.assert_array_equal(ring[1], corner)
    assert not ring[2].any()


def test_ring_penalty_grows_boxes_that_cut_their_object(synthetic):
    """A box on part of a well visible object has more of the object's colours around it than the object's own box,
    and refinement with the ring penalty takes such boxes closer to the object's box than without it (no boxes: no
    ring similarities)."""
    root, seq = synthetic
    objects = seq.meta["objects"]
    reids = {w: AppearanceReID(ring_weight=w) for w in (0.0, 0.2)}
    for reid in reids.values():
        reid.prepare(_source(root, seq.name), seq.labels[0], [o["id"] for o in objects])
    ious = {w: [] for w in reids}
    for t in range(1, len(seq.labels), 3):
        for i, obj in enumerate(objects):
            if obj["area"][t] >= 0.9 * obj["full_area"][t]:
                truth = np.array(object_box(seq.labels[t] == obj["id"], box_enlargement=0.0), np.float64)
                x1, y1, x2, y2 = truth
                w, h = x2 - x1, y2 - y1
                part = np.array([[x1, y1, x2 - 0.4 * w, y2 - 0.4 * h]])  # its top left corner, box IoU 0.36
                rings = reids[0.0]._ring_similarity(t, np.concatenate([truth[None], part]), reids[0.0].templates[i])
                assert rings[1] > rings[0]
                for weight, reid in reids.items():
                    ious[weight].append(_iou(reid._refine(t, part, i)[0], truth))
    assert len(ious[0.0]) >= 10 and np.mean(ious[0.2]) > np.mean(ious[0.0]) + 0.05  # measured 0.652 against 0.528
    assert reids[0.2]._ring_similarity(1, np.zeros((0, 4)), reids[0.2].templates[0]).shape == (0,)


def test_recheck_gives_back_the_neighbours_a_round_spoiled():
    """After a round re-propagates object 0, an object whose mask the round changed and which is now drifted gets
    its mask from before the round back; a changed one that still shows its object, an unchanged one and object 0
    itself keep theirs."""
    first = np.zeros((40, 60), np.uint8)
    first[5:15, 5:15], first[5:15, 25:35], first[25:35, 25:35] = 1, 2, 3
    state = initial_state(first, [1, 2, 3], 2)
    for i in range(3):
        state.probs.set_plane(1, i, state.probs.plane(0, i))
    before = {1: state.probs.snapshot(1)}
    spoiled = np.zeros((40, 60), np.float32)
    spoiled[5:38, 20:58] = 0.6  # object 1's mask, grown over the frame (below object 2's where they meet)
    moved = np.zeros((40, 60), np.float32)
    moved[26:36, 26:36] = 1.0  # object 2's mask, a pixel lower and to the right
    state.probs.set_plane(1, 1, spoiled)
    state.probs.set_plane(1, 2, moved)
    repropagated = np.zeros((40, 60), np.float32)
    repropagated[6:16, 6:16] = 1.0  # object 0, the one re-propagated
    state.probs.set_plane(1, 0, repropagated)
    views = FrameViews(state)
    drifted = []

    def is_drifted(t, i, box):
        drifted.append(i)
        return (box[2] - box[0]) * (box[3] - box[1]) > 400  # a box far larger than any object's

    restore_spoiled_neighbours(views, is_drifted, before, 0)
    np.testing.assert_array_equal(state.probs.plane(1, 1), state.probs.plane(0, 1))
    np.testing.assert_array_equal(state.probs.plane(1, 2), moved)
    np.testing.assert_array_equal(state.probs.plane(1, 0), repropagated)
    assert sorted(drifted) == [1, 2]


def test_merge_nested_replaces_a_box_inside_an_about_as_similar_larger_one():
    """A box mostly inside a larger one becomes the larger box when that one is at most ``tolerance`` less similar;
    a much less similar host, a box only partly inside, and boxes elsewhere are kept; duplicates go."""
    boxes = np.array([[10, 10, 20, 20], [0, 0, 40, 40], [100, 100, 120, 120], [12, 12, 22, 22], [35, 35, 50, 50.]])
    merged = _merge_nested(boxes, np.array([0.90, 0.89, 0.5, 0.8, 0.95]), 0.03)
    np.testing.assert_array_equal(merged, boxes[[1, 2, 4]])  # 0 and 3 merged into 1; 4 only partly inside 1
    kept = _merge_nested(boxes, np.array([0.90, 0.85, 0.5, 0.8, 0.95]), 0.03)
    np.testing.assert_array_equal(kept, boxes[[0, 1, 2, 4]])  # 1 is 0.05 less similar than 0: 0 stays itself
    np.testing.assert_array_equal(_merge_nested(boxes[:0], np.zeros(0), 0.03), boxes[:0])


def _well_visible(seq):
    """(t, i, tight box, taken) for every third frame t from 1 and each object i at least 90% in view there; ``taken``
    (H, W) bool marks the labelled objects and the look-alike."""
    for t in range(1, len(seq.labels), 3):
        for i, obj in enumerate(seq.meta["objects"]):
            if obj["area"][t] >= 0.9 * obj["full_area"][t]:
                taken = (seq.labels[t] > 0) | seq.distractor_masks[0, t]
                yield t, i, object_box(seq.labels[t] == obj["id"], box_enlargement=0.0), taken


def test_appearance_reid_judges_drift(synthetic):
    """Ground-truth boxes of well visible objects are never drifted; background boxes of their size always are."""
    root, seq = synthetic
    objects = seq.meta["objects"]
    reid = AppearanceReID()
    reid.prepare(_source(root, seq.name), seq.labels[0], [o["id"] for o in objects])
    right, background = [], []
    for t, i, box, taken in _well_visible(seq):
        right.append(reid.is_drifted(t, i, box))
        background += [reid.is_drifted(t, i, b) for b in _background_boxes(taken, box[2] - box[0], box[3] - box[1])]
    assert len(right) >= 10 and len(background) >= 40
    assert not any(right) and all(background)
    assert reid.is_drifted(t, i, box, threshold=1.01) and not reid.is_drifted(t, i, box, threshold=0.0)


def test_drift_near_passes_a_mask_grown_beyond_its_object_but_not_the_background(synthetic):
    """A box of a well visible object grown by 80% of its width on one side is less like the object than its own
    box; at a threshold half-way between the two it is drifted, unless (``drift_near`` 0.5, the default) a candidate
    box that overlaps it enough is as similar: the object's own peak is (measured: 15 of 18). Background boxes stay
    drifted."""
    root, seq = synthetic
    objects = seq.meta["objects"]
    plain, near = AppearanceReID(drift_near=None), AppearanceReID()  # the default is 0.5
    for reid in (plain, near):
        reid.prepare(_source(root, seq.name), seq.labels[0], [o["id"] for o in objects])
    passed, background = [], []
    for t, i, (x1, y1, x2, y2), taken in _well_visible(seq):
        grown = (x1, y1, x2 + 0.8 * (x2 - x1), y2)
        own, wider = plain.similarity(t, np.array([(x1, y1, x2, y2), grown], np.float64))[i]
        threshold = (own + wider) / 2
        assert plain.is_drifted(t, i, grown, threshold)
        passed.append(not near.is_drifted(t, i, grown, threshold))
        background += [near.is_drifted(t, i, b, threshold) for b in _background_boxes(taken, x2 - x1, y2 - y1)]
    assert len(passed) >= 10 and np.mean(passed) >= 0.7
    assert len(background) >= 40 and all(background)


def test_appearance_reid_observed_distractors_stop_passing_as_the_object(synthetic):
    """The look-alike of object 1 walks in while object 1 is hidden. Once object 1 has been observed in frames where
    both are visible, the look-alike mostly stops scoring as object 1 in the frames where object 1 is hidden, while
    object 1 itself keeps passing."""
    root, seq = synthetic
    meta, look_alike = seq.meta, seq.distractor_masks[0]
    obj, full_look = meta["objects"][0], meta["distractors"][0]["full_area"]
    both = [t for t in range(len(seq.labels))
            if obj["area"][t] >= 0.5 * obj["full_area"][t] and look_alike[t].sum() >= 0.5 * full_look[t]]
    hidden = [t for t in meta["events"]["distractor"]["while_absent"] if look_alike[t].sum() >= 0.9 * full_look[t]]
    visible = [t for t in range(1, len(seq.labels)) if obj["area"][t] >= 0.9 * obj["full_area"][t]]
    assert both and len(hidden) >= 5 and len(visible) >= 10
    reid = AppearanceReID()
    reid.prepare(_source(root, seq.name), seq.labels[0], [o["id"] for o in meta["objects"]])

    def best_on(t, mask):
        cands = reid.candidates(t, 0)
        box = object_box(mask, box_enlargement=0.0)
        return max([c[4] for c in cands if _iou(c[:4], box) >= 0.5], default=0.0)

    def passing(frames, masks):
        return np.mean([best_on(t, masks[t]) > 0.5 for t in frames])

    assert passing(hidden, look_alike) == 1.0  # before: the look-alike passes as object 1 everywhere
    added = sum(reid.observe(t, 0, object_box(seq.labels[t] == obj["id"], box_enlargement=0.0)) for t in both)
    assert added > 0 and len(reid.views[0]) > 0
    assert passing(hidden, look_alike) <= 0.5
    assert passing(visible, seq.labels == obj["id"]) >= 0.9


def test_appearance_reid_keeps_a_view_only_as_similar_as_view_similarity(synthetic):
    """A tracked box becomes a view of its object only when its template similarity reaches ``view_similarity``."""
    root, seq = synthetic
    obj, ids = seq.meta["objects"][0], [o["id"] for o in seq.meta["objects"]]
    t = next(t for t in range(1, len(seq.labels)) if obj["area"][t] >= 0.9 * obj["full_area"][t])
    box = object_box(seq.labels[t] == obj["id"], box_enlargement=0.0)
    probe = AppearanceReID()
    probe.prepare(_source(root, seq.name), seq.labels[0], ids)
    sim = float(probe.similarity(t, np.array([box], np.float64))[0, 0])
    kept = {}
    for threshold, margin in (("above the box", 0.01), ("below the box", -0.01)):
        reid = AppearanceReID(view_similarity=sim + margin)
        reid.prepare(_source(root, seq.name), seq.labels[0], ids)
        reid.observe(t, 0, box)
        kept[threshold] = len(reid.views[0])
        reid.observe(t, 0, box, view=False)
        assert len(reid.views[0]) == kept[threshold]  # distractors only
    assert kept == {"above the box": 0, "below the box": 1}


def test_recovery_additions_are_predict_options():
    from vsreid.engine.segmenter import settings_from_arguments
    from vsreid.models.checkpoints import PREDICT_KEYS

    given = {"reid_drift_threshold": 0.5, "reid_drift_restore": 0.4, "reid_undo_failed": False,
             "reid_max_failures": 2, "reid_max_jump": 3.0, "reid_require_recurrence": False,
             "reid_skip_failed_chains": 3, "reid_views_from_recoveries": False, "reid_keep_repeated": False,
             "reid_confirm_kept": 0.6, "reid_views_need_track": 5, "reid_recheck_neighbours": False,
             "reid_jump_across_gaps": True}
    recovery = settings_from_arguments(given).recovery
    assert (recovery.drift_threshold, recovery.drift_restore, recovery.undo_failed, recovery.max_failures,
            recovery.max_jump, recovery.require_recurrence, recovery.skip_failed_chains,
            recovery.views_from_recoveries, recovery.keep_repeated, recovery.confirm_kept,
            recovery.views_need_track, recovery.recheck_neighbours,
            recovery.jump_across_gaps) == (0.5, 0.4, False, 2, 3.0, False, 3, False, False, 0.6, 5, False, True)
    assert set(given) <= set(PREDICT_KEYS)
    assert settings_from_arguments({}).recovery == RecoveryConfig()


def test_appearance_features_run_with_batchnorm_folded_and_unchanged_values():
    import torch

    from vsreid.engine.reid.appearance import _Stride16Features

    reid = AppearanceReID()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in reid.net.modules())
    image = torch.rand(1, 3, 96, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(reid.net(image), _Stride16Features()(image), rtol=0, atol=1e-4)


def test_boxes_resized_for_colour_as_cv2_area_resize_does():
    """The summed-area resize gives cv2.resize's INTER_AREA values within 1 (nearly all equal) on a real frame, for
    boxes past the frame's edge and fractional ones too; boxes under COLOUR_SIDE pixels are cv2's exactly."""
    from pathlib import Path

    import cv2
    from vsreid.data.labels import read_frame
    from vsreid.engine.reid import appearance

    side = appearance.COLOUR_SIDE
    sample = Path(__file__).resolve().parents[1] / "data" / "samples" / "JPEGImages" / "480p" / "car-shadow"
    frame = read_frame(sorted(sample.glob("*.jpg"))[0])
    rng = np.random.default_rng(0)
    corner = rng.uniform(-30, [frame.shape[1], frame.shape[0]], (300, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(2, 400, corner.shape)], 1)
    pixels = appearance._pixel_boxes(boxes, frame.shape[:2])
    expected = np.stack([cv2.resize(frame[y1:y2, x1:x2], (side, side), interpolation=cv2.INTER_AREA)
                         for x1, y1, x2, y2 in pixels])
    resized = appearance._resized_boxes(frame, boxes)
    small = ((pixels[:, 2:] - pixels[:, :2]) < side).any(axis=1)
    assert 10 < small.sum() < 290  # both paths taken
    assert np.array_equal(resized[small], expected[small])
    difference = np.abs(resized.astype(int) - expected.astype(int))
    assert difference.max() <= 1 and (difference == 0).mean() > 0.999


def test_colour_bins_of_many_boxes_on_threads_equal_one_by_one(monkeypatch):
    import torch
    from vsreid.engine.reid import appearance

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    corner = rng.uniform(0, 150, (appearance.PARALLEL_BOXES + 5, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(3, 90, corner.shape)], 1)  # some past the frame's edge
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        parallel = appearance._colour_bins(frame, boxes)
        monkeypatch.setattr(appearance, "PARALLEL_BOXES", len(boxes) + 1)
        serial = appearance._colour_bins(frame, boxes)
    finally:
        torch.set_num_threads(threads)
    assert parallel.shape == (len(boxes), appearance.COLOUR_SIDE ** 2)
    assert np.array_equal(parallel, serial)
    assert len(np.unique(parallel)) > 10
