"""Lightning DataModules: pretraining samples, first-frame finetuning samples, and whole sequences for predict."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, DistributedSampler

from vsreid.data.augment import Augmentation
from vsreid.data.davis import DavisRoot
from vsreid.data.errors import DataError
from vsreid.data.flow import DEFAULT_PRESET, FlowCache, make_flow_estimator
from vsreid.data.results import ResultsFolder, Status
from vsreid.data.samples import EvalPairs, FirstFrameSamples, PropagationSamples

from .predict import SequenceItem


def _replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """(world size, rank) from the arguments or the process group; (1, 0) without one."""
    initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
    if num_replicas is None:
        num_replicas = torch.distributed.get_world_size() if initialized else 1
    if rank is None:
        rank = torch.distributed.get_rank() if initialized else 0
    return num_replicas, rank


def balanced_shards(costs: Sequence[int], num_shards: int) -> list[list[int]]:
    """Greedy longest-first assignment of item indices to shards with the least total cost; deterministic."""
    shards: list[list[int]] = [[] for _ in range(num_shards)]
    loads = [0] * num_shards
    for index in sorted(range(len(costs)), key=lambda k: (-costs[k], k)):
        target = min(range(num_shards), key=lambda s: (loads[s], s))
        shards[target].append(index)
        loads[target] += costs[index]
    return [sorted(s) for s in shards]


class BalancedSequenceSampler(DistributedSampler):
    """Each rank gets a disjoint set of whole sequences balanced by frames x objects; nothing is padded or repeated.

    Subclassing ``DistributedSampler`` keeps Lightning from wrapping it in another distributed sampler.
    """

    def __init__(self, items: Sequence[SequenceItem], num_replicas: int | None = None, rank: int | None = None):
        num_replicas, rank = _replicas(num_replicas, rank)
        super().__init__(items, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.indices = balanced_shards([it.cost for it in items], num_replicas)[rank]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _first(batch):
    return batch[0]


class DavisPredictDataModule(LightningDataModule):
    """Whole DAVIS sequences for ``predict``, one item per sequence, sharded across ranks without duplicates.

    Args:
        root: DAVIS root folder.
        split: split name (``ImageSets/2017/<split>.txt`` or DAVIS-2016 ``ImageSets/480p/<split>.txt``).
        sequences: explicit sequence names (instead of ``split``, or within it); neither = every sequence of the root.
            An empty list is an error; a name given twice runs once.
        flow_method: optical flow for missing cache files: ``dis``, ``farneback``, or ``""`` / ``precomputed`` to
            read existing ``.flo``/``.rflo`` files only.
        flow_preset: DIS preset: ``ultrafast``, ``fast`` or ``medium``.
        flow_dir: where the flow cache lives (default: ``ROOT/Flow/480p`` when it exists, else a folder of the user
            cache, see :func:`vsreid.data.flow.default_flow_dir`).
        full_resolution: take image crops from ``JPEGImages/Full-Resolution`` (as the original did) when present.
        skip_finished_in: an output folder; sequences finished there with the settings digest ``settings`` (set by
            the CLI) are skipped (resuming), those finished with other settings are recomputed.

    Every sequence is checked (every frame decoded, annotations, sizes) before the first one is predicted.
    """

    def __init__(self, root: str, split: str | None = None, sequences: list[str] | None = None,
                 flow_method: str = "dis", flow_preset: str = DEFAULT_PRESET, flow_dir: str | None = None,
                 full_resolution: bool = False, skip_finished_in: str | None = None):
        super().__init__()
        self.root, self.split, self.sequences = root, split, sequences
        self.flow_method, self.flow_preset, self.flow_dir = flow_method, flow_preset, flow_dir
        self.full_resolution = full_resolution
        self.skip_finished_in = skip_finished_in
        self.settings: str | None = None
        self.items: list[SequenceItem] = []
        self.skipped: list[str] = []

    def _names(self, root: DavisRoot) -> list[str]:
        if self.sequences is not None and not self.sequences:
            raise DataError(root.root, "empty sequence list (--data.sequences '[]'); omit it for every sequence")
        names = root.sequences(self.split, self.sequences)
        unique = list(dict.fromkeys(names))
        if len(unique) < len(names) and (self.trainer is None or self.trainer.is_global_zero):
            print("vsreid predict: sequences given more than once run once: "
                  + ", ".join(sorted({n for n in names if names.count(n) > 1})))
        return unique

    def setup(self, stage: str) -> None:
        root = DavisRoot(self.root)
        folder = ResultsFolder(self.skip_finished_in) if self.skip_finished_in else None
        self.items, self.skipped, redo = [], [], []
        for seq in self._names(root):
            info = root.validate(seq, check_all_frames=True)
            FlowCache(root, None, flow_dir=self.flow_dir).check_existing(seq)
            status = folder.status(seq, self.settings, info.num_frames) if folder else Status.MISSING
            if status is Status.DONE:
                self.skipped.append(seq)
                continue
            if status is Status.STALE:
                redo.append(seq)
            self.items.append(SequenceItem(str(root.root), seq, info.num_frames, info.num_objects, self.flow_method,
                                           self.flow_preset, self.flow_dir, self.full_resolution))
        if self.trainer is None or self.trainer.is_global_zero:
            if self.skipped:
                print(f"vsreid predict: skipping {len(self.skipped)} sequence(s) finished with the same settings in "
                      f"{folder.root}: {', '.join(self.skipped)}")
            if redo:
                print(f"vsreid predict: recomputing {', '.join(redo)}: finished in {folder.root} with other settings "
                      "or another frame count")

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.items, batch_size=1, sampler=BalancedSequenceSampler(self.items), collate_fn=_first)


class EpochSampler(DistributedSampler):
    """Fresh sample indices every epoch: epoch e yields ``e*N .. (e+1)*N - 1``, split across ranks.

    The sample datasets draw item i from a seed-and-index random stream, so new indices mean new samples in every
    epoch and every worker without any epoch state in the dataset.
    """

    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None):
        num_replicas, rank = _replicas(num_replicas, rank)
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=True)

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        start = self.epoch * n
        return iter(range(start + self.rank, start + n - (n % self.num_replicas), self.num_replicas))


def root_flow_cache(root: DavisRoot, method: str, preset: str, flow_cache_dir: str | None) -> FlowCache:
    """The root's flow cache, under ``flow_cache_dir/<root folder name>`` when given (for read-only roots)."""
    flow_dir = Path(flow_cache_dir) / root.root.name if flow_cache_dir else None
    return FlowCache(root, make_flow_estimator(method, preset=preset) if method else None, flow_dir=flow_dir)


class _SampleDataModule(LightningDataModule):
    def __init__(self, crop_size: int, batch_size: int, num_workers: int, flow_method: str, flow_preset: str,
                 flow_cache_dir: str | None):
        super().__init__()
        self.crop_size, self.batch_size, self.num_workers = crop_size, batch_size, num_workers
        self.flow_method, self.flow_preset, self.flow_cache_dir = flow_method, flow_preset, flow_cache_dir

    def _cache(self, root: DavisRoot) -> FlowCache:
        return root_flow_cache(root, self.flow_method, self.flow_preset, self.flow_cache_dir)

    def _loader(self, dataset, sampler=None, batch_size=None) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size or self.batch_size, sampler=sampler,
                          num_workers=self.num_workers, persistent_workers=False,
                          pin_memory=torch.cuda.is_available())


class PretrainDataModule(_SampleDataModule):
    """Offline pretraining: object samples from DAVIS-layout roots, one-step validation on held-out sequences.

    Args:
        train_roots: DAVIS-layout roots to train on (real DAVIS, synthetic roots made by ``vsreid synth``...).
        train_split, train_sequences: restrict every training root to a split or to these sequences (None = all).
        val_root, val_split, val_sequences: held-out sequences for one-step validation (never the training ones).
        val_frame_step: validate on every k-th frame pair.
        crop_size: side of the square crops; batch_size; samples_per_epoch: training samples per epoch.
        p_deform, p_static, erode_share: sample mix and deformations; jitter, box_enlargement: crop box jitter and
            enlargement per side, as fractions of the box; max_gap: video pairs span up to this many frames;
            p_occluder: share of video pairs with another training object pasted over them, touching or occluding
            the one to segment; p_background: share of video pairs whose object is moved onto another training
            sequence's frames, flows computed again (see :class:`vsreid.data.samples.PropagationSamples`).
        augment: the training augmentation's ranges (``--data.init_args.augment.saturation 0.4``, ...; see
            :class:`vsreid.data.augment.Augmentation`); None = its defaults.
        flow_method, flow_preset: flow for missing cache files; flow_cache_dir: keep caches there (read-only roots).
    """

    def __init__(self, train_roots: list[str], train_split: str | None = None, train_sequences: list[str] | None = None,
                 val_root: str | None = None, val_split: str | None = None, val_sequences: list[str] | None = None,
                 val_frame_step: int = 5,
                 crop_size: int = 257, batch_size: int = 8, samples_per_epoch: int = 2000, p_deform: float = 0.5,
                 p_static: float = 0.0, erode_share: float = 0.5, jitter: float = 0.2, box_enlargement: float = 0.3,
                 max_gap: int = 1, p_occluder: float = 0.0, p_background: float = 0.0,
                 augment: Augmentation | None = None,
                 num_workers: int = 2, seed: int = 0,
                 flow_method: str = "dis", flow_preset: str = DEFAULT_PRESET, flow_cache_dir: str | None = None):
        super().__init__(crop_size, batch_size, num_workers, flow_method, flow_preset, flow_cache_dir)
        self.erode_share, self.jitter, self.max_gap = erode_share, jitter, max_gap
        self.box_enlargement = box_enlargement
        self.p_occluder, self.p_background = p_occluder, p_background
        self.augment = augment or Augmentation()
        self.train_roots, self.train_split, self.train_sequences = train_roots, train_split, train_sequences
        self.val_root, self.val_split, self.val_sequences = val_root, val_split, val_sequences
        self.val_frame_step = val_frame_step
        self.samples_per_epoch, self.p_deform, self.p_static, self.seed = samples_per_epoch, p_deform, p_static, seed

    def _train(self) -> list[tuple[DavisRoot, list[str]]]:
        roots = [DavisRoot(p) for p in self.train_roots]
        return [(r, r.sequences(self.train_split, self.train_sequences)) for r in roots]

    def _val(self) -> tuple[DavisRoot, list[str]] | None:
        if not self.val_root:
            return None
        root = DavisRoot(self.val_root)
        names = root.sequences(self.val_split, self.val_sequences)
        for r, train in self._train():
            overlap = sorted(set(train) & set(names)) if r.root.resolve() == root.root.resolve() else []
            if overlap:
                raise ValueError(f"{root.root}: validation sequences {overlap} are also training sequences")
        return root, names

    def _fill(self, root: DavisRoot, sequences) -> None:
        cache = self._cache(root)
        for seq in sequences:
            cache.fill(seq, progress=True)

    def prepare_data(self) -> None:
        for root, names in self._train():
            self._fill(root, names)
        val = self._val()
        if val:
            self._fill(*val)

    def setup(self, stage: str) -> None:
        train = self._train()
        self.train_samples = PropagationSamples(train, [self._cache(r) for r, _ in train],
                                            size=self.crop_size, samples_per_epoch=self.samples_per_epoch,
                                            p_deform=self.p_deform, p_static=self.p_static,
                                            erode_share=self.erode_share, jitter=self.jitter,
                                            box_enlargement=self.box_enlargement, max_gap=self.max_gap,
                                            p_occluder=self.p_occluder, p_background=self.p_background,
                                            flow_preset=self.flow_preset,
                                            augment=self.augment, seed=self.seed)
        val = self._val()
        self.val_pairs = None
        if val:
            self.val_pairs = EvalPairs(val[0], val[1], self._cache(val[0]), size=self.crop_size,
                                       frame_step=self.val_frame_step)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_samples, EpochSampler(self.train_samples))

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_pairs, batch_size=1) if self.val_pairs is not None else []


class OnlineFinetuneDataModule(_SampleDataModule):
    """Online finetuning on the annotated first frame(s) of the sequences to segment (the only labels a user has).

    One joint model over all given sequences, like the original test-dev checkpoint; give one sequence for a
    per-sequence model. Samples are augmented first frames with deformed priors.
    """

    def __init__(self, root: str, sequences: list[str] | None = None, split: str | None = None, crop_size: int = 257,
                 batch_size: int = 4, samples_per_epoch: int = 200, num_workers: int = 0, seed: int = 0,
                 flow_method: str = "dis", flow_preset: str = DEFAULT_PRESET, flow_cache_dir: str | None = None):
        super().__init__(crop_size, batch_size, num_workers, flow_method, flow_preset, flow_cache_dir)
        self.root, self.sequences, self.split = root, sequences, split
        self.samples_per_epoch, self.seed = samples_per_epoch, seed

    def _names(self) -> list[str]:
        return DavisRoot(self.root).sequences(self.split, self.sequences)

    def prepare_data(self) -> None:
        root = DavisRoot(self.root)
        cache = self._cache(root)
        for seq in self._names():
            if len(root.frame_paths(seq)) > 1:
                cache.forward(seq, 0)

    def setup(self, stage: str) -> None:
        root = DavisRoot(self.root)
        self.train_samples = FirstFrameSamples(root, self._names(), self._cache(root), size=self.crop_size,
                                               samples_per_epoch=self.samples_per_epoch, seed=self.seed)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_samples, EpochSampler(self.train_samples))
