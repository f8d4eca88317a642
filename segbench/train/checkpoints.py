"""Training checkpoints: atomic writes, loads that never unpickle code.

A checkpoint is a plain dict of tensors, numbers, strings, lists, tuples and dicts, so ``torch.load(weights_only=True)``
reads it back.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from ..errors import SegbenchError
from ..files import atomic_write


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file, fsync, then rename (files.atomic_write): a crash or Ctrl-C never leaves a
    half-written checkpoint, the previous one stays until the new one is complete; the user's umask applies and
    a full disk is one SegbenchError line."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the same user problem
        raise SegbenchError(f"{path}: unreadable checkpoint ({type(exc).__name__}); delete it to start over") from None


# ---------------------------------------------------------------- resuming

CHECKPOINT_FORMAT = 2  # last.pt layout written by engine.train (1: the base commit's, without steps/RNG/selection)


class NoCheckpoint(SegbenchError):
    """``resume`` was asked for but there is nothing to resume from."""


def has_checkpoint(checkpoint_dir: Path | None) -> bool:
    """True if ``checkpoint_dir`` holds a ``last.pt`` that ``train(resume=True)`` can continue from."""
    return checkpoint_dir is not None and (Path(checkpoint_dir) / "last.pt").is_file()


def read_resume_state(checkpoint_dir: Path | None, *, epochs: int) -> dict[str, Any]:
    """The ``last.pt`` state to resume a run of ``epochs`` epochs from; ``NoCheckpoint`` if there is none,
    ``SegbenchError`` if it belongs to another budget or an older layout (continuing it would not be exact)."""
    if checkpoint_dir is None:
        raise NoCheckpoint("resume: no checkpoint directory was given; pass checkpoint_dir or drop resume")
    path = Path(checkpoint_dir) / "last.pt"
    if not path.is_file():
        raise NoCheckpoint(f"{path}: no checkpoint to resume from; run without --resume to start fresh")
    state = load_checkpoint(path)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise SegbenchError(f"{path}: checkpoint from an older segbench (no RNG/selection state); delete it to start over")
    if int(state["epochs"]) != epochs:
        raise SegbenchError(f"{path}: checkpoint is for a {state['epochs']}-epoch run, not {epochs}; "
                            "use the same epochs or delete it to start over")
    return state


def rng_state(generator: torch.Generator | None) -> dict[str, Any]:
    """Every RNG a training step may draw from: Python's, torch's CPU and CUDA generators, the loader's."""
    return {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        # Reading CUDA's state would initialise CUDA; an untouched CUDA RNG has nothing to restore.
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "loader": generator.get_state() if generator is not None else None,
    }


def restore_rng_state(state: dict[str, Any], generator: torch.Generator | None) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if state["loader"] is not None and generator is not None:
        generator.set_state(state["loader"])
