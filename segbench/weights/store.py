"""Where weights live: a local folder (default) with one directory per trained (model, dataset, config).

Layout: ``<store>/weights/<dataset>/<model>--<id>/model.safetensors`` plus ``model.json`` beside it, the JSON
holding everything needed to rebuild the model without the original YAML (name, options, classes,
normalisation, palette). Records point at weights with a store-relative URI ``local:<dataset>/<model>--<id>``
so a leaderboard stays valid when the store moves; Hub weights use ``hf://<repo_id>``.
Loading never unpickles: safetensors only.

Writes are crash- and concurrency-safe (:mod:`segbench.files`): the new folder is written and fsynced beside the
old one, then swapped in under a per-run lock (``.<model>--<id>.lock``), so an interrupt or a second writer of the
same run leaves the old or the new complete folder, never none; files get the user's umask.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import SegbenchError
from ..files import make_temp_dir, path_lock, recover_dir, replace_dir, write_errors
from .meta import WeightsMeta

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"


def default_store() -> Path:
    """``$SEGBENCH_STORE``, else ``$XDG_CACHE_HOME/segbench`` (``~/.cache/segbench``)."""
    if os.environ.get("SEGBENCH_STORE"):
        return Path(os.environ["SEGBENCH_STORE"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "segbench"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class LocalStore:
    """Weights in a local folder. ``root`` defaults to :func:`default_store`."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_store()

    def run_dir(self, dataset: str, model: str, run_id: str) -> Path:
        return self.root / "weights" / dataset / f"{model}--{run_id}"

    def uri(self, dataset: str, model: str, run_id: str) -> str:
        return f"local:{dataset}/{model}--{run_id}"

    def resolve(self, uri_or_path: str | Path) -> Path:
        """A weights directory from a ``local:`` URI, a directory, or a ``model.safetensors`` path."""
        text = str(uri_or_path)
        if text.startswith("local:"):
            weights = (self.root / "weights").resolve()
            path = weights / text[len("local:"):]
            # A record's URI names a run inside the store; '..' or an absolute part must not reach outside it.
            if not path.resolve().is_relative_to(weights) or path.resolve() == weights:
                raise SegbenchError(f"{text}: a local: weights URI must name a run inside the store "
                                    f"({weights}), like local:<dataset>/<model>--<id>")
        else:
            path = Path(text).expanduser()
            path = path.parent if path.suffix == ".safetensors" else path
        recover_dir(path)  # a writer killed between its two renames left the old folder aside
        return path

    def has(self, dataset: str, model: str, run_id: str) -> bool:
        d = self.run_dir(dataset, model, run_id)
        recover_dir(d)
        return (d / WEIGHTS_FILE).is_file() and (d / CONFIG_FILE).is_file()

    def save(self, model: nn.Module, meta: WeightsMeta, dataset: str, name: str, run_id: str, *,
             log: Callable[[str], None] = print) -> dict[str, str]:
        """Write weights + config crash- and concurrency-safely (module docstring); returns the record's
        ``weights`` entry {sha256, uri, config_uri}. A second writer of the same run waits (and says for whom)."""
        final = self.run_dir(dataset, name, run_id)

        def write(tmp: Path) -> None:
            save_weights(model, meta, tmp)

        sha = install_dir(final, write, log=log)
        uri = self.uri(dataset, name, run_id)
        return {"sha256": sha, "uri": uri, "config_uri": f"{uri}/{CONFIG_FILE}"}


def install_dir(final: Path, write: Callable[[Path], None], *, expected_sha256: str | None = None,
                log: Callable[[str], None] = print) -> str:
    """Fill a fresh hidden folder with ``write(folder)`` (it must leave model.safetensors + model.json there),
    check the weights' sha256 against ``expected_sha256`` when given, and swap it in as ``final`` under the run's
    lock. Returns the sha256 of the installed weights. Also the Hub pull's install step."""
    with path_lock(final, log=log):
        tmp = make_temp_dir(final)
        try:
            with write_errors(final):
                write(tmp)
            sha = sha256_file(tmp / WEIGHTS_FILE)
            if expected_sha256 is not None and sha != expected_sha256:
                raise SegbenchError(f"{final}: copied weights changed on disk (sha256 {sha[:12]}…, expected "
                                    f"{expected_sha256[:12]}…); pull again")
            replace_dir(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return sha


def save_weights(model: nn.Module, meta: WeightsMeta, directory: str | Path) -> Path:
    """``model.safetensors`` (contiguous CPU tensors, shared storages cloned) and ``model.json`` in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    try:
        save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt", "model": meta.model})
    except SafetensorError as exc:  # its I/O errors are not OSErrors: give a full disk its errno back
        found = re.search(r"os error (\d+)", str(exc))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(directory / WEIGHTS_FILE)) from None
    (directory / CONFIG_FILE).write_text(json.dumps(meta.to_dict(), indent=2) + "\n", encoding="utf-8")
    return directory / WEIGHTS_FILE


def read_meta(directory: str | Path) -> WeightsMeta:
    """The checked :class:`WeightsMeta` of ``directory/model.json``; SegbenchError names the file and the fix."""
    path = Path(directory) / CONFIG_FILE
    return WeightsMeta.from_dict(read_meta_json(path), source=path)


def read_meta_json(path: Path) -> Any:
    """model.json's parsed JSON, unchecked (:meth:`WeightsMeta.from_dict` checks it)."""
    if not path.is_file():
        raise SegbenchError(f"{path}: weights config not found; pass a folder made by 'segbench train' or a model.safetensors beside its model.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SegbenchError(f"{path}: unreadable weights config ({exc}); retrain or pull the weights again") from None


def load_model(path: str | Path, *, store: LocalStore | None = None, map_location: str = "cpu") -> tuple[nn.Module, WeightsMeta]:
    """Rebuild a model from its weights folder (or ``model.safetensors`` path or ``local:`` URI).

    Returns (model in eval mode on ``map_location``, meta). A missing file, a corrupt file or weights whose
    shapes differ from the config (e.g. another number of classes) raise SegbenchError naming the file.
    """
    from ..models import build_model

    directory = (store or LocalStore()).resolve(path)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise SegbenchError(f"{weights}: weights file not found; train it with 'python -m segbench run' or fetch it with 'python -m segbench pull'")
    meta = read_meta(directory)
    model = build_model(meta.model, num_classes=meta.num_classes, **meta.model_args)
    try:
        state = load_file(str(weights), device=map_location)
    except (SafetensorError, OSError) as exc:
        raise SegbenchError(f"{weights}: not a valid safetensors file ({exc}); delete it and retrain or pull again") from None
    state = fill_batchnorm_counters(model, state)
    check_state_dict(model, state, weights)
    model.load_state_dict(state)
    return model.eval().to(map_location), meta


def fill_batchnorm_counters(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add the ``num_batches_tracked`` counters a BatchNorm layer of ``model`` expects when ``state`` holds that
    layer's statistics without one: weights trained with the layer frozen (``FrozenBatchNorm2d``: a pretrained Mask
    R-CNN encoder) rebuilt without the pretrained file (the demo pack). The counter only steers training-mode
    averaging; in eval mode both layers compute ``(x - mean) / sqrt(var + eps) * weight + bias``."""
    expected = model.state_dict()
    filled = dict(state)
    for key, tensor in expected.items():
        prefix = key.removesuffix("num_batches_tracked")
        if key.endswith(".num_batches_tracked") and key not in state and f"{prefix}running_mean" in state:
            filled[key] = torch.zeros_like(tensor, device="cpu")
    return filled


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Compare keys and shapes first so a mismatch is one line, not torch's multi-line error."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise SegbenchError(
            f"{source}: weights do not fit the model ({len(missing)} missing keys e.g. {missing[:2]}, "
            f"{len(unexpected)} unexpected e.g. {unexpected[:2]}); check the model name and options in model.json"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise SegbenchError(
                f"{source}: '{key}' has shape {tuple(state[key].shape)} but the model expects {tuple(tensor.shape)} "
                "(different num_classes or width?); use the config the weights were trained with"
            )
