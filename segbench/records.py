"""Result records: one JSON per (model, dataset) run, their schema, atomic writing and loading into pandas.

A record lives at ``leaderboard/records/<dataset>/<model>--<id>.json`` (see DESIGN.md). Metric values are
fractions in [0, 1]; a NaN (absent class) is stored as ``null``. Loading never raises on a bad file: it is
reported by name and skipped, so the app and the README table survive a malformed record.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

SCHEMA_VERSION = 1
DEFAULT_ROOT = Path("leaderboard")

# key -> allowed types (None allowed where listed). Nested dicts are checked one level down below.
_TOP: dict[str, tuple[type, ...]] = {
    "schema": (int,),
    "id": (str,),
    "model": (str,),
    "family": (str,),
    "variant": (str,),
    "task": (str,),
    "dataset": (str,),
    "split": (str,),
    "num_classes": (int,),
    "class_names": (list,),
    "metrics": (dict,),
    "efficiency": (dict,),
    "training": (dict,),
    "config": (dict,),
    "seed": (int,),
    "versions": (dict,),
    "git_commit": (str, type(None)),
    "date": (str,),
    "weights": (dict,),
    "hardware": (dict,),
}
_METRICS = ("pixel_accuracy", "mean_pixel_accuracy", "miou", "fwiou")
_EFFICIENCY = ("params", "gflops", "latency")
_NUMBER = (int, float)

# Flat columns of the leaderboard table, in display order.
COLUMNS = [
    "model", "family", "variant", "dataset", "split", "pixel_accuracy", "mean_pixel_accuracy", "miou", "fwiou",
    "mean_dice", "mask_ap", "box_ap", "params", "gflops", "receptive_field", "output_stride", "latency_ms",
    "latency_device", "train_seconds", "train_device", "epochs", "date", "id", "path",
]


class RecordError(ValueError):
    """A record that does not follow the schema; the message names the first problem."""


def validate_record(record: dict[str, Any]) -> None:
    """Raise RecordError naming the first missing or mistyped field."""
    if not isinstance(record, dict):
        raise RecordError("record is not a JSON object")
    for key, types in _TOP.items():
        if key not in record:
            raise RecordError(f"missing field '{key}'")
        if not isinstance(record[key], types) or isinstance(record[key], bool):
            raise RecordError(f"field '{key}' has type {type(record[key]).__name__}")
    if record["schema"] != SCHEMA_VERSION:
        raise RecordError(f"schema {record['schema']} is not {SCHEMA_VERSION}")
    metrics = record["metrics"]
    for key in _METRICS:
        value = metrics.get(key)
        if value is not None and (not isinstance(value, _NUMBER) or not 0.0 <= value <= 1.0):
            raise RecordError(f"metrics.{key} must be a fraction in [0, 1] or null, got {value!r}")
    if metrics.get("miou") is None:
        raise RecordError("metrics.miou is missing")
    efficiency = record["efficiency"]
    for key in _EFFICIENCY:
        if key not in efficiency:
            raise RecordError(f"missing field 'efficiency.{key}'")
    if not isinstance(efficiency["latency"], dict) or "ms" not in efficiency["latency"]:
        raise RecordError("efficiency.latency must hold 'ms' and 'device'")
    for key in ("sha256", "uri"):
        if not isinstance(record["weights"].get(key), str):
            raise RecordError(f"missing field 'weights.{key}'")
    for key in ("seconds", "device"):
        if key not in record["training"]:
            raise RecordError(f"missing field 'training.{key}'")


def _clean(value: Any) -> Any:
    """NaN/inf -> None recursively, so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def record_path(root: str | Path, record: dict[str, Any]) -> Path:
    return Path(root) / "records" / record["dataset"] / f"{record['model']}--{record['id']}.json"


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(record: dict[str, Any], root: str | Path = DEFAULT_ROOT) -> Path:
    """Validate and write ``record`` atomically; returns its path."""
    record = _clean(record)
    validate_record(record)
    path = record_path(root, record)
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=False) + "\n")
    return path


def iter_record_files(root: str | Path = DEFAULT_ROOT) -> list[Path]:
    base = Path(root) / "records"
    return sorted(base.glob("*/*.json")) if base.is_dir() else []


def read_record(path: str | Path) -> dict[str, Any]:
    """Read and validate one record; RecordError names the file and the problem."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"{path}: not readable JSON ({exc})") from None
    try:
        validate_record(record)
    except RecordError as exc:
        raise RecordError(f"{path}: {exc}") from None
    return record


def load_records(sources: str | Path | Iterable[str | Path] = DEFAULT_ROOT) -> tuple[list[dict[str, Any]], list[str]]:
    """Load every valid record under the given leaderboard roots (or record files).

    Returns (records, problems): each problem is one line naming a skipped file.
    """
    if isinstance(sources, (str, Path)):
        sources = [sources]
    files: list[Path] = []
    for source in sources:
        source = Path(source)
        files.extend([source] if source.is_file() else iter_record_files(source))
    records, problems = [], []
    for path in files:
        try:
            record = read_record(path)
        except RecordError as exc:
            problems.append(str(exc))
            continue
        record["_path"] = str(path)
        records.append(record)
    return records, problems


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One leaderboard row from a record."""
    m, e, t = record["metrics"], record["efficiency"], record["training"]
    latency = e.get("latency") or {}
    return {
        "model": record["model"],
        "family": record["family"],
        "variant": record["variant"],
        "dataset": record["dataset"],
        "split": record["split"],
        "pixel_accuracy": m.get("pixel_accuracy"),
        "mean_pixel_accuracy": m.get("mean_pixel_accuracy"),
        "miou": m.get("miou"),
        "fwiou": m.get("fwiou"),
        "mean_dice": m.get("mean_dice"),
        "mask_ap": m.get("mask_ap"),
        "box_ap": m.get("box_ap"),
        "params": e.get("params"),
        "gflops": e.get("gflops"),
        "receptive_field": e.get("receptive_field"),
        "output_stride": e.get("output_stride"),
        "latency_ms": latency.get("ms"),
        "latency_device": latency.get("device"),
        "train_seconds": t.get("seconds"),
        "train_device": t.get("device"),
        "epochs": t.get("epochs"),
        "date": record["date"],
        "id": record["id"],
        "path": record.get("_path"),
    }


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """A DataFrame with the COLUMNS above, one row per record, best mIoU first within each dataset."""
    frame = pd.DataFrame([flatten(r) for r in records], columns=COLUMNS)
    if frame.empty:
        return frame
    return frame.sort_values(["dataset", "miou"], ascending=[True, False], na_position="last").reset_index(drop=True)


def load_frame(sources: str | Path | Iterable[str | Path] = DEFAULT_ROOT) -> tuple[pd.DataFrame, list[str]]:
    """Convenience: load_records + records_frame."""
    records, problems = load_records(sources)
    return records_frame(records), problems
