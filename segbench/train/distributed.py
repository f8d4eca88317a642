"""Distributed training in one small place (after torchvision's ``references/segmentation/utils.py``).

``torchrun`` (or Slurm, or any launcher that sets the same variables) starts one process per device and gives each
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. :func:`session` turns that environment
into a process group for the length of one command (NCCL on GPUs, gloo on CPUs) and tears it down after; without
that environment every helper here is a no-op, so the training loop reads the same with one process or many.

Only writes are guarded by rank (:func:`is_main_process`, :func:`save_on_main`); every rank runs every collective.
A rank that dies, or a rendezvous that times out, ends the others with one ``SegbenchError`` line
(:func:`session`), after at most ``timeout`` for a rank that hangs without dying.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import SegbenchError

DEFAULT_TIMEOUT_MINUTES = 30.0  # a rank waits this long in a collective for a peer that hangs (a dead one is seen at once)
SYNC_BN_BELOW = 8  # per-device batches smaller than this get SyncBatchNorm by default (BN statistics need samples)
T = TypeVar("T")


# ---------------------------------------------------------------- who am I

def launched() -> bool:
    """True when a launcher (torchrun, Slurm + srun wrapper) set the process-group environment."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def local_rank() -> int:
    """This process's index on its node (its GPU)."""
    return int(os.environ.get("LOCAL_RANK", 0)) if is_initialized() else 0


def is_main_process() -> bool:
    return rank() == 0


def main_only(log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` on rank 0, silence elsewhere (N processes would print every line N times)."""
    return log if is_main_process() else (lambda _message: None)


# ---------------------------------------------------------------- the process group of one command

@contextmanager
def session(*, cuda: bool, timeout_minutes: float | None = None) -> Iterator[None]:
    """A process group for the body when launched by torchrun (NCCL if ``cuda``, else gloo); nothing otherwise.

    A failed rendezvous, a peer that died, or a collective that waited ``timeout_minutes`` becomes one
    ``SegbenchError`` line naming this rank; the group is destroyed on every way out.
    """
    if not launched():
        yield
        return
    timeout_minutes = DEFAULT_TIMEOUT_MINUTES if timeout_minutes is None else timeout_minutes
    if timeout_minutes <= 0:
        raise SegbenchError(f"--dist-timeout {timeout_minutes}: give a positive number of minutes")
    backend = "nccl" if cuda else "gloo"
    if cuda:
        if not torch.cuda.is_available():
            raise SegbenchError("launched by torchrun for a CUDA config but no GPU is visible; use device=cpu")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    where = f"rank {os.environ['RANK']}/{os.environ['WORLD_SIZE']}"
    try:
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes),
                                device_id=torch.device("cuda", torch.cuda.current_device()) if cuda else None)
    except (dist.DistError, RuntimeError, ValueError) as exc:
        raise SegbenchError(f"{where}: rendezvous at {os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} "
                            f"failed ({first_line(exc)}); check the torchrun --rdzv-endpoint / --master-addr and "
                            "that every node started") from None
    try:
        yield
        barrier()  # leave together: a rank that failed while writing is reported by the others too
    except dist.DistError as exc:
        raise SegbenchError(lost_peer(where, exc, timeout_minutes)) from None
    except RuntimeError as exc:
        # gloo reports a peer's death as a plain RuntimeError from the collective.
        if not _collective_failure(exc):
            raise
        raise SegbenchError(lost_peer(where, exc, timeout_minutes)) from None
    finally:
        shutdown()


def shutdown() -> None:
    """Destroy the process group (idempotent)."""
    if is_initialized():
        dist.destroy_process_group()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def lost_peer(where: str, exc: BaseException, timeout_minutes: float) -> str:
    return (f"{where}: the process group failed: another rank stopped, or a collective waited "
            f"{timeout_minutes:g} min ({first_line(exc)}); see the first failing rank's error above")


def _collective_failure(exc: RuntimeError) -> bool:
    text = str(exc)
    return any(s in text for s in ("Connection closed by peer", "Connection reset by peer", "Gloo", "gloo",
                                   "NCCL", "Timed out", "timed out", "Broken pipe"))


def check_device(device: torch.device) -> torch.device:
    """The device this rank trains on: ``cuda:LOCAL_RANK`` under DDP on GPUs; refuses a CPU config in an NCCL group."""
    if not is_initialized():
        return device
    if dist.get_backend() == "nccl":
        if device.type != "cuda":
            raise SegbenchError(f"device {device} in a GPU (NCCL) process group: every config of a torchrun "
                                "command must use the same kind of device")
        return torch.device("cuda", local_rank())
    if device.type == "cuda":
        raise SegbenchError("a CUDA config in a CPU (gloo) process group: every config of a torchrun command "
                            "must use the same kind of device")
    return device


# ---------------------------------------------------------------- batch split and BatchNorm

def per_device_batch(batch_size: int) -> int:
    """The per-process batch of global ``batch_size``; a one-line error when it does not divide evenly."""
    n = world_size()
    if batch_size % n:
        raise SegbenchError(f"batch_size {batch_size} (the global batch) does not divide over {n} processes; "
                            f"use a multiple of {n}, e.g. batch_size={max(n, batch_size - batch_size % n)}")
    return batch_size // n


def resolve_sync_bn(requested: bool | None, *, device: torch.device, per_device: int) -> bool:
    """SyncBatchNorm or not: ``requested`` if given, else on for per-GPU batches below ``SYNC_BN_BELOW`` under DDP.
    SyncBatchNorm syncs only on GPUs (PyTorch has no CPU kernel for it); ``sync_bn: true`` on a CPU is refused."""
    if world_size() == 1:
        return False
    if requested and device.type != "cuda":
        raise SegbenchError("sync_bn: true needs GPUs (PyTorch's SyncBatchNorm has no CPU path); "
                            "set sync_bn: false or train on CUDA")
    if requested is None:
        return device.type == "cuda" and per_device < SYNC_BN_BELOW
    return bool(requested)


class DistributedModel(DistributedDataParallel):
    """DDP that answers the wrapped model's own attributes (``task``, ``valid_margin``, ...) the engine reads."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap_model(model: nn.Module, *, device: torch.device, sync_bn: bool) -> nn.Module:
    """``model`` in DDP (BatchNorm -> SyncBatchNorm first when ``sync_bn``), or ``model`` itself without a group.

    The conversion reuses the BatchNorm parameters and buffers, so an optimiser built before still holds them
    and the state-dict keys do not change; :func:`unwrap_sync_bn` turns the layers back after training.
    """
    if not is_initialized():
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # swaps the children in place
    ids = [device.index] if device.type == "cuda" else None
    return DistributedModel(model, device_ids=ids)


def unwrap_sync_bn(module: nn.Module) -> nn.Module:
    """Replace every SyncBatchNorm in ``module`` by a BatchNorm2d holding the same tensors (in place)."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.SyncBatchNorm):
            bn = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            bn.weight, bn.bias = child.weight, child.bias
            bn.running_mean, bn.running_var = child.running_mean, child.running_var
            bn.num_batches_tracked = child.num_batches_tracked
            bn.train(child.training)
            setattr(module, name, bn)
        else:
            unwrap_sync_bn(child)
    return module


# ---------------------------------------------------------------- collectives (identity without a group)

def reduce_sum(tensor: Tensor) -> Tensor:
    """The sum of ``tensor`` over ranks (a new tensor; the input is untouched)."""
    if not is_initialized():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out)
    return out


def from_main(value: float) -> float:
    """Rank 0's ``value`` on every rank: decisions taken from a clock (stop, time budget) must agree."""
    if not is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.broadcast(t, src=0)
    return float(t.item())


def on_main(fn: Callable[[], T]) -> T:
    """``fn()`` run on rank 0 and its result (or its ``SegbenchError``) handed to every rank: reads of files
    that only rank 0 may have (a checkpoint, the store of another node) and decisions all ranks must share."""
    if not is_initialized():
        return fn()
    box: list[Any] = [None]
    if is_main_process():
        try:
            box[0] = (fn(), None)
        except SegbenchError as exc:
            box[0] = (None, exc)
    dist.broadcast_object_list(box, src=0, device=_collective_device())
    value, error = box[0]
    if error is not None:
        raise error
    return value


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order."""
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_instance_evaluator(evaluator: Any) -> None:
    """Merge every rank's ``evaluation.coco.InstanceEvaluator`` detections into each rank's (image ids already
    distinct: each rank numbers its slice from the slice's start); ground-truth ids are renumbered."""
    if not is_initialized():
        return
    fields = ("_images", "_gt", "_boxes", "_segms")
    parts = gather_objects({f: getattr(evaluator, f) for f in fields}
                           | {"cats": evaluator._seen_cats, "most": evaluator._most_detections})
    for f in fields:
        setattr(evaluator, f, [item for part in parts for item in part[f]])
    for i, annotation in enumerate(evaluator._gt, 1):
        annotation["id"] = i
    evaluator._seen_cats = set().union(*(part["cats"] for part in parts))
    evaluator._most_detections = max(part["most"] for part in parts)


def save_on_main(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """``fn(*args, **kwargs)`` on rank 0 only: checkpoints, weights and records are written once."""
    if is_main_process():
        fn(*args, **kwargs)


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
