"""The runner's data: loaders for one config, the holdout slice carved out of train, the test split if present.

Semantic loaders yield ``(uint8 [B,C,H,W], int64 [B,H,W])`` (lists when evaluation images differ in size);
instance loaders yield ``(list[uint8 [C,H,W]], list[target])`` whose targets also carry the ``"semantic"``
int64 [H,W] mask, so every family is scored with the same PA/mPA/mIoU. Ignore value: ``info.ignore_index``.

Selection never looks at the reported split: with ``select_on=holdout`` a fixed, seeded slice of train
(:func:`holdout_indices`) is removed from training and scored to pick the checkpoint. Label-efficiency runs
(``train_fraction``) train on a seeded subset of the rest (:func:`training_indices`), nested across fractions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..config.run import RunConfig
from ..data import DatasetInfo, build_dataset
from ..data.registry import default_root
from ..data.resident import DeviceAugment, NotResident, Preload, ResidentLoader, resident_budget
from ..data.sharding import EvalShard, Shard, ShardedBatches
from ..data.transforms import TrainTransform, collate_instance, collate_semantic
from ..device import device_name
from ..errors import SegbenchError
from . import distributed

# ---------------------------------------------------------------- dataset views

class WithSemantic(Dataset):
    """Instance samples whose target also carries the semantic mask of the same image (for PA/mPA/mIoU)."""

    def __init__(self, instances: Dataset, semantic: Dataset) -> None:
        if len(instances) != len(semantic):
            raise SegbenchError(f"instance and semantic views differ in length ({len(instances)} vs {len(semantic)})")
        self.instances, self.semantic, self.info = instances, semantic, semantic.info

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, i: int):
        image, target = self.instances[i]
        return image, {**target, "semantic": self.semantic[i][1]}


class Indexed(Dataset):
    """The samples ``indices`` of a dataset, keeping its ``info`` and instance-view attributes."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices, self.info = dataset, list(indices), dataset.info

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]

    def __getattr__(self, name: str):
        if name in ("dataset", "indices", "info"):
            raise AttributeError(name)
        if name == "load":  # the untransformed sample, when the wrapped dataset offers one
            load = getattr(self.dataset, "load")
            return lambda i: load(self.indices[i])
        return getattr(self.dataset, name)


def collate_eval(batch: list) -> tuple[Any, Any]:
    """Stack when all images share a size; otherwise keep lists (evaluated one by one)."""
    shapes = {tuple(img.shape) for img, _ in batch}
    if len(shapes) == 1:
        return collate_semantic(batch)
    return [img for img, _ in batch], [m for _, m in batch]


def train_transform(cfg: RunConfig, info: DatasetInfo) -> TrainTransform | None:
    if cfg.crop_size is None and cfg.scale_min == cfg.scale_max == 1.0 and not cfg.hflip and not cfg.color_jitter:
        return None
    return TrainTransform(crop_size=cfg.crop_size, scale=(cfg.scale_min, cfg.scale_max), hflip=cfg.hflip,
                          color_jitter=cfg.color_jitter, ignore_index=info.ignore_index)


def holdout_indices(cfg: RunConfig, n: int) -> list[int]:
    """The train indices held out for checkpoint selection: ``holdout_images`` (or ``holdout_fraction`` of ``n``,
    default 0.1, at least 1) drawn by ``holdout_seed``, sorted; [] unless ``select_on=holdout``."""
    if cfg.select_on != "holdout":
        return []
    k = cfg.holdout_images if cfg.holdout_images is not None else max(1, round(n * (cfg.holdout_fraction or 0.1)))
    if k >= n:
        raise SegbenchError(f"holdout of {k} images leaves nothing of the {n} training images; lower holdout_images")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.holdout_seed))
    return sorted(order[:k].tolist())


def training_indices(cfg: RunConfig, n: int, holdout: list[int]) -> list[int] | None:
    """The train indices trained on, sorted; None for the whole split (no holdout, no ``train_fraction``).

    With ``train_fraction`` f: the first ``max(1, round(f * m))`` of one permutation (seeded by
    ``train_fraction_seed``) of the ``m`` images not held out. The permutation depends on ``m`` and the seed only,
    so smaller fractions are subsets of larger ones (1/8 of the images inside 1/4 inside 1/2), and ``seed`` changes
    the training (initialisation, batches, augmentation) but never which images are labelled."""
    if not holdout and cfg.train_fraction is None:
        return None
    held = set(holdout)
    pool = [i for i in range(n) if i not in held]
    if cfg.train_fraction is None:
        return pool
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(cfg.train_fraction_seed))
    k = max(1, round(cfg.train_fraction * len(pool)))
    return sorted(pool[j] for j in order[:k].tolist())


# ---------------------------------------------------------------- loaders of one config

@dataclass
class Data:
    """Everything the runner needs from the data of one config."""

    info: DatasetInfo
    train: Any  # DataLoader or ResidentLoader; None when weights are reused
    val: DataLoader
    select: DataLoader | None  # the holdout slice (select_on=holdout)
    holdout: list[int]  # its train indices
    label_to_class: torch.Tensor | None
    fill: int | None
    model_classes: int
    label_names: list[str] | None = None
    train_indices: list[int] | None = None  # the train images trained on (None: the whole split)


def split_builder(cfg: RunConfig) -> Callable[..., Dataset]:
    """``build(split, **kwargs)``: one split of the config's dataset, limited to ``limit_images`` if set."""
    common = dict(root=cfg.data_root, **cfg.dataset_args)

    def build(split: str, **kwargs: Any) -> Dataset:
        dataset = build_dataset(cfg.dataset, split=split, **common, **kwargs)
        return Indexed(dataset, range(min(cfg.limit_images, len(dataset)))) if cfg.limit_images else dataset

    return build


def eval_loader(dataset: Dataset, *, task: str, batch_size: int, num_workers: int = 0,
                instances: Dataset | None = None) -> DataLoader:
    """The evaluation loader of a split (the same for ``run`` and ``eval``): no shuffling, no augmentation.
    Under DDP each rank scores its contiguous slice (``data.sharding.EvalShard``); the engine reduces the counts.
    Instance models are scored one image at a time, whatever ``batch_size``: torchvision's detection transform pads
    a batch to its largest image, which changed balloon's scores with the batch (mIoU 94.46 at 2, 94.03 at 1);
    ``predict``, the app and the latency columns run one image too."""
    if task == "instance":
        dataset, batch_size = WithSemantic(instances, dataset), 1
    shard = EvalShard(len(dataset), rank=distributed.rank(), world_size=distributed.world_size())
    return DataLoader(dataset, batch_size=batch_size, sampler=shard, num_workers=num_workers,
                      collate_fn=collate_instance if task == "instance" else collate_eval)


def train_batches(dataset: Dataset, cfg: RunConfig, collate: Callable, *, drop_last: bool) -> DataLoader:
    """The shuffled training loader of ``cfg.batch_size`` (the global batch); under DDP, this rank's part of each
    batch (``data.sharding.ShardedBatches``, the same images per step as one process)."""
    generator = torch.Generator().manual_seed(cfg.seed)
    if distributed.world_size() == 1:
        return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
                          collate_fn=collate, generator=generator, drop_last=drop_last)
    batches = ShardedBatches(len(dataset), batch_size=cfg.batch_size, rank=distributed.rank(),
                             world_size=distributed.world_size(), generator=generator, drop_last=drop_last)
    return DataLoader(dataset, batch_sampler=batches, num_workers=cfg.num_workers, collate_fn=collate,
                      generator=generator)


def build_data(cfg: RunConfig, task: str, *, need_train: bool, device: torch.device | None = None,
               log: Callable[[str], None] = print) -> Data:
    """Loaders for one config. Instance models get instance views plus the semantic masks for scoring."""
    if task == "instance" and cfg.loader == "device":
        raise SegbenchError(f"loader=device holds semantic splits only; '{cfg.model}' is an instance model: use loader=auto")
    build = split_builder(cfg)
    device = device or torch.device("cpu")
    val_sem = build(cfg.eval_split)
    info = val_sem.info
    subset = cfg.select_on == "holdout" or cfg.train_fraction is not None
    n_train = len(build(cfg.train_split)) if subset else 0
    holdout = holdout_indices(cfg, n_train)
    keep = training_indices(cfg, n_train, holdout)
    if task == "instance":
        return _instance_data(cfg, build, val_sem, holdout, keep, need_train=need_train)
    select = None
    if holdout:
        select = eval_loader(Indexed(build(cfg.train_split), holdout), task=task, batch_size=cfg.batch_size)
    train_loader: Any = None
    if need_train:
        train_loader = _resident_loader(cfg, info, build, keep, device, log)
        if train_loader is None:
            train_ds = _only(build(cfg.train_split, transform=train_transform(cfg, info)), keep)
            if len(train_ds) == 0:
                raise SegbenchError(f"dataset '{cfg.dataset}' split '{cfg.train_split}' is empty; check data_root")
            train_loader = train_batches(train_ds, cfg, collate_semantic, drop_last=len(train_ds) > cfg.batch_size)
    val = eval_loader(val_sem, task=task, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    return Data(info, train_loader, val, select, holdout, None, None, info.num_classes, train_indices=keep)


def _only(dataset: Dataset, keep: list[int] | None) -> Dataset:
    """The samples ``keep`` of ``dataset`` (all of them for None)."""
    return dataset if keep is None else Indexed(dataset, keep)


def _instance_data(cfg: RunConfig, build: Callable[..., Dataset], val_sem: Dataset, holdout: list[int],
                   keep: list[int] | None, *, need_train: bool) -> Data:
    """Instance views; the class of uncovered pixels (``fill``) comes from the train split, never the scored one."""
    info = val_sem.info
    train_inst = build(cfg.train_split, task="instance")
    fill = getattr(train_inst, "fill", None)
    val_inst = _with_fill(build(cfg.eval_split, task="instance"), fill)
    val = eval_loader(val_sem, task="instance", batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                      instances=val_inst)
    select = None
    if holdout:
        select = eval_loader(Indexed(build(cfg.train_split), holdout), task="instance", batch_size=cfg.batch_size,
                             instances=Indexed(_with_fill(train_inst, fill), holdout))
    train_loader = None
    if need_train:
        train_ds = _only(build(cfg.train_split, task="instance", transform=train_transform(cfg, info)), keep)
        train_loader = train_batches(train_ds, cfg, collate_instance, drop_last=False)
    l2c = getattr(val_inst, "label_to_class", None)
    model_classes = int(getattr(val_inst, "num_labels", len(l2c) if l2c is not None else info.num_classes))
    names = getattr(val_inst, "label_names", None)
    return Data(info, train_loader, val, select, holdout, l2c, fill, model_classes,
                list(names) if names is not None else None, train_indices=keep)


def _with_fill(view: Dataset, fill: int | None) -> Dataset:
    """An instance view of the same split whose uncovered pixels get class ``fill`` (a semantic view's rule)."""
    from ..data.instances import InstanceView

    base = view.dataset if isinstance(view, Indexed) else view
    if fill is None or not isinstance(base, InstanceView) or base.fill == fill:
        return view
    fixed = InstanceView(base.dataset, min_area=base.min_area, connectivity=base.connectivity, fill=fill)
    return Indexed(fixed, view.indices) if isinstance(view, Indexed) else fixed


def _resident_loader(cfg: RunConfig, info: DatasetInfo, build: Callable[..., Dataset], keep: list[int] | None,
                     device: torch.device, log: Callable[[str], None]) -> ResidentLoader | None:
    """``loader=device`` (or ``auto`` on a GPU): the training split on the device, augmented there; else None."""
    if cfg.loader == "host" or (cfg.loader == "auto" and device.type != "cuda"):
        return None
    try:
        augment = DeviceAugment(cfg.crop_size, (cfg.scale_min, cfg.scale_max), hflip=cfg.hflip,
                                color_jitter=cfg.color_jitter, ignore_index=info.ignore_index)
        t0 = time.perf_counter()
        loader = ResidentLoader(_only(build(cfg.train_split), keep), batch_size=cfg.batch_size, device=device,
                                augment=augment, seed=cfg.seed,
                                preload=Preload(num_workers=cfg.num_workers, max_bytes=resident_budget(device)),
                                shard=Shard(rank=distributed.rank(), world_size=distributed.world_size()))
    except NotResident as exc:
        if cfg.loader == "device":
            raise SegbenchError(f"loader=device: {exc}; use loader=host") from None
        log(f"training batches from the host loader ({exc})")
        return None
    log(f"training split on {device_name(device)}: {loader.images.shape[0]} images, "
        f"{loader.nbytes / 2**20:.0f} MiB, loaded in {time.perf_counter() - t0:.1f} s")
    return loader


def find_test_split(cfg: RunConfig) -> Dataset | None:
    """The dataset's ``test`` split when its data root has one (and it is not the reported split), else None.

    A data root without a test split scores none; one with a top-level ``test*`` entry (CamVid's ``test/`` and
    ``testannot/``, a folder dataset's ``test/``) whose split cannot be built is an error naming the problem, so a
    half-copied test split never turns silently into a record without test scores."""
    if cfg.eval_split == "test":
        return None
    try:
        dataset = split_builder(cfg)("test")
    except SegbenchError as exc:
        folder = cfg.data_root or default_root(cfg.dataset)
        root = Path(folder) if folder else None
        if root is not None and root.is_dir() and any(p.name.lower().startswith("test") for p in root.iterdir()):
            raise SegbenchError(f"{exc} (the data root {root} has a test split that cannot be read: complete it, "
                                "or move it away to record no test scores)") from None
        return None
    return dataset if len(dataset) else None
