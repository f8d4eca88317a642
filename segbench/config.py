"""Flat run configs: a dataclass of explicit fields, read from YAML plus ``key=value`` overrides.

One config = one (model, dataset) pair. A suite YAML holds ``runs:`` (a list of such configs) and may hold
``common:`` (fields shared by every run; a run's own keys win). Unknown keys are errors with the nearest
valid key suggested. ``model_args`` / ``dataset_args`` are checked against the builder's own options.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import SegbenchError, nearest


@dataclass
class RunConfig:
    # --- what ---
    model: str = "unet_small"  # a name from `segbench models`
    model_args: dict[str, Any] = field(default_factory=dict)  # builder options, e.g. {base_channels: 16}
    dataset: str = "synthetic"  # synthetic | isbi2012 | camvid | folder | balloon | coco | ...
    dataset_args: dict[str, Any] = field(default_factory=dict)  # dataset constructor options
    data_root: str | None = None  # folder of a real dataset (default: $SEGBENCH_DATA or ../shared/data/<name>)
    train_split: str = "train"
    eval_split: str = "val"
    name: str | None = None  # record/model name shown in the leaderboard (default: model)
    # --- data pipeline (uint8 until the device) ---
    crop_size: int | None = None  # random training crop in pixels (None: whole image)
    scale_min: float = 1.0  # random rescale range for training
    scale_max: float = 1.0
    hflip: bool = True
    color_jitter: float = 0.0  # brightness/contrast/saturation strength, 0 = off
    eval_size: list[int] | None = None  # [H, W] resize for evaluation (None: native size)
    eval_tile: int | None = None  # overlap-tile output size for valid-padded U-Nets (None: one tile)
    num_workers: int = 0
    loader: str = "auto"  # training batches: host (DataLoader) | device (split held on the device) | auto (device on a GPU)
    limit_images: int | None = None  # use only the first N images of each split (smoke tests)
    # --- optimisation ---
    epochs: int = 10
    batch_size: int = 8
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3  # peak learning rate, per batch (not scaled by batch size)
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-4
    schedule: str = "poly"  # poly (power 0.9, DeepLab) | cosine | constant
    warmup_epochs: float = 0.0  # linear warm-up length in epochs
    grad_clip: float | None = None  # max gradient L2 norm, None = off
    loss: str = "ce"  # ce | dice | ce+dice (semantic models)
    class_weights: Any = None  # None | "auto" (median frequency) | list of K floats
    border_weight: bool = False  # U-Net paper eq. 2 weight map (touching objects)
    w0: float = 10.0  # border weight amplitude (paper: 10)
    sigma: float = 5.0  # border weight width in pixels (paper: about 5)
    aux_weight: float = 0.4  # weight of an auxiliary head's loss, when the model has one
    track: str = "steps"  # steps: the budget is `epochs` | time: the separately labelled speed-run track
    max_train_seconds: float | None = None  # steps track: a safety stop (the record says capped); time track: the budget
    # --- checkpoint selection ---
    select_on: str = "final"  # final: the last epoch's weights | holdout: best mIoU on a slice carved out of train
    holdout_fraction: float | None = None  # select_on=holdout: share of train images held out (default 0.1)
    holdout_images: int | None = None  # select_on=holdout: or this many images (wins over holdout_fraction)
    holdout_seed: int = 0  # which images form the holdout slice (fixed, independent of `seed`)
    # --- evaluation and running ---
    eval_every: int = 1  # evaluate every N epochs (and always after the last)
    score_threshold: float = 0.5  # instance models: detections kept when scoring PA/mPA/mIoU
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA (losses and metrics stay fp32)
    channels_last: bool = True  # on CUDA
    compile: bool = False  # torch.compile the model
    sync_bn: bool | None = None  # under torchrun on GPUs: SyncBatchNorm (None: on when the per-GPU batch is below 8)
    latency_runs: int = 10  # timed forward passes for the latency column

    def display_name(self) -> str:
        return self.name or self.model

    def hardware_class(self) -> str:
        """"cuda" or "cpu": the kind of device ``device`` resolves to on this machine (no device is opened)."""
        if self.device == "auto":
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        return "cuda" if self.device.startswith("cuda") else self.device.split(":")[0]

    def resolved_loader(self) -> str:
        """"device" or "host": ``auto`` holds a semantic training split on a GPU (instance models: always host)."""
        if self.loader != "auto":
            return self.loader
        from .models import model_task

        return "device" if self.hardware_class() == "cuda" and model_task(self.model) == "semantic" else "host"

    def group_id(self) -> str:
        """12 hex digits: like :meth:`run_id` without the seed, shared by the runs of one config across seeds."""
        return self._hash(with_seed=False)

    def run_id(self) -> str:
        """12 hex digits identifying everything that changes the trained weights or the scores: the config, the
        name, the hardware class and the loader (bf16 kernels and the device-side augmentation differ)."""
        return self._hash(with_seed=True)

    def _hash(self, *, with_seed: bool) -> str:
        ignored = {"num_workers", "latency_runs"}  # same weights, same scores
        payload = {k: v for k, v in dataclasses.asdict(self).items() if k not in ignored}
        payload.update(device=self.hardware_class(), loader=self.resolved_loader())
        if not with_seed:
            del payload["seed"]
        blob = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_CHOICES = {
    "optimizer": ("adamw", "sgd"),
    "schedule": ("poly", "cosine", "constant"),
    "loss": ("ce", "dice", "ce+dice"),
    "loader": ("auto", "host", "device"),
    "track": ("steps", "time"),
    "select_on": ("final", "holdout"),
    "sync_bn": (None, True, False),
}


def _check_keys(data: dict[str, Any], source: str) -> None:
    for key in data:
        if key not in FIELDS:
            raise SegbenchError(f"{source}: unknown config key '{key}'{nearest(key, FIELDS)}")


def _coerce(key: str, value: Any, source: str) -> Any:
    """Light type checks so a typo like epochs=ten fails here, not mid-training."""
    f = FIELDS[key]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    if key in _CHOICES and value not in _CHOICES[key]:
        raise SegbenchError(f"{source}: {key}={value!r} is not one of {', '.join(map(str, _CHOICES[key]))}")
    if value is None:
        return None
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SegbenchError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SegbenchError(f"{source}: {key} must be an integer, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SegbenchError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, dict) and not isinstance(value, dict):
        raise SegbenchError(f"{source}: {key} must be a mapping like {{a: 1}}, got {value!r}")
    if key in ("epochs", "batch_size") and value < 1:
        raise SegbenchError(f"{source}: {key} must be at least 1, got {value}")
    return value


def make_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    """A RunConfig from a mapping; unknown keys and wrong types raise SegbenchError naming ``source``."""
    _check_keys(data, source)
    values = {k: _coerce(k, v, source) for k, v in data.items()}
    cfg = RunConfig(**values)
    check_config(cfg, source)
    return cfg


def check_config(cfg: RunConfig, source: str = "config") -> None:
    """Validate model/dataset names and their options before anything heavy happens."""
    from .data import DATASETS
    from .models import check_model_args, get_builder

    try:
        get_builder(cfg.model)
        check_model_args(cfg.model, cfg.model_args)
    except SegbenchError as exc:
        raise SegbenchError(f"{source}: {exc}") from None
    if cfg.dataset not in DATASETS:
        raise SegbenchError(
            f"{source}: unknown dataset '{cfg.dataset}'{nearest(cfg.dataset, DATASETS)}; valid: {', '.join(sorted(DATASETS))}"
        )
    options = dataset_options(cfg.dataset)
    for key in cfg.dataset_args:
        if key not in options:
            raise SegbenchError(f"{source}: dataset '{cfg.dataset}' has no option '{key}'{nearest(key, options)}")
    if cfg.scale_min <= 0 or cfg.scale_max < cfg.scale_min:
        raise SegbenchError(f"{source}: need 0 < scale_min <= scale_max, got {cfg.scale_min}, {cfg.scale_max}")
    check_budget(cfg, source)


def check_budget(cfg: RunConfig, source: str) -> None:
    """The training budget and the checkpoint selection: consistent before any work starts."""
    if cfg.max_train_seconds is not None and cfg.max_train_seconds <= 0:
        raise SegbenchError(f"{source}: max_train_seconds must be positive or null, got {cfg.max_train_seconds}")
    if cfg.track == "time" and cfg.max_train_seconds is None:
        raise SegbenchError(f"{source}: track=time needs max_train_seconds (the wall-time budget); or use track=steps")
    holdout = cfg.holdout_fraction is not None or cfg.holdout_images is not None
    if cfg.select_on == "final" and holdout:
        raise SegbenchError(f"{source}: holdout_fraction/holdout_images need select_on=holdout")
    if cfg.holdout_fraction is not None and not 0.0 < cfg.holdout_fraction < 1.0:
        raise SegbenchError(f"{source}: holdout_fraction must be in (0, 1), got {cfg.holdout_fraction}")
    if cfg.holdout_images is not None and cfg.holdout_images < 1:
        raise SegbenchError(f"{source}: holdout_images must be at least 1, got {cfg.holdout_images}")


def dataset_options(name: str) -> list[str]:
    """The keyword options of dataset ``name`` beyond split/root/task/transform."""
    import inspect

    from .data import DATASETS

    return [
        p.name for p in inspect.signature(DATASETS[name]).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("split", "root", "task", "transform")
    ]


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` (value parsed as YAML: 3, 0.1, true, [1, 2]); ``model_args.depth=3`` sets one option."""
    if "=" not in text:
        raise SegbenchError(f"override '{text}' must look like key=value, e.g. epochs=5 or model_args.base_channels=8")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value != "" else None
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = dict(data)
    for text in overrides:
        key, value = parse_override(text)
        if "." in key:
            head, sub = key.split(".", 1)
            if head not in ("model_args", "dataset_args"):
                raise SegbenchError(f"override '{text}': only model_args.X and dataset_args.X take a dot")
            data[head] = {**(data.get(head) or {}), sub: value}
        else:
            if key not in FIELDS:
                raise SegbenchError(f"override '{text}': unknown config key '{key}'{nearest(key, FIELDS)}")
            data[key] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SegbenchError(f"{path}: config file not found; give a YAML path or a suite name from segbench/suites/")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SegbenchError(f"{path}: invalid YAML{where}; fix the syntax") from None
    if not isinstance(data, dict):
        raise SegbenchError(f"{path}: expected a mapping of config keys at the top level")
    return data


SUITES_DIR = Path(__file__).parent / "suites"


def suite_path(name_or_path: str) -> Path:
    """A suite name (``default``, ``gpu-camvid``...) or a YAML path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    candidate = SUITES_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        names = sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))
        raise SegbenchError(f"unknown suite '{name_or_path}'{nearest(name_or_path, names)}; suites: {', '.join(names)}")
    return candidate


def load_suite(name_or_path: str, overrides: list[str] | None = None) -> list[RunConfig]:
    """The runs of a suite, each with ``common`` fields and then ``overrides`` applied."""
    path = suite_path(name_or_path)
    data = read_yaml(path)
    unknown = set(data) - {"runs", "common", "description"}
    if unknown:
        key = sorted(unknown)[0]
        raise SegbenchError(f"{path}: unknown suite key '{key}'{nearest(key, ['runs', 'common', 'description'])}")
    runs = data.get("runs")
    if not isinstance(runs, list) or not runs:
        raise SegbenchError(f"{path}: a suite needs a non-empty 'runs:' list")
    common = data.get("common") or {}
    configs = []
    for i, run in enumerate(runs):
        merged = {**common, **(run or {})}
        merged = apply_overrides(merged, overrides or [])
        configs.append(make_config(merged, f"{path} (run {i + 1})"))
    return configs


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """One run from a YAML file of RunConfig keys."""
    data = read_yaml(path)
    if "runs" in data:
        raise SegbenchError(f"{path}: this is a suite (it has 'runs:'); run it with 'python -m segbench run {path}'")
    data = apply_overrides(data, overrides or [])
    return make_config(data, str(path))
