"""The result record's schema (version 2): validation and the migration of schema-1 records.

Validation checks what a reader relies on: the fields exist with the right types, every number a reader shows
or plots is finite, fractions lie in [0, 1], counts, sizes, times and rates are non-negative (sizes positive),
a confidence interval is ordered, and every training-history entry is finite and non-negative. It raises
:class:`RecordError` naming the first problem, so a loader can report the file in one line and skip it.

Schema-1 records (before GMACs, selection and safety caps were recorded) are migrated on read
(:func:`migrate`): ``gmacs = gflops / 2`` (schema 1 counted a multiply-add as two FLOPs),
``latency.forward_ms = latency.ms`` (it timed the forward pass only), ``end_to_end_ms = null``,
``selection.checkpoint = "best-val (schema 1)"`` (schema 1 reported its best epoch on the split it scored),
``training.capped = training.stopped_early``, ``training.track = "time"`` when the config had a wall-time
budget, and ``hardware_class`` from the device name. Their schema-1 keys stay beside the new ones.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from ..errors import NAME_RULE, short_repr, valid_name
from .columns import END_TO_END_SCOPE, FORWARD_SCOPE, HEADLINE, MACS_CONVENTION, SCORE_KEYS

SCHEMA_VERSION = 2
HARDWARE_CLASSES = ("cpu", "cuda", "mps")

_TOP: dict[str, tuple[type, ...]] = {
    "schema": (int,), "id": (str,), "group": (str,), "hardware_class": (str,), "model": (str,), "family": (str,),
    "variant": (str,), "task": (str,), "dataset": (str,), "split": (str,), "num_classes": (int,),
    "class_names": (list,), "metrics": (dict,), "test_metrics": (dict, type(None)), "selection": (dict,),
    "efficiency": (dict,), "training": (dict,), "config": (dict,), "seed": (int,), "versions": (dict,),
    "git_commit": (str, type(None)), "date": (str,), "weights": (dict,), "hardware": (dict,),
}
_PER_CLASS = ("iou", "accuracy", "dice", "boundary_iou")


# The trust boundary's limits: a record is read from folders, packs and Hub repos that anyone may write.
_HASH12 = re.compile(r"[0-9a-f]{12}")  # the run id: the config hash
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HUB_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_HUB_URI = re.compile(rf"hf://{_HUB_PART}/{_HUB_PART}(/runs/[0-9a-f]{{12}})?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_TEXT = 200  # characters in a free-text field a reader shows (variant, class names, device)
MAX_CLASSES = 1000
INT64_MAX = 2**63 - 1  # per-image counts are int64 tensors when read back
MEAN_TOLERANCE = 1e-6  # mIoU against the mean of its per-class IoU (both written from one float64 computation)


class RecordError(ValueError):
    """A record that does not follow the schema; the message names the first problem."""


# ---------------------------------------------------------------- value checks

def _number(value: Any, where: str, *, low: float | None = None, high: float | None = None,
            nullable: bool = True) -> None:
    if value is None:
        if not nullable:
            raise RecordError(f"{where} is missing")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordError(f"{where} must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise RecordError(f"{where} must be {span}, got {value!r}")


def _fraction(value: Any, where: str, *, nullable: bool = True) -> None:
    _number(value, where, low=0.0, high=1.0, nullable=nullable)


def _metrics(metrics: dict[str, Any], where: str) -> None:
    """A metrics dict (``metrics`` or ``test_metrics``): fractions, per-class fractions, CI, per-image counts."""
    for key in SCORE_KEYS:  # every score of columns.COLUMNS; only the headline must be there
        _fraction(metrics.get(key), f"{where}.{key}", nullable=key != HEADLINE)
    for key in _PER_CLASS:
        values = metrics.get(key)
        if values is not None and not isinstance(values, dict):
            raise RecordError(f"{where}.{key} must map class names to fractions")
        for name, value in (values or {}).items():
            _fraction(value, f"{where}.{key}.{name}")
    ci = metrics.get("miou_ci")
    if ci is not None:
        if not isinstance(ci, list) or len(ci) != 2:
            raise RecordError(f"{where}.miou_ci must be [low, high] or null, got {ci!r}")
        _fraction(ci[0], f"{where}.miou_ci[0]", nullable=False)
        _fraction(ci[1], f"{where}.miou_ci[1]", nullable=False)
        if ci[0] > ci[1]:
            raise RecordError(f"{where}.miou_ci low {ci[0]} is above high {ci[1]}")
    _per_image(metrics.get("per_image"), f"{where}.per_image")
    _fraction(metrics.get("boundary_dilation_ratio"), f"{where}.boundary_dilation_ratio")
    _fraction(metrics.get("score_threshold"), f"{where}.score_threshold")
    coco = metrics.get("coco")
    if coco is not None and not isinstance(coco, dict):
        raise RecordError(f"{where}.coco must map COCO metric names to fractions or be null")
    for name, value in (coco or {}).items():
        _fraction(value, f"{where}.coco.{name}")
    max_dets = metrics.get("max_dets")
    if max_dets is not None and (not isinstance(max_dets, list) or not max_dets
                                 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in max_dets)):
        raise RecordError(f"{where}.max_dets must be a list of positive integers or null, got {max_dets!r}")


def _per_image(per_image: Any, where: str) -> None:
    if per_image is None:
        return
    if not isinstance(per_image, dict) or not {"intersection", "union"} <= set(per_image):
        raise RecordError(f"{where} must hold 'intersection' and 'union' (lists of per-class counts) or be null")
    inter, union = per_image["intersection"], per_image["union"]
    if not isinstance(inter, list) or not isinstance(union, list) or len(inter) != len(union):
        raise RecordError(f"{where}: intersection and union must be lists of the same length")
    for i, (a, b) in enumerate(zip(inter, union)):
        if not isinstance(a, list) or not isinstance(b, list) or len(a) != len(b):
            raise RecordError(f"{where}: image {i} has mismatched intersection/union rows")
        if any(not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= INT64_MAX for v in a + b) \
                or any(x > y for x, y in zip(a, b)):
            raise RecordError(f"{where}: image {i} needs integer counts in [0, 2^63) with intersection <= union")


# ---------------------------------------------------------------- the record

def validate_record(record: Any) -> None:
    """Raise RecordError naming the first missing, mistyped or out-of-range field of a schema-2 record
    (a schema-1 record is judged by its migration, as :func:`records.read_record` would read it)."""
    if not isinstance(record, dict):
        raise RecordError("record is not a JSON object")
    if record.get("schema") == 1:
        record = migrate(record)
    if record.get("schema") != SCHEMA_VERSION:
        raise RecordError(f"schema {record.get('schema')!r} is not {SCHEMA_VERSION}")
    for key, types in _TOP.items():
        if key not in record:
            raise RecordError(f"missing field '{key}'")
        if not isinstance(record[key], types) or isinstance(record[key], bool):
            raise RecordError(f"field '{key}' has type {type(record[key]).__name__}")
    if record["hardware_class"] not in HARDWARE_CLASSES:
        raise RecordError(f"hardware_class {record['hardware_class']!r} is not one of {', '.join(HARDWARE_CLASSES)}")
    if record["task"] not in ("semantic", "instance"):
        raise RecordError(f"task {record['task']!r} is not 'semantic' or 'instance'")
    _number(record["num_classes"], "num_classes", low=1, high=MAX_CLASSES, nullable=False)
    _identity(record)
    _metrics(record["metrics"], "metrics")
    _consistent(record["metrics"], "metrics", record["class_names"])
    if record["test_metrics"] is not None:
        _metrics(record["test_metrics"], "test_metrics")
        _consistent(record["test_metrics"], "test_metrics", record["class_names"])
    selection = record["selection"]
    if not isinstance(selection.get("checkpoint"), str):
        raise RecordError("missing field 'selection.checkpoint'")
    _number(selection.get("holdout_images"), "selection.holdout_images", low=1)
    _number(selection.get("holdout_seed"), "selection.holdout_seed")
    _number(selection.get("selected_epoch"), "selection.selected_epoch", low=0)
    if selection.get("recipe") is not None:
        _text(selection["recipe"], "selection.recipe")
    _efficiency(record["efficiency"])
    _training(record["training"])
    for key in ("sha256", "uri"):
        if not isinstance(record["weights"].get(key), str):
            raise RecordError(f"missing field 'weights.{key}'")
    _weights(record)
    _pretrained(record.get("pretrained"))


def _text(value: Any, where: str) -> None:
    if not isinstance(value, str) or len(value) > MAX_TEXT or _CONTROL.search(value):
        raise RecordError(f"{where} must be text of at most {MAX_TEXT} characters without control characters")


def _identity(record: dict[str, Any]) -> None:
    """Names that become paths (records/<dataset>/<model>--<id>.json, the store, packs, Hub repos) obey the
    config's name rule; the run hashes are hashes; shown text is short plain text."""
    for key in ("model", "dataset", "split", "family", "group"):
        if not valid_name(record[key]):
            raise RecordError(f"{key} {short_repr(record[key])} is not a valid name ({NAME_RULE})")
    if not _HASH12.fullmatch(record["id"]):
        raise RecordError(f"id {short_repr(record['id'])} must be 12 lowercase hex digits (the run's config hash)")
    _text(record["variant"], "variant")
    names = record["class_names"]
    if len(names) != record["num_classes"]:
        raise RecordError(f"class_names has {len(names)} names for num_classes {record['num_classes']}")
    for i, name in enumerate(names):
        _text(name, f"class_names[{i}]")
    if len(set(names)) != len(names):
        raise RecordError("class_names has duplicates")
    for where, value in (("hardware.device", record["hardware"].get("device")),
                         ("efficiency.latency.device", record["efficiency"].get("latency", {}).get("device")),
                         ("training.device", record["training"].get("device"))):
        if value is not None:
            _text(value, where)


def _consistent(metrics: dict[str, Any], where: str, class_names: list[str]) -> None:
    """The numbers agree with each other: per-class IoU is over the record's classes; mIoU is the mean of the
    present classes' IoU and lies inside its CI; the per-image counts give the per-class IoU."""
    iou = metrics.get("iou")
    if iou is None:
        return
    if set(iou) != set(class_names):
        raise RecordError(f"{where}.iou names other classes than class_names")
    present = [v for v in iou.values() if v is not None]
    miou = metrics.get("miou")
    if present and abs(sum(present) / len(present) - miou) > MEAN_TOLERANCE:
        raise RecordError(f"{where}.miou {miou!r} is not the mean of the present classes' IoU "
                          f"({sum(present) / len(present):.6f})")
    ci = metrics.get("miou_ci")
    if ci is not None and not ci[0] - MEAN_TOLERANCE <= miou <= ci[1] + MEAN_TOLERANCE:
        raise RecordError(f"{where}.miou {miou!r} lies outside its own 95% CI {ci!r}")
    per_image = metrics.get("per_image")
    if per_image is None:
        return
    rows_i, rows_u = per_image["intersection"], per_image["union"]
    if any(len(row) != len(class_names) for row in rows_i):
        raise RecordError(f"{where}.per_image rows must have one count per class ({len(class_names)})")
    for c, name in enumerate(class_names):
        inter, union = sum(row[c] for row in rows_i), sum(row[c] for row in rows_u)
        expected = inter / union if union else None
        if (expected is None) != (iou[name] is None) or (
                expected is not None and abs(expected - iou[name]) > MEAN_TOLERANCE):
            raise RecordError(f"{where}.per_image counts give IoU {expected!r} for class {short_repr(name)}, "
                              f"the record says {iou[name]!r}")


def _weights(record: dict[str, Any]) -> None:
    """The weights URI names this record's own run: in the local store or in a Hub model repo."""
    weights = record["weights"]
    own = f"local:{record['dataset']}/{record['model']}--{record['id']}"
    uri = weights["uri"]
    if uri != own and not (_HUB_URI.fullmatch(uri) and ".." not in uri and (
            "/runs/" not in uri or uri.endswith(f"/runs/{record['id']}"))):
        raise RecordError(f"weights.uri {short_repr(uri)} is neither this run's store URI ({own}) nor "
                          f"'hf://owner/name/runs/{record['id']}'")
    if not _HEX64.fullmatch(weights["sha256"]):
        raise RecordError("weights.sha256 must be 64 lowercase hex digits")


def _pretrained(pretrained: Any) -> None:
    """Optional ``pretrained``: null (random init) or ``{"source": str, "sha256": 64 hex}`` of the encoder's file."""
    if pretrained is None:
        return
    if not isinstance(pretrained, dict) or not isinstance(pretrained.get("source"), str) or not pretrained["source"]:
        raise RecordError("pretrained must be null or hold 'source' (where the weights come from) and 'sha256'")
    sha = pretrained.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise RecordError(f"pretrained.sha256 must be 64 lowercase hex digits, got {sha!r}")


def _sizes(value: Any, where: str) -> None:
    """A list of positive integers ([C, H, W], [H, W]) or null."""
    if value is not None and (not isinstance(value, list) or not value or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)):
        raise RecordError(f"{where} must be a list of positive integers or null, got {value!r}")


def _efficiency(efficiency: dict[str, Any]) -> None:
    _number(efficiency.get("params"), "efficiency.params", low=0, nullable=False)
    for key in ("gmacs", "gmacs_aux"):
        _number(efficiency.get(key), f"efficiency.{key}", low=0)
    for key in ("receptive_field", "output_stride"):
        _number(efficiency.get(key), f"efficiency.{key}", low=1)
    _sizes(efficiency.get("macs_input"), "efficiency.macs_input")
    latency = efficiency.get("latency")
    if not isinstance(latency, dict) or not isinstance(latency.get("device"), str):
        raise RecordError("efficiency.latency must hold 'device' and the timings")
    for key in ("forward_ms", "forward_ms_std", "end_to_end_ms", "end_to_end_ms_std", "mean_detections"):
        _number(latency.get(key), f"efficiency.latency.{key}", low=0)
    _number(latency.get("batch_size"), "efficiency.latency.batch_size", low=1)
    _sizes(latency.get("image_size"), "efficiency.latency.image_size")


def _training(training: dict[str, Any]) -> None:
    for key in ("seconds", "device"):
        if key not in training:
            raise RecordError(f"missing field 'training.{key}'")
    for key in ("seconds", "images_per_s", "epochs", "steps", "max_train_seconds"):
        _number(training.get(key), f"training.{key}", low=0, nullable=key != "seconds")
    labelled = training.get("labelled_images")
    if labelled is not None and (isinstance(labelled, bool) or not isinstance(labelled, int) or labelled < 1):
        raise RecordError(f"training.labelled_images must be a positive integer or absent, got {labelled!r}")
    subset = training.get("labelled_subset")
    if subset is not None:
        if not isinstance(subset, dict):
            raise RecordError("training.labelled_subset must hold 'fraction' and 'seed' or be null")
        _number(subset.get("fraction"), "training.labelled_subset.fraction", low=0.0, high=1.0, nullable=False)
    if not isinstance(training.get("capped"), bool):
        raise RecordError("training.capped must be true or false")
    if training.get("track") not in ("steps", "time"):
        raise RecordError(f"training.track must be 'steps' or 'time', got {training.get('track')!r}")
    if training.get("memory_format", "contiguous") not in ("channels_last", "contiguous"):
        raise RecordError("training.memory_format must be 'channels_last' or 'contiguous' or absent, got "
                          f"{training.get('memory_format')!r}")
    budget = training.get("budget")
    if budget is not None and not isinstance(budget, dict):
        raise RecordError("training.budget must be {epochs, steps} or null")
    for key, value in (budget or {}).items():
        _number(value, f"training.budget.{key}", low=0)
    history = training.get("history")
    if history is not None and not isinstance(history, list):
        raise RecordError("training.history must be a list of per-epoch entries")
    for i, entry in enumerate(history or []):
        if not isinstance(entry, dict):
            raise RecordError(f"training.history[{i}] must be an object")
        # every logged value is a loss, learning rate, rate, time, count or score: finite and >= 0
        for key, value in entry.items():
            if not isinstance(value, str):
                _number(value, f"training.history[{i}].{key}", low=0)


# ---------------------------------------------------------------- schema 1 -> 2

def hardware_class_of(device_name: str) -> str | None:
    """"cpu" / "cuda" from a recorded device name ("AMD EPYC ... (2 cores)", "NVIDIA H200"); None if unclear."""
    text = device_name.lower()
    if any(word in text for word in ("nvidia", "cuda", "geforce", "tesla", "quadro", "rtx", "radeon", "gpu")):
        return "cuda"
    if "cores)" in text or text == "cpu" or any(w in text for w in ("intel", "amd ", "epyc", "xeon", "arm", "apple")):
        return "cpu"
    return None


def migrate(record: dict[str, Any]) -> dict[str, Any]:
    """A schema-2 copy of a schema-1 record (rules in the module docstring); RecordError if it cannot be."""
    try:
        return _migrate(record)
    except (KeyError, TypeError, AttributeError) as exc:
        raise RecordError(f"schema-1 record cannot be migrated: field {exc} missing or mistyped") from None


def _migrate(old: dict[str, Any]) -> dict[str, Any]:
    record = json.loads(json.dumps(old))  # a deep copy of plain JSON values
    training, efficiency, config = record["training"], record["efficiency"], record["config"]
    device = str(training.get("device") or efficiency["latency"].get("device") or "")
    hardware = hardware_class_of(device)
    if hardware is None:
        raise RecordError(f"schema-1 record: cannot tell the hardware class of device {device!r}; rerun it")
    gflops, latency = efficiency.get("gflops"), efficiency["latency"]
    efficiency.update(
        gmacs=None if gflops is None else gflops / 2, gmacs_aux=None, macs_convention=MACS_CONVENTION,
        macs_input=efficiency.get("flops_input"))
    latency.update(forward_ms=latency.get("ms"), forward_ms_std=latency.get("ms_std"), end_to_end_ms=None,
                   end_to_end_ms_std=None, forward_scope=FORWARD_SCOPE, end_to_end_scope=END_TO_END_SCOPE,
                   inputs="random", mean_detections=None)
    cap = config.get("max_train_seconds")
    training.update(capped=bool(training.get("stopped_early", False)), track="time" if cap else "steps",
                    max_train_seconds=cap, steps=None, budget={"epochs": config.get("epochs"), "steps": None},
                    world_size=1, loader=training.get("loader", "host"))
    instance = record["task"] == "instance"
    record["metrics"].update(miou_ci=None, ci=None, per_image=None, boundary_iou=None, mean_boundary_iou=None,
                             boundary_dilation_ratio=None, max_dets=[1, 10, 100] if instance else None)
    group_payload = {k: v for k, v in config.items() if k != "seed"} | {"hardware": hardware, "name": record["model"]}
    record.update(
        schema=SCHEMA_VERSION, migrated_from=1, hardware_class=hardware, test_metrics=None,
        group=hashlib.sha256(json.dumps(group_payload, sort_keys=True, default=str).encode()).hexdigest()[:12],
        selection={"checkpoint": "best-val (schema 1)", "holdout_images": None, "holdout_seed": None,
                   "selected_epoch": training.get("best_epoch", training.get("epochs"))})
    return record


def upgrade(record: Any) -> Any:
    """A schema-1 record migrated to schema 2; anything else unchanged (validation judges it)."""
    if isinstance(record, dict) and record.get("schema") == 1:
        return migrate(record)
    return record
