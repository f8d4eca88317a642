"""The type and valid range of every config key, checked before any work starts.

One table, :data:`RULES`, one row per ``RunConfig`` key (a test checks that no key is missing). A bad value is
reported on one line naming the key, the value and the valid range, e.g.
``tiny.yaml: crop_size='abc' is invalid; valid: an integer in [1, 16384], or null``. Sizes are bounded too:
``model_args``/``dataset_args`` hold scalars or short flat lists/mappings of scalars, never a deep structure.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ..errors import NAME_RULE, SegbenchError, check_name, short_repr

MAX_PIXELS = 16384  # crop, eval size, tile: one side in pixels
MAX_ITEMS = 1024  # class_weights, one option's list or mapping
MAX_TEXT = 4096  # one string (paths included)
RECORD_TEXT = 200  # free text copied into a record (records.schema.MAX_TEXT)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
MAX_SCALES = 16  # test-time scales


@dataclass(frozen=True)
class Rule:
    """``kind``: int | float | bool | str | text | choice | name | size | weights | options | device.
    ``low``/``high``: the range, closed unless ``open_low``/``open_high``; ``null``: None allowed."""

    kind: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    null: bool = False
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        text = {
            "int": "an integer", "float": "a finite number", "bool": "true or false", "str": "a string",
            "text": f"one line of at most {RECORD_TEXT} characters",
            "choice": "one of " + ", ".join(self.choices), "name": NAME_RULE,
            "size": f"[H, W], two integers in [1, {MAX_PIXELS}]",
            "weights": f"'auto' or a list of 1-{MAX_ITEMS} numbers >= 0 (one per class)",
            "options": "a mapping of option: value, e.g. {depth: 3} (values: numbers, strings, booleans, "
                       f"or flat lists/mappings of at most {MAX_ITEMS} of them)",
            "device": "auto, cpu, cuda or cuda:N",
            "scales": f"a list of 1-{MAX_SCALES} numbers",
        }[self.kind]
        if self.low is not None and self.high is not None:
            text += f" in {'(' if self.open_low else '['}{_num(self.low)}, {_num(self.high)}{')' if self.open_high else ']'}"
        elif self.low is not None:
            text += f" {'>' if self.open_low else '>='} {_num(self.low)}"
        return text + (", or null" if self.null else "")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


R = Rule
RULES: dict[str, Rule] = {
    # --- what ---
    "model": R("str"),  # then looked up in MODELS (check_config)
    "model_args": R("options"),
    "dataset": R("name"),  # then looked up in DATASETS; it is also a folder name in the store and leaderboard
    "dataset_args": R("options"),
    "data_root": R("str", null=True),  # then: an existing folder (check_names_and_paths)
    "train_split": R("name"),
    "eval_split": R("name"),
    "name": R("name", null=True),
    # --- data pipeline ---
    "crop_size": R("int", 1, MAX_PIXELS, null=True),
    "scale_min": R("float", 0, 16, open_low=True),
    "scale_max": R("float", 0, 16, open_low=True),
    "hflip": R("bool"),
    "color_jitter": R("float", 0, 1),
    "eval_size": R("size", null=True),
    "eval_tile": R("int", 1, MAX_PIXELS, null=True),
    "num_workers": R("int", 0, 256),
    "loader": R("choice", choices=("auto", "host", "device")),
    "limit_images": R("int", 1, None, null=True),
    # --- optimisation ---
    "epochs": R("int", 1, 1_000_000),
    "batch_size": R("int", 1, 65536),
    "optimizer": R("choice", choices=("adamw", "sgd")),
    "lr": R("float", 0, 10, open_low=True),
    "momentum": R("float", 0, 1),
    "weight_decay": R("float", 0, 10),
    "schedule": R("choice", choices=("poly", "cosine", "constant")),
    "warmup_epochs": R("float", 0, 1_000_000),
    "grad_clip": R("float", 0, 1e9, open_low=True, null=True),
    "loss": R("choice", choices=("ce", "dice", "ce+dice")),
    "class_weights": R("weights", null=True),
    "border_weight": R("bool"),
    "w0": R("float", 0, 1e6),
    "sigma": R("float", 0, 1e6, open_low=True),
    "aux_weight": R("float", 0, 100),
    "track": R("choice", choices=("steps", "time")),
    "max_train_seconds": R("float", 0, 1e9, open_low=True, null=True),
    # --- checkpoint selection ---
    "recipe": R("text", null=True),
    "select_on": R("choice", choices=("final", "holdout")),
    "holdout_fraction": R("float", 0, 1, open_low=True, open_high=True, null=True),
    "holdout_images": R("int", 1, None, null=True),
    "holdout_seed": R("int", 0, 2**32 - 1),
    # --- evaluation and running ---
    "eval_every": R("int", 1, 1_000_000),
    "score_threshold": R("float", 0, 1),
    "seed": R("int", 0, 2**32 - 1),
    "device": R("device"),
    "amp": R("bool"),
    "channels_last": R("bool"),
    "compile": R("bool"),
    "latency_runs": R("int", 1, 100_000),
    # --- pretrained encoders and label efficiency (checked further in check_subset_and_lr)
    "train_fraction": R("float", 0, 1, open_low=True, null=True),
    "train_fraction_seed": R("int", 0, 2**32 - 1),
    "encoder_lr_mult": R("float", 0, 1e6, open_low=True),
    # --- evaluation modes (sliding window, test-time augmentation; checked together in config.check_evaluation)
    "eval_mode": R("choice", choices=("whole", "slide")),
    "eval_crop": R("size", null=True),
    "eval_stride": R("size", null=True),
    "eval_scales": R("scales", 0, 16, open_low=True, null=True),
    "eval_flip": R("bool"),
    # --- distributed (torchrun): SyncBatchNorm; null = on for GPUs with a per-GPU batch below 8
    "sync_bn": R("bool", null=True),
}
del R


def check_value(key: str, value: Any, source: str) -> Any:
    """``value`` for config key ``key``, type-checked and range-checked (an int for a non-null float key becomes a
    float); otherwise a one-line SegbenchError naming ``source``, the key, the value and the valid range."""
    rule = RULES[key]
    try:
        return _check(rule, value)
    except _Invalid as exc:
        detail = f" ({exc})" if str(exc) else ""
        raise SegbenchError(f"{source}: {key}={short_repr(value)} is invalid{detail}; valid: {rule.describe()}") from None


class _Invalid(ValueError):
    """A value outside its rule; the message (optional) says which part, e.g. an option's name."""


def _check(rule: Rule, value: Any) -> Any:
    if value is None:
        if rule.null:
            return None
        raise _Invalid("empty")
    kind = rule.kind
    if kind in ("int", "float"):
        return _number(rule, value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise _Invalid()
        return value
    if kind == "choice":
        if value not in rule.choices:
            raise _Invalid()
        return value
    if kind == "str":
        if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
            raise _Invalid()
        return value
    if kind == "text":  # shown in records and the app: the record's own text limit, checked before training
        if not isinstance(value, str) or not value.strip() or len(value) > RECORD_TEXT or _CONTROL.search(value):
            raise _Invalid()
        return " ".join(value.split())
    if kind == "name":
        try:
            return check_name("name", value)
        except SegbenchError:
            raise _Invalid() from None
    if kind == "size":
        if not isinstance(value, list) or len(value) != 2 or not all(_is_int(v) and 1 <= v <= MAX_PIXELS for v in value):
            raise _Invalid()
        return [int(v) for v in value]
    if kind == "weights":
        return _class_weights(value)
    if kind == "scales":
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_SCALES:
            raise _Invalid()
        return [_number(Rule("float", rule.low, rule.high, open_low=rule.open_low), v) for v in value]
    if kind == "options":
        return check_options(value)
    return _device(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(rule: Rule, value: Any) -> int | float:
    if rule.kind == "int" and not _is_int(value):
        raise _Invalid()
    if rule.kind == "float":
        if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value):
            raise _Invalid()
        if not rule.null:
            # Nullable keys keep an int as given, as they always have: the value is hashed into the run id, and
            # `max_train_seconds: 600` must keep naming the same records and weights.
            value = float(value)
    low_ok = rule.low is None or (value > rule.low if rule.open_low else value >= rule.low)
    high_ok = rule.high is None or (value < rule.high if rule.open_high else value <= rule.high)
    if not low_ok or not high_ok:
        raise _Invalid()
    return value


def _class_weights(value: Any) -> str | list[float]:
    if value == "auto":
        return value
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_ITEMS:
        raise _Invalid()
    if not all((_is_int(v) or isinstance(v, float)) and math.isfinite(v) and v >= 0 for v in value):
        raise _Invalid()
    if not any(value):
        raise _Invalid("all zero")
    return value  # as given (ints stay ints): the list is hashed into the run id


def _scalar(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= MAX_TEXT
    return value is None or isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value))


def check_options(value: Any) -> dict[str, Any]:
    """A ``model_args``/``dataset_args`` mapping: string keys; each value a scalar or a flat list/mapping of at
    most MAX_ITEMS scalars (nothing deeper: no option needs it, and it bounds what a config can carry)."""
    if not isinstance(value, dict):
        raise _Invalid()
    if len(value) > MAX_ITEMS:
        raise _Invalid(f"{len(value)} options")
    for key, item in value.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise _Invalid(f"option name {short_repr(key)}")
        if _scalar(item):
            continue
        members = list(item.items()) if isinstance(item, dict) else item if isinstance(item, list) else None
        flat = members is not None and len(members) <= MAX_ITEMS and all(
            _scalar(m) if not isinstance(m, tuple) else _scalar(m[0]) and _scalar(m[1]) for m in members)
        if not flat:
            raise _Invalid(f"option '{key}'")
    return value


def _device(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|cuda(:[0-9]{1,3})?", value):
        raise _Invalid()
    return value
