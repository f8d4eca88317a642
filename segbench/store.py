"""Where weights live: a local folder (default) with one directory per trained (model, dataset, config).

Layout: ``<store>/weights/<dataset>/<model>--<id>/model.safetensors`` plus ``model.json`` beside it, the JSON
holding everything needed to rebuild the model without the original YAML (name, options, classes,
normalisation, palette). Records point at weights with a store-relative URI ``local:<dataset>/<model>--<id>``
so a leaderboard stays valid when the store moves; Hub weights use ``hf://<repo_id>``.
Loading never unpickles: safetensors only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import SegbenchError

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
            return self.root / "weights" / text[len("local:"):]
        path = Path(text).expanduser()
        return path.parent if path.suffix == ".safetensors" else path

    def has(self, dataset: str, model: str, run_id: str) -> bool:
        d = self.run_dir(dataset, model, run_id)
        return (d / WEIGHTS_FILE).is_file() and (d / CONFIG_FILE).is_file()

    def save(self, model: nn.Module, meta: dict[str, Any], dataset: str, name: str, run_id: str) -> dict[str, str]:
        """Write weights + config atomically (a temporary directory, then a rename); returns the record's
        ``weights`` entry {sha256, uri, config_uri}."""
        final = self.run_dir(dataset, name, run_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
        try:
            save_weights(model, meta, tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        uri = self.uri(dataset, name, run_id)
        return {"sha256": sha256_file(final / WEIGHTS_FILE), "uri": uri, "config_uri": f"{uri}/{CONFIG_FILE}"}


def save_weights(model: nn.Module, meta: dict[str, Any], directory: str | Path) -> Path:
    """``model.safetensors`` (contiguous CPU tensors, shared storages cloned) and ``model.json`` in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt", "model": str(meta.get("model"))})
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return directory / WEIGHTS_FILE


def read_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise SegbenchError(f"{path}: weights config not found; pass a folder made by 'segbench train' or a model.safetensors beside its model.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SegbenchError(f"{path}: unreadable weights config ({exc}); retrain or pull the weights again") from None


def load_model(path: str | Path, *, store: LocalStore | None = None, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from its weights folder (or ``model.safetensors`` path or ``local:`` URI).

    Returns (model in eval mode on ``map_location``, meta). A missing file, a corrupt file or weights whose
    shapes differ from the config (e.g. another number of classes) raise SegbenchError naming the file.
    """
    from .models import build_model

    directory = (store or LocalStore()).resolve(path)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise SegbenchError(f"{weights}: weights file not found; train it with 'python -m segbench run' or fetch it with 'python -m segbench pull'")
    meta = read_meta(directory)
    model = build_model(meta["model"], num_classes=int(meta["num_classes"]), **meta.get("model_args", {}))
    try:
        state = load_file(str(weights), device=map_location)
    except (SafetensorError, OSError) as exc:
        raise SegbenchError(f"{weights}: not a valid safetensors file ({exc}); delete it and retrain or pull again") from None
    check_state_dict(model, state, weights)
    model.load_state_dict(state)
    return model.eval().to(map_location), meta


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
