"""Command-line argument checks: one-line parse errors, bounded numbers, and output paths of the right kind
(a folder where a folder is expected, a file where a file is) that can be written — all before any work starts,
so a typo never costs a training run.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import SegbenchError


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors as a SegbenchError (the CLI prints ``error: ...`` on one line, exit status 2)
    instead of a usage block; subcommand parsers inherit the class."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SegbenchError(f"{self.prog}: {message}; see '{self.prog} --help'")


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is invalid; valid: an integer in [{low}, {high}]")
        return value

    return parse


def float_in(low: float, high: float) -> Callable[[str], float]:
    """An argparse ``type``: a number in [low, high]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is invalid; valid: a number in [{low:g}, {high:g}]")
        return value

    return parse


def check_output(path: str | Path, flag: str, *, folder: bool) -> Path:
    """``path`` if it can be written as a folder (``folder=True``) or a file: an existing path of the other kind,
    a file where a parent folder should be, or a non-writable folder is a one-line SegbenchError naming ``flag``.
    Nothing is created."""
    path = Path(path).expanduser()
    if path.exists() and folder and not path.is_dir():
        raise SegbenchError(f"{flag} {path}: is a file, not a folder; give a folder path")
    if path.exists() and not folder and path.is_dir():
        raise SegbenchError(f"{flag} {path}: is a folder, not a file; give a file path such as {path / 'out.json'}")
    base = path if folder else path.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise SegbenchError(f"{flag} {path}: {base} is a file, so nothing can be written below it; give another path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise SegbenchError(f"{flag} {path}: folder {base} is not writable; fix its permissions or give another path")
    return path


def check_input_folder(path: str | Path | None, flag: str) -> None:
    """An optional existing folder (e.g. ``--data-root``)."""
    if path is None:
        return
    p = Path(path).expanduser()
    if not p.is_dir():
        what = "is a file, not a folder" if p.exists() else "does not exist"
        raise SegbenchError(f"{flag} {path}: {what}; give the dataset's folder")


def check_training_outputs(datasets: Iterable[str], *, store_root: Path, leaderboard: str | Path) -> None:
    """Every folder a run will write (records, weights, checkpoints, per dataset) is a writable folder."""
    check_output(store_root, "--store", folder=True)
    check_output(leaderboard, "--leaderboard", folder=True)
    for dataset in sorted(set(datasets)):
        check_output(Path(leaderboard) / "records" / dataset, "--leaderboard", folder=True)
        for part in ("weights", "checkpoints"):
            check_output(store_root / part / dataset, "--store", folder=True)


def common_options(p: argparse.ArgumentParser, leaderboard: bool = True) -> None:
    """``--store`` (and ``--leaderboard``), as every command that reads weights or writes records takes them."""
    p.add_argument("--store", default=None, help="weights folder (default $SEGBENCH_STORE or ~/.cache/segbench)")
    if leaderboard:
        p.add_argument("--leaderboard", default="leaderboard", help="where result records go (default: leaderboard)")


def store_of(args: argparse.Namespace):
    """The ``LocalStore`` of ``--store``; a file given as the store is a one-line error."""
    from ..weights.store import LocalStore

    store = LocalStore(args.store)
    if store.root.exists() and not store.root.is_dir():
        raise SegbenchError(f"--store {store.root}: is a file, not a folder; give the weights folder")
    return store


def parse_kv(items: list[str] | None) -> list[tuple[str, object]]:
    """``key=value`` options (``--option``, ``--dataset-arg``) parsed as config overrides are."""
    from ..config.run import parse_override

    return [parse_override(item) for item in items or []]
