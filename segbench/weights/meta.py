"""The weights' metadata: ``model.json`` beside ``model.safetensors``, as one typed, validated object.

:class:`WeightsMeta` holds what rebuilds the model (``model``, ``model_args``, ``num_classes``) and what evaluates
it as its run did (input statistics, eval size and tile, whole/slide evaluation, precision; instance models:
score threshold, label -> class map, fill class, COCO ``max_dets``), plus the run's ``training`` and ``selection``
entries. Its defaults (the values weights saved before a key existed are read with) live here and nowhere else.

model.json is untrusted input (Hub pulls, the demo pack, submissions): :meth:`WeightsMeta.from_dict` checks every
key's type and range and refuses unknown keys, with a one-line :class:`SegbenchError` naming the file and the fix.
:meth:`WeightsMeta.to_dict` gives the JSON a run writes, key for key in the order it always had.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config.rules import MAX_PIXELS, MAX_TEXT, check_options
from ..errors import SegbenchError, nearest, short_repr

MAX_CLASSES = 65536  # num_classes, semantic_classes, class names, palette rows, label -> class entries
MAX_CHANNELS = 1024  # in_channels; mean and std hold one number per channel
FIX = "retrain, or pull or download the weights again"


@dataclass(frozen=True, kw_only=True)
class WeightsMeta:
    # --- rebuild the model ---
    model: str = ""  # builder name from `segbench models` ("" for a model only held in memory: speed.predict_meta)
    model_args: dict[str, Any] = field(default_factory=dict)  # builder options, in_channels included
    num_classes: int  # model outputs (instance models: detector labels, background included)
    in_channels: int = 3
    # --- the data it was trained on ---
    class_names: tuple[str, ...] = ()
    semantic_classes: int | None = None  # classes of the semantic class map (None in the file: num_classes)
    mean: tuple[float, ...]  # input normalisation per channel, on [0, 1] pixel values
    std: tuple[float, ...]
    ignore_index: int = 255  # label value left out of the metrics
    dataset: str | None = None
    palette: tuple[tuple[int, int, int], ...] = ()  # RGB per class
    # --- how it is evaluated ---
    eval_size: tuple[int, int] | None = None  # [H, W] resize before the model (None: native size)
    eval_tile: int | None = None  # overlap-tile output size of valid-padded U-Nets (None: one tile)
    evaluation: dict[str, Any] | None = None  # models.inference.Evaluation.to_dict (None: saved before it: whole)
    amp: bool = True  # bf16 autocast on CUDA
    channels_last: bool = True
    task: str = "semantic"  # semantic | instance
    name: str | None = None  # the leaderboard name (None: model)
    score_threshold: float = 0.5  # instance models: detections kept for the class map
    max_dets: tuple[int, ...] | None = None  # instance models: COCO maxDets (None: 1, 10, 100)
    label_to_class: tuple[int, ...] | None = None  # instance models: detector label -> semantic class
    fill: int | None = None  # instance models: class of pixels no detection covers (None: 0)
    label_names: tuple[str, ...] | None = None  # instance models: detector label names
    # --- provenance ---
    license: str | None = None
    run_id: str | None = None
    group: str | None = None
    hardware_class: str | None = None  # cpu | cuda
    training: dict[str, Any] | None = None  # the record's training entry (written once the run trained)
    selection: dict[str, Any] | None = None  # the record's selection entry

    def __post_init__(self) -> None:
        if self.semantic_classes is None:
            object.__setattr__(self, "semantic_classes", self.num_classes)

    @property
    def display_name(self) -> str:
        return self.name or self.model

    @classmethod
    def from_dict(cls, data: object, *, source: str | Path = "model.json") -> WeightsMeta:
        """A checked WeightsMeta from model.json's parsed JSON; ``source`` names the file in errors. Missing
        optional keys take the defaults above (older weights); ``model``, ``num_classes``, ``mean`` and ``std``
        are required."""
        if not isinstance(data, Mapping):
            raise SegbenchError(f"{source}: weights config is not a JSON object; {FIX}")
        for key in data:
            if key not in _RULES:
                raise SegbenchError(f"{source}: unknown key {short_repr(key)}{nearest(str(key), _RULES)} in the "
                                    f"weights config; {FIX}")
        missing = [key for key in REQUIRED if key not in data]
        if missing:
            raise SegbenchError(f"{source}: weights config lacks {', '.join(missing)}; {FIX}")
        values = {}
        for key, value in data.items():
            check, valid = _RULES[key]
            if value is None and key not in NULLABLE:
                raise SegbenchError(f"{source}: {key}=None is invalid; valid: {valid}; {FIX}")
            try:
                values[key] = None if value is None else check(value)
            except (TypeError, ValueError, OverflowError, SegbenchError) as exc:
                detail = f" ({exc})" if str(exc) and not isinstance(exc, SegbenchError) else ""
                raise SegbenchError(f"{source}: {key}={short_repr(value)} is invalid{detail}; valid: {valid}; "
                                    f"{FIX}") from None
        meta = cls(**values)
        for key in ("mean", "std"):
            if len(getattr(meta, key)) != meta.in_channels:
                raise SegbenchError(f"{source}: {key} has {len(getattr(meta, key))} values for in_channels="
                                    f"{meta.in_channels}; {FIX}")
        return meta

    def to_dict(self) -> dict[str, Any]:
        """The JSON of model.json: every key in field order, sequences as lists; ``training`` and ``selection``
        only once set."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("training", "selection") and value is None:
                continue
            out[f.name] = _plain(value)
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------- one rule per key

def _int(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError("")
        return value
    return check


def _number(low: float, high: float, *, open_low: bool = False) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError("")
        if value < low or value > high or (open_low and value == low):
            raise ValueError("")
        return value
    return check


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("")
    return value


def _list(item: Callable[[Any], Any], *, low: int = 0, high: int = MAX_CLASSES) -> Callable[[Any], tuple]:
    def check(value: Any) -> tuple:
        if not isinstance(value, list) or not low <= len(value) <= high:
            raise ValueError("")
        return tuple(item(v) for v in value)
    return check


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError("")
        return value
    return check


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value) or len(value) > 64:
        raise ValueError("")
    return value


def _evaluation(value: Any) -> dict[str, Any]:
    from ..models.inference import evaluation_from  # torch: only when a file holds the key

    evaluation_from(_mapping(value))
    return value


def _section(value: Any) -> dict[str, Any]:  # training / selection: the record's own entries, shown, never run
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError("")
    return value


_PIXELS = _int(1, MAX_PIXELS)
_BYTE = _int(0, 255)
_CLASS = _int(0, MAX_CLASSES)
_NAME = "a string of at most 4096 characters, one line"
# key: (check, what is valid). A check returns the value (sequences as tuples) or raises.
_RULES: dict[str, tuple[Callable[[Any], Any], str]] = {
    "model": (_text, _NAME),
    "model_args": (check_options, "a mapping of builder option: value"),
    "num_classes": (_int(1, MAX_CLASSES), f"an integer in [1, {MAX_CLASSES}]"),
    "in_channels": (_int(1, MAX_CHANNELS), f"an integer in [1, {MAX_CHANNELS}]"),
    "class_names": (_list(_text), f"a list of at most {MAX_CLASSES} names"),
    "semantic_classes": (_int(1, MAX_CLASSES), f"an integer in [1, {MAX_CLASSES}]"),
    "mean": (_list(_number(-1e6, 1e6), low=1, high=MAX_CHANNELS), "a list of numbers, one per input channel"),
    "std": (_list(_number(0, 1e6, open_low=True), low=1, high=MAX_CHANNELS),
            "a list of numbers > 0, one per input channel"),
    "ignore_index": (_int(-MAX_CLASSES, MAX_CLASSES), "an integer"),
    "dataset": (_text, _NAME),
    "palette": (_list(_list(_BYTE, low=3, high=3)), "a list of [R, G, B] rows of integers in [0, 255]"),
    "eval_size": (_list(_PIXELS, low=2, high=2), f"[H, W], two integers in [1, {MAX_PIXELS}], or null"),
    "eval_tile": (_PIXELS, f"an integer in [1, {MAX_PIXELS}], or null"),
    "evaluation": (_evaluation, "an evaluation entry {mode, crop, stride, scales, flip}, or null"),
    "amp": (_bool, "true or false"),
    "channels_last": (_bool, "true or false"),
    "task": (_choice("semantic", "instance"), "semantic or instance"),
    "name": (_text, _NAME + ", or null"),
    "score_threshold": (_number(0, 1), "a number in [0, 1]"),
    "max_dets": (_list(_int(1, 100000), low=1, high=8), "a list of 1-8 positive integers, or null"),
    "label_to_class": (_list(_CLASS), "a list of class indices, or null"),
    "fill": (_CLASS, "a class index, or null"),
    "label_names": (_list(_text), "a list of names, or null"),
    "license": (_text, _NAME + ", or null"),
    "run_id": (_text, _NAME + ", or null"),
    "group": (_text, _NAME + ", or null"),
    "hardware_class": (_text, _NAME + ", or null"),
    "training": (_section, "a mapping (the record's training entry), or null"),
    "selection": (_section, "a mapping (the record's selection entry), or null"),
}
REQUIRED = ("model", "num_classes", "mean", "std")
NULLABLE = frozenset({"semantic_classes", "dataset", "eval_size", "eval_tile", "evaluation", "name", "max_dets",
                      "label_to_class", "fill", "label_names", "license", "run_id", "group", "hardware_class",
                      "training", "selection"})
