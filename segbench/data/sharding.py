"""Which samples each process sees under DDP: its part of every global batch (training), a contiguous slice (evaluation).

Training keeps the single-process protocol: an epoch is ``torch.randperm(n, generator)`` (the same draw a shuffled
``DataLoader`` makes from the same generator), cut into global batches of ``batch_size``; rank ``r`` of ``W`` takes
the slice ``[r*m//W, (r+1)*m//W)`` of each batch of length ``m``. Step ``k`` of all ranks together is batch ``k`` of
the one-process run, image for image. Evaluation splits the dataset into ``W`` contiguous slices without padding
(``DistributedSampler`` pads by repeating images, which would count them twice), in rank order, so per-image results
gathered rank 0 first come back in dataset order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import Sampler

from ..errors import SegbenchError


@dataclass(frozen=True)
class Shard:
    """This process's place under DDP: rank ``rank`` of ``world_size`` processes (one process: 0 of 1)."""

    rank: int = 0
    world_size: int = 1


def rank_slice(length: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s part of ``length`` items (sizes differ by at most one)."""
    return rank * length // world_size, (rank + 1) * length // world_size


def batch_count(n: int, batch_size: int, drop_last: bool) -> int:
    """Global batches per epoch of ``n`` samples."""
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def check_feeds(n: int, batch_size: int, world_size: int, drop_last: bool) -> None:
    """Every rank must get at least one sample of every batch, else DDP waits forever for the empty one."""
    if world_size == 1:
        return
    last = batch_size if drop_last or n % batch_size == 0 else n % batch_size
    if min(n, last) < world_size:
        raise SegbenchError(f"a training batch of {min(n, last)} image(s) cannot feed {world_size} processes; "
                            "use more training images or fewer processes")


class ShardedBatches(Sampler[list[int]]):
    """Batch sampler of rank ``rank``: its slice of each global batch of a shuffled epoch (see the module docstring).

    ``generator`` is the loader's generator, reseeded by the engine each epoch, identical on every rank.
    ``batch_size`` is the global batch; a rank's batches hold about ``batch_size / world_size`` indices.
    """

    def __init__(self, n: int, *, batch_size: int, rank: int, world_size: int, generator: torch.Generator,
                 drop_last: bool) -> None:
        check_feeds(n, batch_size, world_size, drop_last)
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size
        self.generator, self.drop_last = generator, drop_last

    def __len__(self) -> int:
        return batch_count(self.n, self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.n, generator=self.generator).tolist()
        for i in range(len(self)):
            batch = order[i * self.batch_size:(i + 1) * self.batch_size]
            start, stop = rank_slice(len(batch), self.rank, self.world_size)
            yield batch[start:stop]


class EvalShard(Sampler[int]):
    """Rank ``rank``'s contiguous slice ``[start, stop)`` of ``n`` evaluation samples, in order."""

    def __init__(self, n: int, *, rank: int, world_size: int) -> None:
        self.start, self.stop = rank_slice(n, rank, world_size)
        self.world_size = world_size

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))


def first_index(loader: object) -> int:
    """The dataset index of a loader's first sample: its shard's start under DDP, else 0."""
    sampler = getattr(loader, "sampler", None)
    return sampler.start if isinstance(sampler, EvalShard) else 0


def is_sharded(loader: object) -> bool:
    """True when ``loader`` scores only this rank's slice (its counts must be reduced across ranks)."""
    sampler = getattr(loader, "sampler", None)
    return isinstance(sampler, EvalShard) and sampler.world_size > 1

