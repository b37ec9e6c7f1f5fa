"""Re-ID recovery (the original's search loop): find lost objects again and re-propagate from there."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from vsreid.data.crops import box_iou, boxes_from_labels, share_inside

from ..boxes import enclosing_iou
from ..propagator import Propagator
from ..source import SequenceSource
from ..state import NO_ANCHOR, PropagationState
from .provider import ReIDProvider

PERSON_CLASS = 123  # index of "person" in the original's class-score vectors
RECUR_SHIFT = 0.5  # a box recurs in a neighbouring frame as a box whose centre is this close (object sizes) ...
RECUR_SCALE = 2.5  # ... and whose area is within this factor
REPEAT_IOU = 0.5  # a dropped mask repeats a kept one when their boxes overlap this much (keep_repeated)


@dataclass
class RecoveryConfig:
    """score_threshold: minimum candidate score (0.5); occlusion_threshold: a candidate box overlapping a visible
    object's robust box by more than this (intersection over enclosing box) is rejected (0.3); person_threshold:
    class score above which an object takes part in the person pass (0.5); max_rounds: stop after this many
    accepted re-identifications (None: until no candidate qualifies, at most T x N rounds); distractor_window:
    frames this close to an object's anchor (frame 0 or a re-identification) teach the provider its distractors,
    when the provider learns them.

    Additions to the original's rules (values chosen on the tune split of ``bench/bench_reid_real.py`` and, for
    drift_restore, the train selection split; bench/README.md): drift_threshold: with a provider that has
    ``is_drifted`` (the embedded one; the original's pickles have not), a prediction whose box is less similar to
    its object than this is dropped as drifted. drift_restore: a dropped prediction at least this similar is only
    dropped for the search: it is put back at the end where re-ID has not found the object in that frame (None, or
    drift_threshold and above: every drop is final). undo_failed: a re-identification whose re-initialised mask is
    empty, smaller than the lost rule allows, or (with ``is_drifted``) drifted is undone before it is propagated,
    and that (frame, object) is not tried again.
    max_failures: after this many undone re-identifications of one object in a pass, that object is no longer
    searched in the pass (None: no limit; each undone (frame, object) is still never tried again).
    max_jump: a re-identification whose re-propagated mask, once its drifted predictions are dropped, meets the
    object's existing track (the nearest frame where it is already present, before or after) farther than this from
    it is undone with everything it propagated and dropped (:func:`track_jump`: centre distance in object sizes;
    None or inf: no test). Dropping first lets a track that passes through frames where the object is hidden end
    there instead of running into the old track. The existing track came from the first frame or from an earlier,
    better-scored re-identification, so a later one may not contradict it (1.5: chosen on train data, bench/README.md).
    jump_across_gaps: the max_jump test also bridges the frames where the re-propagated track is missing next to
    the existing track, allowing max_jump object sizes per frame of the gap (:func:`breaks_track`; False: adjacent
    frames only, as before session 49). An object does not outrun its own size per frame while hidden either: a
    look-alike re-found a few frames from the object's track, far from it, is undone (chosen on train data,
    bench/README.md).
    require_recurrence: a candidate is accepted only where it recurs in frame t - 1 or t + 1 (:func:`recurs`): a
    candidate box there in about the same place and size, or the object's own mask mostly inside the box. A real
    object does not flash into a single frame; a correlation peak on the background often does.
    skip_failed_chains: when a re-identification is undone, the candidates that continue its box frame by frame
    (:func:`failed_chain`) are not tried either, in up to this many frames each way (0: off): a look-alike or a
    background patch that failed once would otherwise be tried again in every frame it stays in.
    views_from_recoveries: frames near an accepted re-identification show the provider views of the object as well
    as its distractors (False: distractors only; views come from the first frame's track alone). A view taken from a
    look-alike makes the look-alike score higher in the frames around it, where it is accepted again; a view of the
    right object carries it across changes of appearance (False measured worse on the synthetic bench: bench/README.md).
    views_need_track: a re-identification shows the provider views of its object (``views_from_recoveries``) only
    when at least this many of the frames it re-propagated still hold the object after the drift drops (0: always,
    as before session 41): a re-propagation the drift test erases is no evidence that the box was the object, and a
    view taken from a look-alike lifts the look-alike in the frames around it (3: chosen on train data,
    bench/README.md).
    keep_repeated: a prediction dropped but kept to be put back (``drift_restore``) stays kept when a later
    re-propagation's mask in that frame, in about the same place (box IoU >= REPEAT_IOU), is dropped as well, even
    for good: the later mask repeats the track, and its drop is no evidence against the earlier one (False: the later
    drop replaces the kept prediction, or forgets it when final, as before session 32; bench/README.md).
    confirm_kept: where object i's prediction in frame t was dropped but kept to be put back (``drift_restore``), a
    candidate box at least this share of which lies inside the kept prediction's box is not accepted: it finds the
    object where the kept mask already shows it, so it confirms that mask (put back at the end) instead of
    re-initialising from a box that often covers only a part of the object (None: off).
    recheck_neighbours: after a re-propagation's drift drops, every other object whose prediction it changed in a
    frame (it re-predicts the objects whose boxes touch the re-identified one's) and which is now drifted gets its
    prediction from before the round back (:func:`restore_spoiled_neighbours`; False: as before session 47;
    measured: bench/README.md)."""

    score_threshold: float = 0.5
    occlusion_threshold: float = 0.3
    person_threshold: float = 0.5
    max_rounds: int | None = None
    distractor_window: int = 10
    drift_threshold: float = 0.6
    drift_restore: float | None = 0.5
    undo_failed: bool = True
    max_failures: int | None = None
    max_jump: float | None = 1.5
    jump_across_gaps: bool = True
    require_recurrence: bool = True
    skip_failed_chains: int = 0
    views_from_recoveries: bool = True
    views_need_track: int = 3
    keep_repeated: bool = True
    confirm_kept: float | None = None
    recheck_neighbours: bool = True


@dataclass
class Recovery:
    """One accepted re-identification: frame, object index, box (x1, y1, x2, y2) and score; ``kind`` is the pass."""

    frame: int
    object_index: int
    box: tuple[float, float, float, float]
    score: float
    kind: str


@dataclass
class RecoveryLog:
    """Accepted re-identifications, the (frame, object index) predictions dropped as drifted, the
    re-identifications undone because the mask they re-initialised failed (empty, too small or drifted), and the
    dropped predictions put back because re-ID did not find the object there (see ``drift_restore``)."""

    recoveries: list[Recovery] = field(default_factory=list)
    drifted: list[tuple[int, int]] = field(default_factory=list)
    undone: list[Recovery] = field(default_factory=list)
    restored: list[tuple[int, int]] = field(default_factory=list)


class KeptPrediction(NamedTuple):
    """A dropped prediction to put back where re-ID finds nothing: ``stored`` (box, patch) for
    :meth:`ObjectProbs.set`, its anchor, and its mask's tight box (x1, y1, x2, y2)."""

    stored: tuple
    anchor: int
    box: tuple


class FrameViews:
    """What the recovery loop reads of each frame: its index map (H, W) uint8 (0 background, i+1 object index i; see
    :meth:`PropagationState.index_map`), tight and robust (1st-99th percentile) boxes (N, 4) and presence (N,),
    computed once per frame and again only after :meth:`invalidate` (the loop calls it for the frames a round
    changes), so a round costs in proportion to the frames it touches, not to the sequence."""

    def __init__(self, state: PropagationState):
        self.state = state
        self._index_maps: dict[int, np.ndarray] = {}
        self._tight: dict[int, np.ndarray] = {}
        self._robust: dict[int, np.ndarray] = {}
        self.presence = np.stack([presence_from_boxes(self.tight(t)) for t in range(state.num_frames)]).reshape(
            state.num_frames, state.num_objects)

    def invalidate(self, frames) -> None:
        """Frames whose probabilities changed: forget their views and update their presence."""
        for t in frames:
            for cache in (self._index_maps, self._tight, self._robust):
                cache.pop(t, None)
            self.presence[t] = presence_from_boxes(self.tight(t))

    def index_map(self, t: int) -> np.ndarray:
        if t not in self._index_maps:
            self._index_maps[t] = self.state.index_map(t)
        return self._index_maps[t]

    def tight(self, t: int) -> np.ndarray:
        if t not in self._tight:
            self._tight[t] = boxes_from_labels(self.index_map(t), range(1, self.state.num_objects + 1),
                                               box_enlargement=0.0)
        return self._tight[t]

    def robust(self, t: int) -> np.ndarray:
        if t not in self._robust:
            self._robust[t] = boxes_from_labels(self.index_map(t), range(1, self.state.num_objects + 1),
                                                box_enlargement=0.0, ratio=0.99)
        return self._robust[t]


def presence_from_boxes(tight_boxes: np.ndarray) -> np.ndarray:
    """(N,) bool from (N, 4) tight boxes: the presence rule, an object is present when its tight box covers more than
    one pixel (an absent object's box is (0, 0, 1, 1))."""
    return (tight_boxes[:, 2] - tight_boxes[:, 0]) * (tight_boxes[:, 3] - tight_boxes[:, 1]) > 1


def presence(state: PropagationState) -> np.ndarray:
    """(T, N) bool: object i is present in frame t of ``state`` (see :func:`presence_from_boxes`)."""
    return FrameViews(state).presence


def drop_drifted(views: FrameViews, is_drifted, frames, objects, log: RecoveryLog, kept: dict,
                 restorable=None, *, keep_repeated: bool) -> None:
    """Erase object i from frame t (probabilities 0, no anchor) where ``is_drifted(t, i, box)`` says its mask no
    longer shows it, for every t in ``frames`` that is not i's own anchor and i in ``objects``. Where
    ``restorable(t, i, box)`` is true, the erased prediction is kept in ``kept[t, i]`` (:class:`KeptPrediction`) for
    :func:`restore_unfound`; otherwise any earlier ``kept[t, i]`` is forgotten (the drop is final). With
    ``keep_repeated``, an earlier ``kept[t, i]`` whose box the erased mask's box overlaps by IoU >= REPEAT_IOU stays
    as it is: the erased mask repeats it (a re-propagation along the same track) and its drop says nothing new."""
    state = views.state
    for t in frames:
        boxes, changed = views.tight(t), False
        for i in objects:
            box = tuple(boxes[i])
            if views.presence[t, i] and state.anchors[t, i] != t and is_drifted(t, i, box):
                earlier = kept.get((t, i))
                if not (keep_repeated and earlier is not None and box_iou(earlier.box, box) >= REPEAT_IOU):
                    if restorable is not None and restorable(t, i, box):
                        kept[t, i] = KeptPrediction(state.probs.stored(t, i), int(state.anchors[t, i]), box)
                    else:
                        kept.pop((t, i), None)
                state.probs.clear(t, i)
                state.anchors[t, i] = NO_ANCHOR
                log.drifted.append((t, i))
                changed = True
        if changed:
            views.invalidate([t])


def restore_unfound(views: FrameViews, kept: dict, log: RecoveryLog) -> None:
    """Put back each kept prediction ``kept[t, i]`` (:class:`KeptPrediction`) where object i is still missing in
    frame t."""
    state = views.state
    for (t, i), prediction in sorted(kept.items()):
        if not views.presence[t, i]:
            state.probs.set(t, i, *prediction.stored)
            state.anchors[t, i] = prediction.anchor
            views.invalidate([t])
            log.restored.append((t, i))


def restore_spoiled_neighbours(views: FrameViews, is_drifted, before: dict, j: int) -> None:
    """Give every object but j its prediction of ``before`` (frame -> :meth:`ObjectProbs.snapshot` taken before a
    round) back in each frame where the round changed it and it is now drifted: re-propagating j re-predicts the
    objects whose boxes touch j's (joint argmax), and where j's mask goes astray it can take a neighbour's with it."""
    state = views.state
    for f, snapshot in before.items():
        for k in range(state.num_objects):
            if k != j and state.probs.differs(f, k, snapshot) and views.presence[f, k] and \
                    is_drifted(f, k, tuple(views.tight(f)[k])):
                state.probs.restore_object(f, k, snapshot)
                views.invalidate([f])


def teach_distractors(views: FrameViews, learn, i: int, anchor: int, window: int) -> None:
    """Show the provider (``learn(t, i, box)``) object i where it is tracked, in frames up to ``window`` from
    ``anchor`` (both ways), until the first frame each way where it is missing."""
    for step in (-1, 1):
        for t in range(anchor, int(np.clip(anchor + step * (window + 1), -1, views.state.num_frames)), step):
            if not views.presence[t, i]:
                break
            learn(t, i, tuple(views.tight(t)[i]))


def reinit_failed(views: FrameViews, is_drifted, t: int, i: int, lost_ratio: float) -> bool:
    """Whether the mask of object i just re-initialised in frame t failed: empty, smaller than 1/``lost_ratio`` of
    i's first-frame area (propagation would not carry it on), or drifted (``is_drifted(t, i, box)``, when given)."""
    area = np.count_nonzero(views.index_map(t) == i + 1)
    if area == 0 or area * lost_ratio < views.state.first_area[i]:
        return True
    return is_drifted is not None and is_drifted(t, i, tuple(views.tight(t)[i]))


def track_jump(views: FrameViews, i: int, a: int, b: int) -> float:
    """How far object i moves between adjacent frames a and b: the distance between its tight boxes' centres over
    the object's size (the square root of the geometric mean of the two box areas); 0 when it is absent from
    either frame."""
    if not (views.presence[a, i] and views.presence[b, i]):
        return 0.0
    boxes = np.stack([views.tight(a)[i], views.tight(b)[i]]).astype(np.float64)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = np.prod((boxes[:, 2:] - boxes[:, :2]).prod(axis=1)) ** 0.25
    return float(np.linalg.norm(centres[0] - centres[1]) / size)


def breaks_track(views: FrameViews, i: int, before: int | None, after: int | None, max_jump: float,
                 across_gaps: bool = False) -> bool:
    """Whether object i's re-propagated masks, frames before + 1 .. after - 1, run into its existing track in frame
    ``before`` or ``after`` (None: no track that side) farther than ``max_jump`` (:func:`track_jump`) from it.
    With ``across_gaps``, the re-propagated track's first and last present frames are compared with the existing
    track across the frames between them where i is missing, allowing ``max_jump`` object sizes per frame."""
    lo = 0 if before is None else before + 1
    hi = views.state.num_frames if after is None else after
    held = lo + np.flatnonzero(views.presence[lo:hi, i])
    ends = []
    if before is not None:
        ends.append((before, int(held[0]) if across_gaps and held.size else before + 1))
    if after is not None:
        ends.append((after, int(held[-1]) if across_gaps and held.size else after - 1))
    return any(track_jump(views, i, near, far) > max_jump * abs(far - near) for near, far in ends)


def recurs(views: FrameViews, provider: ReIDProvider, t: int, i: int, box) -> bool:
    """Whether candidate ``box`` (x1, y1, x2, y2) of object i in frame t recurs in frame t - 1 or t + 1: a candidate
    box of that frame (any row of ``provider.candidates``) in the same place (:func:`same_place`), or i's mask there
    at least half inside ``box``."""
    box = np.asarray(box, np.float64)
    x1, y1, x2, y2 = box.astype(int)
    for s in (t - 1, t + 1):
        if not 0 <= s < views.state.num_frames:
            continue
        if views.presence[s, i]:
            mask = views.index_map(s) == i + 1
            if 2 * np.count_nonzero(mask[max(y1, 0):y2 + 1, max(x1, 0):x2 + 1]) >= np.count_nonzero(mask):
                return True
        if np.any(same_place(box, provider.candidates(s, i)[:, :4])):
            return True
    return False


def same_place(box, others: np.ndarray) -> np.ndarray:
    """(M,) bool: which of the boxes ``others`` (M, 4) are where ``box`` (x1, y1, x2, y2) is in a neighbouring frame:
    centre within RECUR_SHIFT object sizes (square root of ``box``'s area), area within a factor RECUR_SCALE."""
    box = np.asarray(box, np.float64)
    size = max(float(np.prod(box[2:] - box[:2])), 1.0) ** 0.5
    shift = np.linalg.norm((others[:, :2] + others[:, 2:]) / 2 - (box[:2] + box[2:]) / 2, axis=1) / size
    scale = np.prod(others[:, 2:] - others[:, :2], axis=1) / size ** 2
    return (shift <= RECUR_SHIFT) & (scale >= 1 / RECUR_SCALE) & (scale <= RECUR_SCALE)


def failed_chain(views: FrameViews, provider: ReIDProvider, t: int, i: int, box, reach: int) -> list[int]:
    """The frames, up to ``reach`` each way from t, where the candidate ``box`` of object i in frame t continues:
    stepping from t both ways while i is missing, frame s joins when i's best candidate there (the one the search
    would try) is in the same place (:func:`same_place`) as the chain's box in the frame before it."""
    frames = []
    for step in (-1, 1):
        last, s = box, t + step
        while 0 <= s < views.state.num_frames and abs(s - t) <= reach and not views.presence[s, i]:
            cands = provider.candidates(s, i)
            if len(cands) == 0:
                break
            best = cands[int(np.argmax(cands[:, 4])), :4]
            if not same_place(last, best[None])[0]:
                break
            frames.append(s)
            last, s = best, s + step
    return frames


def _best_candidate(views: FrameViews, provider: ReIDProvider, targets: list[int], cfg: RecoveryConfig,
                    tried: set | frozenset = frozenset(), kept: dict | None = None):
    """The single best acceptable (frame, object, box, score) over all frames and targets, or None; (frame, object)
    pairs in ``tried`` (undone re-identifications) are skipped, and so are candidates that do not recur in a
    neighbouring frame when ``cfg.require_recurrence`` (:func:`recurs`) and, with ``cfg.confirm_kept``, candidates
    inside the box of the prediction ``kept`` for that (frame, object)."""
    best, best_score = None, 0.0
    state, presence = views.state, views.presence
    n = state.num_objects
    for t in range(1, state.num_frames - 1):
        cands = {j: provider.candidates(t, j) for j in targets if not presence[t, j]}  # only missing ones matter
        if not any(len(c) for c in cands.values()):
            continue
        for j in targets:
            c = cands.get(j)
            if c is None or len(c) == 0 or state.anchors[t, j] == t or (t, j) in tried:
                continue
            r = int(np.argmax(c[:, 4]))
            score = float(c[r, 4])
            if score <= best_score or score <= cfg.score_threshold:
                continue
            if (cfg.confirm_kept is not None and kept and (t, j) in kept
                    and share_inside(c[r, :4], kept[t, j].box) >= cfg.confirm_kept):
                continue
            x1, y1, x2, y2 = c[r, :4].astype(int)
            index_map, robust = views.index_map(t), views.robust(t)
            inside = np.bincount(index_map[max(y1, 0):y2 + 1, max(x1, 0):x2 + 1].ravel(), minlength=n + 1)[1:]
            if any(enclosing_iou((x1, y1, x2, y2), robust[o]) > cfg.occlusion_threshold
                   for o in np.flatnonzero(inside)):
                continue
            if any(k != j and len(c_k) > r and c_k[r, 4] > score for k, c_k in cands.items()):
                continue
            if cfg.require_recurrence and not recurs(views, provider, t, j, c[r, :4]):
                continue
            best, best_score = (t, j, tuple(float(v) for v in c[r, :4]), score), score
    return best


def recover(propagator: Propagator, source: SequenceSource, state: PropagationState, provider: ReIDProvider,
            config: RecoveryConfig | None = None) -> RecoveryLog:
    """Run the person pass (objects classified as persons, when class scores exist) then the object pass.

    A provider with a ``set_pass(kind)`` method is told the pass (``"person"`` / ``"object"``) before it, so that
    its ``candidates`` return that pass's rows (the original's PersonSearch / ObjectSearch results). Two more optional
    provider methods extend the original: with ``is_drifted(t, i, box, threshold)``, predictions that no longer show
    their object are dropped first (and after each re-propagation), so that a mask stuck on an occluder counts as
    lost, and a re-identification whose re-initialised mask fails (:func:`reinit_failed`) is undone before it is
    propagated; with ``observe(t, i, box)``, frames near each anchor show the provider object i and what it is not
    (``observe(t, i, box, view=False)`` after a re-identification when not ``views_from_recoveries``).

    Each round accepts the single best candidate over all frames and objects (with ``require_recurrence``, among
    those that recur in a neighbouring frame: :func:`recurs`), re-initialises the object there, and propagates it
    backward and forward until the nearest frames where it is visible. A (frame, object) pair becomes
    an anchor when accepted and is never picked again, so the loop ends after at most T x N rounds.
    """
    cfg = config or RecoveryConfig()
    log = RecoveryLog()
    n, num_frames = state.num_objects, state.num_frames
    views = FrameViews(state)
    passes = []
    scores = [provider.class_scores(i) for i in range(n)]
    if all(s is not None for s in scores):
        passes.append(("person", [i for i in range(n) if scores[i][PERSON_CLASS] > cfg.person_threshold]))
    passes.append(("object", list(range(n))))
    set_pass = getattr(provider, "set_pass", None)  # providers with separate person / object results
    provider_drift = getattr(provider, "is_drifted", None)
    is_drifted = None if provider_drift is None else (
        lambda t, i, box: provider_drift(t, i, box, threshold=cfg.drift_threshold))
    restorable = None if provider_drift is None or cfg.drift_restore is None else (
        lambda t, i, box: not provider_drift(t, i, box, threshold=cfg.drift_restore))
    kept: dict[tuple[int, int], KeptPrediction] = {}  # dropped predictions to put back where re-ID finds nothing
    lost_ratio = propagator.config.lost_ratio
    max_jump = cfg.max_jump if cfg.max_jump is not None and np.isfinite(cfg.max_jump) else None
    recheck = cfg.recheck_neighbours and is_drifted is not None  # the recheck needs the drift test
    learn = getattr(provider, "observe", None)
    learn_distractors = None if learn is None else (lambda t, i, box: learn(t, i, box, view=False))
    if is_drifted is not None:
        drop_drifted(views, is_drifted, range(num_frames), range(n), log, kept, restorable,
                     keep_repeated=cfg.keep_repeated)
    if learn is not None:
        for i in range(n):
            for a in np.flatnonzero(state.anchors[:, i] == np.arange(num_frames)):
                teach_distractors(views, learn, i, int(a), cfg.distractor_window)
    for kind, targets in passes:
        if not targets:
            continue
        if set_pass is not None:
            set_pass(kind)
        tried: set[tuple[int, int]] = set()
        failures = dict.fromkeys(targets, 0)
        while cfg.max_rounds is None or len(log.recoveries) < cfg.max_rounds:
            searched = [j for j in targets if cfg.max_failures is None or failures[j] < cfg.max_failures]
            found = _best_candidate(views, provider, searched, cfg, tried, kept) if searched else None
            if found is None:
                break
            t, j, box, score = found
            earlier = np.flatnonzero(views.presence[:t, j])
            start = int(earlier[-1]) if earlier.size else 0
            later = np.flatnonzero(views.presence[t + 1:, j])
            stop = t + 1 + int(later[0]) if later.size else num_frames
            changed = range(start + 1, stop)  # the frames this round may write
            saved = {f: (state.probs.snapshot(f), state.anchors[f].copy())
                     for f in (changed if max_jump is not None or recheck else [t])}
            kept_before, drifted_before = dict(kept), len(log.drifted)

            def undo():
                for f, (probs, anchors) in saved.items():
                    state.probs.restore(f, probs)
                    state.anchors[f] = anchors
                views.invalidate(saved)
                kept.clear()
                kept.update(kept_before)
                del log.drifted[drifted_before:]
                tried.add((t, j))
                if cfg.skip_failed_chains:
                    tried.update((s, j) for s in failed_chain(views, provider, t, j, box, cfg.skip_failed_chains))
                failures[j] += 1
                log.undone.append(Recovery(t, j, box, score, kind))

            state.anchors[t, j] = t
            propagator.reinitialize(source, state, t, j, box)
            views.invalidate([t])
            if cfg.undo_failed and reinit_failed(views, is_drifted, t, j, lost_ratio):
                undo()
                continue
            propagator.predict(source, state, t - 1, start, -1, [j])
            propagator.predict(source, state, t + 1, stop, 1, [j])
            views.invalidate(range(start, stop))  # the predicted frames and, with overlapping neighbours, theirs
            if is_drifted is not None:
                drop_drifted(views, is_drifted, range(start + 1 if earlier.size else 0, stop), [j], log, kept,
                             restorable, keep_repeated=cfg.keep_repeated)
            if recheck:
                restore_spoiled_neighbours(views, is_drifted, {f: probs for f, (probs, _) in saved.items()}, j)
            if max_jump is not None and breaks_track(views, j, start if earlier.size else None,
                                                     stop if later.size else None, max_jump, cfg.jump_across_gaps):
                undo()
                continue
            if learn is not None:
                held = np.count_nonzero(views.presence[start + 1:stop, j]) - 1  # re-propagated frames, t aside
                show_views = cfg.views_from_recoveries and held >= cfg.views_need_track
                teach_distractors(views, learn if show_views else learn_distractors, j, t, cfg.distractor_window)
            log.recoveries.append(Recovery(t, j, box, score, kind))
    restore_unfound(views, kept, log)
    return log
