"""Flat run configs: a dataclass of explicit fields, read from YAML plus ``key=value`` overrides.

Every value is checked before any work starts: its type and range (one row per key in
:data:`segbench.config.rules.RULES`), names used as folder names, paths, model options. YAML is read with a
bounded loader (:mod:`segbench.config.safe_yaml`: no alias bombs, ``1e-4`` is a float).

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
from typing import TYPE_CHECKING, Any

from ..errors import SegbenchError, nearest, short_repr
from . import safe_yaml
from .rules import check_value

# One model/dataset option: a scalar or a flat list/mapping of scalars, at most 1024 (config.rules.check_options).
Scalar = str | int | float | bool | None
Option = Scalar | list[Scalar] | dict[Scalar, Scalar]

if TYPE_CHECKING:
    from ..models.inference import Evaluation


@dataclass
class RunConfig:
    # --- what ---
    model: str = "unet_small"  # a name from `segbench models`
    model_args: dict[str, Option] = field(default_factory=dict)  # builder options, e.g. {base_channels: 16}
    dataset: str = "synthetic"  # synthetic | isbi2012 | camvid | folder | balloon | coco | ...
    dataset_args: dict[str, Option] = field(default_factory=dict)  # dataset constructor options
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
    eval_mode: str = "whole"  # whole: one forward pass per image | slide: overlapping windows, logits averaged
    eval_crop: list[int] | None = None  # slide: [H, W] window in pixels (after eval_size / scale)
    eval_stride: list[int] | None = None  # slide: [H, W] step between windows, 0 < stride <= crop
    eval_scales: list[float] | None = None  # test-time scales, e.g. [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] (None: [1.0])
    eval_flip: bool = False  # test-time left-right flip (probabilities of all views averaged)
    num_workers: int = 0
    loader: str = "auto"  # training batches: host (DataLoader) | device (split held on the device) | auto (device on a GPU)
    limit_images: int | None = None  # use only the first N images of each split (smoke tests)
    train_fraction: float | None = None  # label-efficiency studies: train on this share of the train split (None: all)
    train_fraction_seed: int = 0  # which images form that subset: fixed, not `seed`, so seeds vary training only
    # --- optimisation ---
    epochs: int = 10
    batch_size: int = 8
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3  # peak learning rate, per batch (not scaled by batch size)
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-4
    encoder_lr_mult: float = 1.0  # encoder LR = lr x this, for models with param_groups() (pretrained encoder: 0.1)
    schedule: str = "poly"  # poly (power 0.9, DeepLab) | cosine | constant
    warmup_epochs: float = 0.0  # linear warm-up length in epochs
    grad_clip: float | None = None  # max gradient L2 norm, None = off
    loss: str = "ce"  # ce | dice | ce+dice (semantic models)
    class_weights: str | list[float] | None = None  # None | "auto" (median frequency) | list of K floats
    border_weight: bool = False  # U-Net paper eq. 2 weight map (touching objects)
    w0: float = 10.0  # border weight amplitude (paper: 10)
    sigma: float = 5.0  # border weight width in pixels (paper: about 5)
    aux_weight: float = 0.4  # weight of an auxiliary head's loss, when the model has one
    track: str = "steps"  # steps: the budget is `epochs` | time: the separately labelled speed-run track
    max_train_seconds: float | None = None  # steps track: a safety stop (the record says capped); time track: the budget
    # --- checkpoint selection ---
    recipe: str | None = None  # how this recipe was chosen (on val, a holdout of train, a prior run; never on test): the record's selection.recipe
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
    channels_last: bool = True  # semantic models train in NHWC on every device (CPU: 1.35-1.8x faster steps)
    compile: bool = False  # torch.compile the model
    sync_bn: bool | None = None  # under torchrun on GPUs: SyncBatchNorm (None: on when the per-GPU batch is below 8)
    latency_runs: int = 10  # timed forward passes for the latency column

    def display_name(self) -> str:
        return self.name or self.model

    def evaluation(self) -> Evaluation:
        """How evaluation runs the model (whole / slide, TTA), validated; SegbenchError names the bad key.
        (Imported here: config must load without torch.)"""
        from ..models.inference import evaluation_settings

        return evaluation_settings(mode=self.eval_mode, crop=self.eval_crop, stride=self.eval_stride,
                                   scales=self.eval_scales, flip=self.eval_flip)

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
        from ..models import model_task

        return "device" if self.hardware_class() == "cuda" and model_task(self.model) == "semantic" else "host"

    def group_id(self) -> str:
        """12 hex digits: like :meth:`run_id` without the seed, shared by the runs of one config across seeds."""
        return self._hash(with_seed=False)

    def run_id(self) -> str:
        """12 hex digits identifying everything that changes the trained weights or the scores: the config, the
        name, the hardware class and the loader (bf16 kernels and the device-side augmentation differ)."""
        return self._hash(with_seed=True)

    def _hash(self, *, with_seed: bool) -> str:
        ignored = {"num_workers", "latency_runs", "recipe"}  # same weights, same scores
        # Keys at their default value are left out, so adding a config key (with a default that keeps today's
        # behaviour) does not change the id of any existing run.
        payload = {k: v for k, v in dataclasses.asdict(self).items() if k not in ignored and v != _default(k)}
        if payload.get("train_fraction") == 1.0:  # all of train: the same run as no subset
            del payload["train_fraction"]
        payload.update(device=self.hardware_class(), loader=self.resolved_loader())
        if not with_seed:
            payload.pop("seed", None)
        blob = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


def _default(key: str) -> Any:
    f = FIELDS[key]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


def _check_keys(data: dict[str, Any], source: str) -> None:
    for key in data:
        if not isinstance(key, str):
            raise SegbenchError(f"{source}: config key {short_repr(key)} is not a name; keys are words like epochs")
        if key not in FIELDS:
            raise SegbenchError(f"{source}: unknown config key '{key}'{nearest(key, FIELDS)}")


def make_config(data: dict[str, Any], source: str = "config", origins: dict[str, str] | None = None) -> RunConfig:
    """A RunConfig from a mapping; unknown keys, wrong types and out-of-range values raise a one-line
    SegbenchError naming ``source`` (or, for a key set by an override, that override: see ``origins``)."""
    origins = origins or {}
    if not isinstance(data, dict):
        raise SegbenchError(f"{source}: expected a mapping of config keys, got {short_repr(data)}")
    _check_keys(data, source)
    values = {k: check_value(k, v, origins.get(k, source)) for k, v in data.items()}
    cfg = RunConfig(**values)
    check_options_and_warmup(cfg, source, origins)
    check_config(cfg, source)
    return cfg


def check_options_and_warmup(cfg: RunConfig, source: str, origins: dict[str, str]) -> None:
    """What the per-key rules cannot see: each model option against the builder's own (name and type) and a
    warm-up within the budget. Pure: a config made on another machine (a
    record's) still loads here; :func:`check_runnable` checks this machine."""
    from ..models import check_model_args, get_builder, model_options

    try:
        get_builder(cfg.model)
    except SegbenchError as exc:
        raise SegbenchError(f"{origins.get('model', source)}: {exc}") from None
    defaults = model_options(cfg.model)
    for key, value in cfg.model_args.items():
        where = origins.get(f"model_args.{key}") or origins.get("model_args", source)
        try:
            check_model_args(cfg.model, {key: value})
        except SegbenchError as exc:
            raise SegbenchError(f"{where}: {exc}") from None
        _check_option_type(f"{where}: model '{cfg.model}' option {key}", value, defaults[key])
    if cfg.warmup_epochs > cfg.epochs:
        raise SegbenchError(f"{origins.get('warmup_epochs', source)}: warmup_epochs={cfg.warmup_epochs} is longer "
                            f"than the run (epochs={cfg.epochs}); valid: a number in [0, epochs]")


def check_runnable(cfg: RunConfig, source: str) -> None:
    """What only this machine can answer, checked by the CLI for every run before the first one trains: an existing
    ``data_root`` folder and a visible CUDA device when one is asked for."""
    from ..device import resolve_device

    if cfg.data_root is not None and not Path(cfg.data_root).expanduser().is_dir():
        what = "is a file, not a folder" if Path(cfg.data_root).expanduser().exists() else "does not exist"
        raise SegbenchError(f"{source}: data_root={cfg.data_root!r} {what}; "
                            "give the dataset's folder (or leave it out to use $SEGBENCH_DATA)")
    try:
        resolve_device(cfg.device)
    except SegbenchError as exc:
        raise SegbenchError(f"{source}: {exc}") from None
    if cfg.model_args or cfg.encoder_lr_mult != 1.0:
        _dry_build(cfg, source)


def _dry_build(cfg: RunConfig, source: str) -> None:
    """Build the model on the meta device (no memory, no weights read) so that an option value its builder refuses
    (``depth: -1``), or an ``encoder_lr_mult`` for a model without an encoder/decoder split, fails here, before any
    run of a suite trains, not when its own turn comes."""
    import torch

    from ..models import build_model

    options = {k: v for k, v in cfg.model_args.items() if k != "backbone_weights"}  # files are checked when loaded
    try:
        with torch.device("meta"):
            model = build_model(cfg.model, num_classes=2, **options)
    except SegbenchError as exc:
        raise SegbenchError(f"{source}: model_args: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a builder's own ValueError/RuntimeError on a bad option value
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SegbenchError(f"{source}: model_args={short_repr(cfg.model_args)} cannot build '{cfg.model}': "
                            f"{first}") from None
    if cfg.encoder_lr_mult != 1.0 and not callable(getattr(model, "param_groups", None)):
        raise SegbenchError(f"{source}: encoder_lr_mult={cfg.encoder_lr_mult:g} needs a model with an encoder/decoder "
                            f"split; '{cfg.model}' has none: set encoder_lr_mult: 1 for it (or use a *_lite0 model)")


def _check_option_type(what: str, value: Any, default: Any) -> None:
    """An option whose default is a bool, an int or a float takes that type (an int where a float is expected)."""
    if value is None or default is None:
        return
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    else:
        return
    if not ok:
        raise SegbenchError(f"{what}={short_repr(value)} is invalid; valid: {kind} (default {default!r})")


def check_config(cfg: RunConfig, source: str = "config") -> None:
    """Validate model/dataset names and their options before anything heavy happens."""
    from ..data import DATASETS
    from ..models import check_model_args, get_builder

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
    check_evaluation(cfg, source)
    check_subset_and_lr(cfg, source)


def check_evaluation(cfg: RunConfig, source: str) -> None:
    """eval_mode / eval_crop / eval_stride / eval_scales / eval_flip: valid together (models.inference.Evaluation)."""
    from ..models import model_task
    from ..models.inference import WHOLE

    try:
        evaluation = cfg.evaluation()
    except SegbenchError as exc:
        raise SegbenchError(f"{source}: {exc}") from None
    if evaluation != WHOLE and model_task(cfg.model) == "instance":
        raise SegbenchError(f"{source}: eval_mode/eval_scales/eval_flip apply to semantic models; '{cfg.model}' is "
                            "an instance model (remove them)")


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


def check_subset_and_lr(cfg: RunConfig, source: str) -> None:
    """``train_fraction`` in (0, 1] and a positive ``encoder_lr_mult``. A fraction of 1 becomes null: the same run
    as the whole split, so it gets the same id (and reuses its weights)."""
    fraction = cfg.train_fraction
    if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                                 or not 0.0 < fraction <= 1.0):
        raise SegbenchError(f"{source}: train_fraction must be in (0, 1] or null, got {fraction!r}; e.g. 0.125")
    cfg.train_fraction = None if fraction is None or fraction == 1 else float(fraction)
    mult = cfg.encoder_lr_mult
    if not (isinstance(mult, (int, float)) and not isinstance(mult, bool) and 0.0 < mult < float("inf")):
        raise SegbenchError(f"{source}: encoder_lr_mult must be a positive number, got {mult!r}; e.g. 0.1")


def dataset_options(name: str) -> list[str]:
    """The keyword options of dataset ``name`` beyond split/root/task/transform."""
    import inspect

    from ..data import DATASETS

    return [
        p.name for p in inspect.signature(DATASETS[name]).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("split", "root", "task", "transform")
    ]


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` (value parsed as YAML: 3, 0.1, 1e-4, true, [1, 2]); ``model_args.depth=3`` sets one option."""
    if "=" not in text:
        raise SegbenchError(f"override '{text}' must look like key=value, e.g. epochs=5 or model_args.base_channels=8")
    key, value = text.split("=", 1)
    try:
        parsed = safe_yaml.load(value, f"override '{text}'") if value.strip() != "" else None
    except safe_yaml.YamlSyntaxError:
        parsed = value  # not YAML at all: the text itself (e.g. name=a:b is then refused as a name)
    return key.strip(), parsed


def apply_overrides(data: dict[str, Any], overrides: list[str], origins: dict[str, str] | None = None) -> dict[str, Any]:
    """``data`` with each ``key=value`` of ``overrides`` applied. Each value is checked here, so an error names the
    override rather than the YAML file; ``origins`` (if given) records which override set which key."""
    data = dict(data)
    origins = {} if origins is None else origins
    for text in overrides:
        key, value = parse_override(text)
        source = f"override '{text}'"
        if "." in key:
            head, sub = key.split(".", 1)
            if head not in ("model_args", "dataset_args"):
                raise SegbenchError(f"{source}: only model_args.X and dataset_args.X take a dot")
            current = data.get(head) or {}
            if not isinstance(current, dict):
                raise SegbenchError(f"{source}: {head} in the config is {short_repr(current)}, not a mapping; fix it there")
            data[head] = check_value(head, {**current, sub: value}, source)
            origins[key] = source
        else:
            if key not in FIELDS:
                raise SegbenchError(f"{source}: unknown config key '{key}'{nearest(key, FIELDS)}")
            data[key] = check_value(key, value, source)
            origins[key] = source
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config or suite file (bounded: see :mod:`segbench.config.safe_yaml`)."""
    data = safe_yaml.load(safe_yaml.read_text(path), str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SegbenchError(f"{path}: expected a mapping of config keys at the top level, got {short_repr(data)}")
    return data


SUITES_DIR = Path(__file__).parents[1] / "suites"


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
    allowed = ["runs", "common", "description"]
    for key in data:
        if key not in allowed:
            raise SegbenchError(f"{path}: unknown suite key {short_repr(key)}{nearest(str(key), allowed)}; "
                                f"a suite has {', '.join(allowed)}")
    runs = data.get("runs")
    if not isinstance(runs, list) or not runs:
        raise SegbenchError(f"{path}: a suite needs a non-empty 'runs:' list of mappings, e.g. runs: [{{model: fcn8s}}]")
    common = data.get("common") or {}
    if not isinstance(common, dict):
        raise SegbenchError(f"{path}: 'common:' must be a mapping of config keys, got {short_repr(common)}")
    configs = []
    for i, run in enumerate(runs):
        source = f"{path} (run {i + 1})"
        if not isinstance(run, dict):
            raise SegbenchError(f"{source}: each entry of 'runs:' must be a mapping of config keys like "
                                f"{{model: fcn8s}}, got {short_repr(run)}")
        origins: dict[str, str] = {}
        merged = apply_overrides({**common, **run}, overrides or [], origins)
        configs.append(make_config(merged, source, origins))
    return configs


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """One run from a YAML file of RunConfig keys."""
    data = read_yaml(path)
    if "runs" in data:
        raise SegbenchError(f"{path}: this is a suite (it has 'runs:'); run it with 'python -m segbench run {path}'")
    origins: dict[str, str] = {}
    data = apply_overrides(data, overrides or [], origins)
    return make_config(data, str(path), origins)
