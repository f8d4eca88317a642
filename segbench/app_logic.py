"""Everything the Gradio app (``app.py``) does, without Gradio: so it is tested and timed directly.

Three parts, each used by one tab:

- **Leaderboard**: load the result records (local ``leaderboard/`` plus the Hub when configured), turn them into the
  display table, filter/sort it, write CSV, describe one record (config, curve, hardware, weights, command).
- **Models**: which (dataset -> models) have weights, either in the local store
  (``<store>/weights/<dataset>/<model>--<id>/``) or through a record whose weights are on the Hub (``hf://``);
  the best model of each family is the default selection; predictors are loaded once and cached.
- **Compare**: read an upload (size guard, downscale), run the chosen models, score them against an optional
  ground-truth mask with ``ConfusionMatrix``, and draw the panels (overlays, colour masks, disagreement, instances).

Images are ``uint8 [C,H,W]`` tensors and masks ``int64 [H,W]`` until the last step, where panels become
``uint8 [H,W,3]`` numpy arrays for Gradio. Configuration comes from the environment (``AppConfig.from_env``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from . import viz
from .errors import SegbenchError
from .metrics import ConfusionMatrix
from .records import load_records, records_frame
from .store import CONFIG_FILE, WEIGHTS_FILE, LocalStore, default_store

FAMILIES = ("unet", "fcn", "deeplab", "maskrcnn")  # display order; the default picks one model of each
DATASET_ORDER = ("synthetic", "isbi2012", "camvid", "balloon")
DATASET_LABELS = {
    "synthetic": "Synthetic shapes (built in)",
    "isbi2012": "ISBI 2012 (EM membranes)",
    "camvid": "CamVid (street scenes)",
    "balloon": "Balloon (instances)",
}
MAX_MODELS = 4

# ================================================================ configuration


@dataclass(frozen=True)
class AppConfig:
    """Where the app reads from. ``from_env`` maps SEGBENCH_LEADERBOARD (default ./leaderboard),
    SEGBENCH_STORE (default ~/.cache/segbench), SEGBENCH_HUB_RESULTS and SEGBENCH_HUB_MODELS (Hub repo ids, off
    when unset)."""

    leaderboard: Path = Path("leaderboard")
    store: Path = field(default_factory=default_store)
    hub_results: str | None = None
    hub_models: str | None = None
    max_side: int = 2048  # uploads with a longer side are downscaled to this for the comparison
    max_pixels: int = 64_000_000  # uploads above this are refused before decoding (decompression bombs)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> AppConfig:
        env = os.environ if environ is None else environ
        return cls(
            leaderboard=Path(env.get("SEGBENCH_LEADERBOARD") or "leaderboard").expanduser(),
            store=Path(env["SEGBENCH_STORE"]).expanduser() if env.get("SEGBENCH_STORE") else default_store(),
            hub_results=env.get("SEGBENCH_HUB_RESULTS") or None,
            hub_models=env.get("SEGBENCH_HUB_MODELS") or None,
        )


def dataset_label(name: str) -> str:
    return DATASET_LABELS.get(name, name)


def _dataset_rank(name: str) -> tuple[int, str]:
    return (DATASET_ORDER.index(name) if name in DATASET_ORDER else len(DATASET_ORDER), name)


# ================================================================ leaderboard

# (label, record-frame column, scale): the display table. Metrics become percentages, params millions, time minutes.
TABLE_COLUMNS: list[tuple[str, str, float | None]] = [
    ("Model", "model", None), ("Family", "family", None), ("Backbone", "variant", None), ("Dataset", "dataset", None),
    ("Split", "split", None), ("PA %", "pixel_accuracy", 100), ("mPA %", "mean_pixel_accuracy", 100),
    ("mIoU %", "miou", 100), ("FWIoU %", "fwiou", 100), ("Mask AP %", "mask_ap", 100), ("Params (M)", "params", 1e-6),
    ("GFLOPs", "gflops", 1), ("RF (px)", "receptive_field", None), ("Latency (ms)", "latency_ms", 1),
    ("Latency device", "latency_device", None), ("Train (min)", "train_seconds", 1 / 60), ("Date", "date", None),
    ("id", "id", None),
]
COLUMN_LABELS = [label for label, _, _ in TABLE_COLUMNS]
CHOOSABLE_COLUMNS = [c for c in COLUMN_LABELS if c != "id"]  # id always shows: it names the record for details
_DIGITS = {"Params (M)": 2, "GFLOPs": 2, "Latency (ms)": 1, "Train (min)": 1}
_NUMERIC = {label for label, _, scale in TABLE_COLUMNS if scale is not None} | {"RF (px)"}


@dataclass
class Leaderboard:
    """All valid records, their frame (records.records_frame), the display table and the skipped files."""

    records: list[dict[str, Any]]
    frame: pd.DataFrame
    table: pd.DataFrame
    problems: list[str]
    _search: pd.Series  # lower-case text each row is searched in
    _by_id: dict[str, dict[str, Any]]

    @classmethod
    def from_records(cls, records: list[dict[str, Any]], problems: list[str] | None = None) -> Leaderboard:
        frame = records_frame(records)
        table = display_table(frame)
        search = (frame["model"].astype(str) + " " + frame["variant"].astype(str) + " " + frame["family"].astype(str)
                  + " " + frame["dataset"].astype(str) + " " + frame["id"].astype(str)).str.lower()
        by_id: dict[str, dict[str, Any]] = {}
        for record in records:
            by_id.setdefault(record["id"], record)
        return cls(records, frame, table, list(problems or []), search, by_id)

    def record(self, record_id: str) -> dict[str, Any] | None:
        return self._by_id.get(str(record_id).strip())

    def choices(self, column: str) -> list[str]:
        values = self.frame[column].dropna().astype(str).unique().tolist() if not self.frame.empty else []
        return sorted(values, key=_dataset_rank) if column == "dataset" else sorted(values)

    def rows(self, *, datasets: list[str] | None = None, families: list[str] | None = None,
             devices: list[str] | None = None, search: str = "") -> np.ndarray:
        """bool [N]: rows matching every filter (an empty list means no restriction); ``search`` matches a
        case-insensitive substring of model, backbone, family, dataset or id."""
        keep = np.ones(len(self.frame), dtype=bool)
        for column, wanted in (("dataset", datasets), ("family", families), ("latency_device", devices)):
            if wanted:
                keep &= self.frame[column].isin(list(wanted)).to_numpy()
        if search and search.strip():
            keep &= self._search.str.contains(search.strip().lower(), regex=False).to_numpy()
        return keep

    def filter(self, *, datasets: list[str] | None = None, families: list[str] | None = None,
               devices: list[str] | None = None, search: str = "", sort_by: str | None = None,
               descending: bool = True, columns: list[str] | None = None) -> pd.DataFrame:
        """The display table of ``rows(...)``, sorted by ``sort_by`` (a column label, missing values last; empty:
        dataset then mIoU), showing ``columns`` (labels, default all) plus ``id``."""
        keep = self.rows(datasets=datasets, families=families, devices=devices, search=search)
        table = self.table[keep]
        if sort_by in COLUMN_LABELS:
            numeric = sort_by in _NUMERIC
            key = (lambda s: pd.to_numeric(s, errors="coerce")) if numeric else (lambda s: s.astype(str).str.lower())
            table = table.sort_values(sort_by, ascending=not descending, na_position="last", kind="stable", key=key)
        shown = [c for c in COLUMN_LABELS if c in (columns if columns is not None else COLUMN_LABELS) or c == "id"]
        return table[shown].reset_index(drop=True)


def display_table(frame: pd.DataFrame) -> pd.DataFrame:
    """records_frame columns -> the labelled, rounded display columns (TABLE_COLUMNS), same row order."""
    out = {}
    for label, column, scale in TABLE_COLUMNS:
        values = frame[column]
        if scale is not None:
            values = (pd.to_numeric(values, errors="coerce") * scale).round(_DIGITS.get(label, 2))
        elif label == "RF (px)":
            # whole numbers, blank when unknown (a float column would show 412.0)
            values = values.map(lambda v: None if v is None or v != v else int(v)).astype(object)
        elif label == "Date":
            values = values.astype(str).str.slice(0, 10)
        out[label] = values
    return pd.DataFrame(out, columns=COLUMN_LABELS)


def load_leaderboard(cfg: AppConfig) -> Leaderboard:
    """Local records plus the Hub's (when ``cfg.hub_results`` is set). Never raises: unreadable files and an
    unreachable Hub become lines in ``problems``. A record present locally wins over the Hub's copy."""
    records, problems = load_records(cfg.leaderboard)
    if cfg.hub_results:
        try:
            from .hub import load_hub_records

            hub_records, hub_problems = load_hub_records(cfg.hub_results)
            records, problems = records + hub_records, problems + hub_problems
        except Exception as exc:  # noqa: BLE001 - the Hub being down must not stop the app
            problems.append(f"Hub results {cfg.hub_results}: not loaded ({_one_line(exc)}); showing local records")
    seen: set[tuple[str, str]] = set()
    unique = []
    for record in records:
        key = (record["dataset"], record["id"])
        if key not in seen:
            seen.add(key)
            unique.append(record)
    return Leaderboard.from_records(unique, problems)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def write_csv(table: pd.DataFrame, folder: str | Path) -> Path:
    """Write ``table`` as CSV in ``folder``; the name depends on the content, so the same view reuses one file."""
    text = table.to_csv(index=False)
    path = Path(folder) / f"segbench-leaderboard-{hashlib.sha1(text.encode()).hexdigest()[:10]}.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return path


def problems_markdown(problems: list[str]) -> str:
    """The visible notice for skipped records ('' when there are none)."""
    if not problems:
        return ""
    lines = "\n".join(f"- `{p}`" for p in problems[:20])
    more = f"\n- ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    return f"**{len(problems)} record file(s) skipped** (malformed or unreadable; fix or delete them):\n{lines}{more}"


def record_details(record: dict[str, Any]) -> str:
    """Markdown: summary, hardware and versions, weights (location, sha256), the reproducing command, the config."""
    m, e, t, w = record["metrics"], record["efficiency"], record["training"], record["weights"]
    hw, versions = record.get("hardware") or {}, record.get("versions") or {}
    latency = e.get("latency") or {}
    lines = [
        f"### {record['model']} ({record['variant']}) on {record['dataset']} / {record['split']}",
        f"mIoU **{_pct(m.get('miou'))}**, PA {_pct(m.get('pixel_accuracy'))}, mPA {_pct(m.get('mean_pixel_accuracy'))}, "
        f"FWIoU {_pct(m.get('fwiou'))}" + (f", mask AP {_pct(m.get('mask_ap'))}" if m.get("mask_ap") is not None else "")
        + (f" (instances kept at score >= {m['score_threshold']})" if m.get("score_threshold") is not None else ""),
        f"- **Efficiency**: {_num(e.get('params'), 0)} parameters, {_num(e.get('gflops'), 2)} GFLOPs at "
        f"{e.get('flops_input')}, receptive field {e.get('receptive_field') or '-'} px, output stride "
        f"{e.get('output_stride') or '-'}; latency {_num(latency.get('ms'), 1)} ± {_num(latency.get('ms_std'), 1)} ms "
        f"(batch {latency.get('batch_size', 1)}, {latency.get('image_size')}) on {latency.get('device', '?')}",
        f"- **Training**: {t.get('epochs', '?')} epochs in {_duration(t.get('seconds'))} on {t.get('device', '?')}"
        + (f", {_num(t.get('images_per_s'), 1)} images/s" if t.get("images_per_s") is not None else "")
        + f"; seed {record.get('seed')}",
        f"- **Hardware**: {hw.get('device', '?')}; CPU {hw.get('cpu', '?')} ({hw.get('cpu_count', '?')} threads)"
        + (f"; {hw['platform']}" if hw.get("platform") else ""),
        "- **Versions**: " + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; git commit `{record.get('git_commit') or 'unknown'}`; date {record.get('date')}",
        f"- **Weights**: `{w.get('uri')}`  \n  sha256 `{w.get('sha256')}`",
        f"- **Record file**: `{record.get('_path', '?')}`",
    ]
    absent = m.get("absent") or []
    if absent:
        lines.append(f"- **Classes absent from the split** (left out of the means): {', '.join(map(str, absent))}")
    lines += ["", "**Reproduce**", "```bash", reproduce_command(record), "```",
              "<details><summary>Full config</summary>", "", "```json",
              json.dumps(record.get("config"), indent=2, sort_keys=True), "```", "</details>"]
    return "\n".join(lines)


def reproduce_command(record: dict[str, Any]) -> str:
    """Shell lines that retrain and re-score this record: the record's own ``command`` when it has one, else the
    config keys that differ from the defaults (plus model and dataset) written as YAML, then ``segbench train``."""
    import yaml

    from .config import RunConfig

    if isinstance(record.get("command"), str):
        return record["command"]
    defaults = dataclasses.asdict(RunConfig())
    config = {k: v for k, v in (record.get("config") or {}).items()
              if k in ("model", "dataset") or (k != "device" and (k not in defaults or defaults[k] != v))}
    name = f"{record['model']}-{record['dataset']}.yaml"
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=False).rstrip()
    return f"cat > {name} <<'EOF'\n{body}\nEOF\npython -m segbench train {name}"


def _pct(value: Any) -> str:
    return "-" if value is None or value != value else f"{100 * float(value):.2f}%"


def _num(value: Any, digits: int) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:,.{digits}f}"


def _duration(seconds: Any) -> str:
    if seconds is None:
        return "?"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


# ================================================================ models with weights


@dataclass(frozen=True)
class ModelEntry:
    """One comparable model: weights trained on ``dataset``. ``weights`` is a local folder or an ``hf://`` URI."""

    key: str  # "<dataset>/<name>--<id>": the value the UI passes around
    dataset: str
    name: str
    run_id: str
    family: str
    variant: str
    task: str
    miou: float | None  # the record's mIoU on its split (None without a record)
    weights: str
    sha256: str | None = None

    def label(self, *, with_id: bool = False) -> str:
        """'unet_small (unet) · mIoU 81.2%', with the run id when two runs share a name."""
        score = f"mIoU {100 * self.miou:.1f}%" if self.miou is not None else "no record"
        return f"{self.name} ({self.family}) · {score}" + (f" · #{self.run_id[:6]}" if with_id else "")


def model_choices(entries: list[ModelEntry]) -> list[tuple[str, str]]:
    """(label, key) pairs for a dropdown; names used by several runs get the run id."""
    names = [e.name for e in entries]
    return [(e.label(with_id=names.count(e.name) > 1), e.key) for e in entries]


def family_of(model: str) -> str:
    """The family from a builder name (unet_small -> unet, deeplabv3_resnet50 -> deeplab), 'other' if unknown."""
    flat = model.lower().replace("_", "").replace("-", "")
    for family in ("maskrcnn", "deeplab", "unet", "fcn"):
        if family in flat:
            return family
    return "other"


def discover_models(store_root: str | Path, records: list[dict[str, Any]], *,
                    hub_models: str | None = None) -> dict[str, list[ModelEntry]]:
    """dataset -> models that can run here: every weights folder in the store, plus records whose weights are on
    the Hub (an ``hf://`` URI, or a run in the ``hub_models`` repos, see hub.hub_weights_uri). A record pointing at
    a store folder lends it its family, variant and mIoU. Best mIoU first."""
    store = LocalStore(store_root)
    by_dir = {}
    hub_entries = []
    for record in records:
        uri = str((record.get("weights") or {}).get("uri", ""))
        local = None if uri.startswith("hf://") or not uri else store.resolve(uri)
        if local is not None and (local / WEIGHTS_FILE).is_file():
            by_dir[str(local.resolve())] = record
            continue
        hub_uri = uri if uri.startswith("hf://") else _hub_uri(record, hub_models)
        if hub_uri:
            hub_entries.append(_entry(record["dataset"], record["model"], record["id"], hub_uri, record, None))
    entries: dict[str, ModelEntry] = {}
    for meta_path in sorted((store.root / "weights").glob(f"*/*/{CONFIG_FILE}")):
        folder = meta_path.parent
        if folder.name.startswith(".") or not (folder / WEIGHTS_FILE).is_file() or "--" not in folder.name:
            continue  # half-written (store.save renames a hidden temporary folder) or foreign
        name, run_id = folder.name.rsplit("--", 1)
        record = by_dir.get(str(folder.resolve()))
        meta = None if record else _read_json(meta_path)
        entry = _entry(folder.parent.name, name, run_id, str(folder), record, meta)
        entries[entry.key] = entry
    for entry in hub_entries:
        entries.setdefault(entry.key, entry)  # local weights win over downloading the same run
    grouped: dict[str, list[ModelEntry]] = {}
    for entry in entries.values():
        grouped.setdefault(entry.dataset, []).append(entry)
    return {
        dataset: sorted(group, key=lambda e: (-(e.miou if e.miou is not None else -1.0), e.name))
        for dataset, group in sorted(grouped.items(), key=lambda kv: _dataset_rank(kv[0]))
    }


def _hub_uri(record: dict[str, Any], hub_models: str | None) -> str | None:
    if not hub_models:
        return None
    from .hub import hub_weights_uri

    return hub_weights_uri(record, models=hub_models)


def _entry(dataset: str, name: str, run_id: str, weights: str, record: dict | None, meta: dict | None) -> ModelEntry:
    if record is not None:
        return ModelEntry(
            key=f"{dataset}/{name}--{run_id}", dataset=dataset, name=name, run_id=run_id, family=record["family"],
            variant=str(record.get("variant", "")), task=record.get("task", "semantic"),
            miou=record["metrics"].get("miou"), weights=weights, sha256=record["weights"].get("sha256"),
        )
    meta = meta or {}
    builder = str(meta.get("model", name))
    return ModelEntry(key=f"{dataset}/{name}--{run_id}", dataset=dataset, name=name, run_id=run_id,
                      family=family_of(builder), variant=builder, task=str(meta.get("task", "semantic")), miou=None,
                      weights=weights)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def default_selection(entries: list[ModelEntry], limit: int = MAX_MODELS) -> list[str]:
    """Keys of the best model (highest record mIoU) of each family, in FAMILIES order, at most ``limit``."""
    best: dict[str, ModelEntry] = {}
    for entry in entries:  # entries come best first
        best.setdefault(entry.family, entry)
    order = sorted(best, key=lambda f: (FAMILIES.index(f) if f in FAMILIES else len(FAMILIES), f))
    return [best[f].key for f in order][:limit]


def no_weights_markdown(cfg: AppConfig) -> str:
    return (
        "### No trained weights found\n"
        f"The Compare tab runs models whose weights are in the store (`{cfg.store}`, set `SEGBENCH_STORE` to use "
        "another folder) or on the Hugging Face Hub. To get some:\n\n"
        "- train the default suite on this machine (a few minutes on a CPU):  \n  `python -m segbench run`\n"
        "- or download published records and weights:  \n  `python -m segbench pull <results-repo> --weights`  \n"
        "  or point the app at them: `SEGBENCH_HUB_RESULTS=<repo> SEGBENCH_HUB_MODELS=<repo> python app.py`\n\n"
        "Then press **Rescan store** (or restart the app, which also adds the examples)."
    )


# ================================================================ predictors (loaded once, cached)


class PredictorCache:
    """Loaded ``segbench.predict.Predictor`` objects keyed by weights folder (plus its mtime, so retrained weights
    reload). Least recently used are dropped beyond ``capacity``. Loading is serialised by a lock: two users asking
    for the same model load it once."""

    def __init__(self, *, capacity: int = 8, device: str = "cpu") -> None:
        self.capacity, self.device = capacity, device
        self._items: OrderedDict[tuple[str, float], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, entry: ModelEntry):
        """The predictor of ``entry``, loading it on first use. Any failure is one SegbenchError naming the model."""
        try:
            return self._get(entry)
        except SegbenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken weights folder must give a message, not a traceback
            raise SegbenchError(f"{entry.name} ({entry.weights}): could not be loaded ({_one_line(exc)}); retrain it "
                                "with 'python -m segbench run' or pick another model") from None

    def _get(self, entry: ModelEntry):
        folder = self._local_folder(entry)
        key = (str(folder), _mtime(folder / WEIGHTS_FILE))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            from .predict import Predictor

            predictor = Predictor(folder, device=self.device)
            # One tiny forward pass creates the kernels' caches, so the user's first comparison is warm too.
            predictor(torch.zeros(predictor.in_channels, 64, 64, dtype=torch.uint8))
            self._items[key] = predictor
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return predictor

    def __len__(self) -> int:
        return len(self._items)

    @staticmethod
    def _local_folder(entry: ModelEntry) -> Path:
        if entry.weights.startswith("hf://"):
            from .hub import fetch_weights

            return Path(fetch_weights(entry.weights, entry.sha256 or ""))
        return Path(entry.weights)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


# ================================================================ uploads


def check_image_header(path: str | Path, *, name: str, max_pixels: int) -> tuple[int, int]:
    """Open the file's header only (nothing decoded): its (width, height). A non-image or an image above
    ``max_pixels`` (a decompression bomb) raises SegbenchError naming ``name``."""
    if not Path(path).is_file():
        raise SegbenchError(f"{name}: the file is gone (uploads are deleted after a while); upload it again")
    try:
        with Image.open(path) as img:  # PIL's own bomb guard may fire first (> ~179 MP)
            width, height = img.size
    except Image.DecompressionBombError:
        raise SegbenchError(f"{name}: the image is far too large (over 179 megapixels); downscale it to at most "
                            f"{int(math.sqrt(max_pixels))}x{int(math.sqrt(max_pixels))} and upload again") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise SegbenchError(f"{name}: not an image this app can read; upload a PNG, JPEG, TIFF, BMP or WebP file") from None
    if width * height > max_pixels:
        raise SegbenchError(f"{name}: {width}x{height} pixels ({width * height / 1e6:.0f} MP) is too large "
                            f"(limit {max_pixels / 1e6:.0f} MP); downscale it and upload again")
    return width, height


def read_upload(path: str | Path, *, name: str | None = None, cfg: AppConfig | None = None) -> tuple[Tensor, list[str]]:
    """Decode an uploaded image to uint8 [C,H,W] (C 1 or 3: grey, RGB, RGBA, palette, 16-bit are all accepted).
    Refuses non-images and bombs; downscales (antialiased) images whose long side exceeds ``cfg.max_side``.
    Returns (image, notices for the user)."""
    from torchvision.transforms.v2.functional import resize

    from .predict import load_image

    cfg = cfg or AppConfig()
    name = name or Path(path).name
    check_image_header(path, name=name, max_pixels=cfg.max_pixels)
    try:
        image = load_image(path, max_pixels=cfg.max_pixels)
    except SegbenchError as exc:
        raise SegbenchError(str(exc).replace(str(path), name)) from None
    notices = []
    h, w = image.shape[-2:]
    if max(h, w) > cfg.max_side:
        scale = cfg.max_side / max(h, w)
        size = [max(1, round(h * scale)), max(1, round(w * scale))]
        image = resize(image, size, antialias=True)
        notices.append(f"{name} is {w}x{h}; it was downscaled to {size[1]}x{size[0]} for the comparison.")
    return image, notices


def read_ground_truth(path: str | Path, *, name: str, size: tuple[int, int], num_classes: int, ignore_index: int,
                      palette) -> tuple[Tensor, list[str]]:
    """A ground-truth mask for an image of ``size`` (H, W) -> (int64 [H,W], notices).

    Accepted: a class-index image (grey 8/16-bit or palette PNG, values in [0, K) or ``ignore_index``); a binary
    {0, 255} mask when K = 2 (255 read as class 1); a colour mask drawn in the domain's palette (unknown colours are
    an error, black is the ignore value unless black is a class). A mask larger than the image with the same aspect
    (the image was downscaled) is resized with nearest neighbour."""
    check_image_header(path, name=name, max_pixels=AppConfig().max_pixels)
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            array = np.asarray(img.convert("RGB") if mode in ("RGB", "RGBA", "CMYK", "YCbCr") else img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise SegbenchError(f"{name}: unreadable mask ({_one_line(exc)}); re-save it as PNG") from None
    notices = []
    if array.ndim == 3:
        if mode == "LA":
            array = array[..., 0]
        else:
            array = _colours_to_classes(array, palette, ignore_index, name)
            notices.append(f"{name}: colour mask read through the legend's colours.")
    if array.dtype.kind == "f":
        raise SegbenchError(f"{name}: mask holds floating-point values; upload integer class indices (PNG)")
    mask = torch.from_numpy(array.astype(np.int64))
    values = set(mask.unique().tolist())
    if num_classes == 2 and values <= {0, 255} and 255 in values:
        mask = torch.where(mask == 255, 1, mask)
        notices.append(f"{name}: binary {{0, 255}} mask read as classes {{0, 1}} (255 = class 1).")
        values = set(mask.unique().tolist())
    bad = sorted(v for v in values if not (0 <= v < num_classes or v == ignore_index))
    if bad:
        raise SegbenchError(
            f"{name}: mask values {bad[:10]} are not classes of this domain (0..{num_classes - 1}, ignore "
            f"{ignore_index}); upload a grey or palette PNG of class indices, or a colour mask in the legend's colours"
        )
    h, w = size
    mh, mw = mask.shape
    if (mh, mw) != (h, w):
        if mh >= h and mw >= w and abs(mw / mh - w / h) < 0.01 * (w / h):
            # nearest neighbour by index arithmetic (as F.interpolate's 'nearest'), keeping the labels integer
            mask = mask[(torch.arange(h) * mh) // h][:, (torch.arange(w) * mw) // w]
            notices.append(f"{name}: mask resized from {mw}x{mh} to the image's {w}x{h} (nearest neighbour).")
        else:
            raise SegbenchError(f"{name}: mask is {mw}x{mh} (WxH) but the image is {w}x{h}; upload the mask that "
                                "belongs to this image")
    if jpeg_like(name):
        notices.append(f"{name}: JPEG masks are lossy; edge pixels may hold wrong classes (use PNG).")
    return mask, notices


def jpeg_like(name: str) -> bool:
    return Path(name).suffix.lower() in (".jpg", ".jpeg")


def _colours_to_classes(rgb: np.ndarray, palette, ignore_index: int, name: str) -> np.ndarray:
    """uint8 [H,W,3] drawn in ``palette`` -> class indices [H,W] (one table lookup over 24-bit colour codes)."""
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in reversed(list(enumerate(palette)))}
    table.setdefault(0, ignore_index)  # black is how viz draws ignored pixels
    keys = np.array(sorted(table), dtype=np.int64)
    found = np.searchsorted(keys, codes).clip(0, len(keys) - 1)
    known = keys[found] == codes
    if not known.all():
        unknown = np.unique(codes[~known])[:5]
        shown = ", ".join(f"#{c:06x}" for c in unknown)
        raise SegbenchError(f"{name}: colours {shown} are not in this domain's legend; upload a mask of class indices "
                            "or one drawn in the legend's colours")
    return np.array([table[k] for k in keys.tolist()], dtype=np.int64)[found]


# ================================================================ compare


@dataclass
class ModelResult:
    entry: ModelEntry
    mask: Tensor  # int64 [H,W] at the image size
    instances: dict[str, Tensor] | None  # Mask R-CNN: boxes, labels (semantic classes), scores, masks bool [N,H,W]
    latency_ms: float
    metrics: dict[str, Any] | None  # ConfusionMatrix.compute() against the ground truth
    eval_size: list[int] | None  # [H, W] the model runs at (None: the image's own size)


@dataclass
class Comparison:
    image: Tensor  # uint8 [C,H,W]
    results: list[ModelResult]
    class_names: list[str]
    palette: list[tuple[int, int, int]]
    ignore_index: int
    ground_truth: Tensor | None
    notices: list[str]
    seconds: float  # wall time of the whole comparison (loading included)

    def compact(self) -> Comparison:
        """A copy for keeping in a user's session (redrawing at another opacity): class maps as uint8 (8x smaller;
        classes and the ignore value fit in 0..255), no ground truth."""
        results = [dataclasses.replace(r, mask=r.mask.to(torch.uint8)) for r in self.results]
        return dataclasses.replace(self, results=results, ground_truth=None)


def compare(image: Tensor, entries: list[ModelEntry], cache: PredictorCache, *,
            ground_truth: tuple[str | Path, str] | None = None, notices: list[str] | None = None) -> Comparison:
    """Run ``entries`` on ``image`` (uint8 [C,H,W]); each predictor resizes to its evaluation size and returns the
    mask at the image's size. ``ground_truth`` = (path, display name) of an optional mask, scored per model with
    ``ConfusionMatrix`` (PA, mPA, mIoU under the protocol's ignore/absent policy)."""
    t0 = time.perf_counter()
    if not entries:
        raise SegbenchError("no model selected; pick up to four models of this domain")
    if len(entries) > MAX_MODELS:
        raise SegbenchError(f"{len(entries)} models selected; pick at most {MAX_MODELS}")
    notices = list(notices or [])
    loaded, failures = [], []
    for entry in entries:  # a broken model is reported and skipped; the others still run
        try:
            loaded.append((entry, cache.get(entry)))
        except SegbenchError as exc:
            failures.append(str(exc))
    if not loaded:
        raise SegbenchError(failures[0] if len(failures) == 1 else
                            "no selected model could be loaded: " + " | ".join(failures))
    notices += [f"Skipped: {f}" for f in failures]
    first = loaded[0][1]
    num_classes = first.num_classes
    class_names = list(first.class_names) or [str(i) for i in range(num_classes)]
    palette = [tuple(c) for c in first.palette] or viz.default_palette(num_classes)
    ignore_index = int(first.meta.get("ignore_index", 255))
    gt = None
    if ground_truth is not None:
        gt, gt_notices = read_ground_truth(ground_truth[0], name=ground_truth[1], size=tuple(image.shape[-2:]),
                                           num_classes=num_classes, ignore_index=ignore_index, palette=palette)
        notices += gt_notices
    results = []
    for entry, predictor in loaded:
        try:
            prediction = predictor(image)
        except SegbenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory on a huge image: a message, not a traceback
            raise SegbenchError(f"{entry.name}: failed on this image ({_one_line(exc)}); try a smaller image or "
                                "another model") from None
        instances = prediction.instances
        if instances is not None and predictor.label_to_class is not None and len(instances["labels"]):
            instances = {**instances, "labels": predictor.label_to_class[instances["labels"]]}
        metrics = None
        if gt is not None:
            cm = ConfusionMatrix(predictor.num_classes, ignore_index=int(predictor.meta.get("ignore_index", 255)))
            cm.update(prediction.mask, gt)
            metrics = cm.compute()
        results.append(ModelResult(entry, prediction.mask, instances, prediction.latency_ms, metrics,
                                   predictor.meta.get("eval_size")))
    return Comparison(image, results, class_names, palette, ignore_index, gt, notices, time.perf_counter() - t0)


def _hwc(image: Tensor) -> np.ndarray:
    """uint8 [C,H,W] -> numpy [H,W,3] for Gradio."""
    return viz.to_rgb(image).permute(1, 2, 0).numpy()


def _caption(result: ModelResult) -> str:
    text = f"{result.entry.name} · {result.latency_ms:.0f} ms"
    if result.metrics is not None:
        text += f" · mIoU {100 * result.metrics['miou']:.1f}%"
    return text


def overlay_panels(cmp: Comparison, alpha: float) -> list[tuple[np.ndarray, str]]:
    """One (overlay, caption) per model: the class map blended over the image at opacity ``alpha``."""
    return [(_hwc(viz.overlay(cmp.image, r.mask, cmp.palette, alpha=alpha, ignore_index=cmp.ignore_index)), _caption(r))
            for r in cmp.results]


def mask_panels(cmp: Comparison) -> list[tuple[np.ndarray, str]]:
    """One raw colour mask per model, then the ground truth when given."""
    panels = [(_hwc(viz.colorize(r.mask, cmp.palette, cmp.ignore_index)), _caption(r)) for r in cmp.results]
    if cmp.ground_truth is not None:
        panels.append((_hwc(viz.colorize(cmp.ground_truth, cmp.palette, cmp.ignore_index)), "ground truth"))
    return panels


def instance_panels(cmp: Comparison, alpha: float) -> list[tuple[np.ndarray, str]]:
    """One panel per instance model: each instance its own colour, with its box, class and score."""
    from .instance_viz import draw_instances

    panels = []
    for r in cmp.results:
        if r.instances is not None:
            # The predictor already kept detections above the model's threshold; masks bool [N,H,W] -> [N,1,H,W].
            pred = {**r.instances, "masks": r.instances["masks"][:, None].float()}
            drawn = draw_instances(cmp.image, pred, cmp.class_names, cmp.palette, score_threshold=0.0, alpha=alpha)
            panels.append((_hwc(drawn), f"{r.entry.name} · {len(r.instances['scores'])} instances"))
    return panels


def disagreement_panel(cmp: Comparison) -> tuple[np.ndarray | None, str]:
    """(image with disagreeing pixels marked, sentence) — None when fewer than two models ran."""
    if len(cmp.results) < 2:
        return None, "Pick two or more models to see where they disagree."
    picture, fraction = viz.disagreement_overlay(cmp.image, [r.mask for r in cmp.results])
    return _hwc(picture), f"The {len(cmp.results)} models disagree on **{100 * fraction:.1f}%** of the pixels (marked)."


def legend(cmp: Comparison) -> str:
    present = set(torch.cat([r.mask.unique() for r in cmp.results]).tolist())
    if cmp.ground_truth is not None:
        present |= set(cmp.ground_truth.unique().tolist())
    return viz.legend_html(cmp.class_names, cmp.palette, present=present)


def results_table(cmp: Comparison) -> pd.DataFrame:
    """One row per model: latency here; PA / mPA / mIoU on the uploaded ground truth (blank without one)."""
    rows = []
    for r in cmp.results:
        m = r.metrics or {}
        rows.append({
            "Model": r.entry.name,
            "mIoU %": _round_pct(m.get("miou")), "PA %": _round_pct(m.get("pixel_accuracy")),
            "mPA %": _round_pct(m.get("mean_pixel_accuracy")),
            "Latency here (ms)": round(r.latency_ms, 1),
            "Runs at": "x".join(map(str, r.eval_size)) if r.eval_size else "image size",
            "Classes found": int(r.mask.unique().numel()),
            "Record mIoU %": _round_pct(r.entry.miou),
            "Family": r.entry.family, "Backbone": r.entry.variant,
        })
    return pd.DataFrame(rows)


def _round_pct(value: Any) -> float | None:
    return None if value is None or value != value else round(100 * float(value), 2)


def machine_line() -> str:
    from .device import cpu_name

    return f"Latency measured on this machine: {cpu_name()}, {torch.get_num_threads()} PyTorch threads, batch 1."


# ================================================================ examples


def make_examples(folder: str | Path, domains: list[str], *, per_dataset: int = 2, size: int = 160) -> list[list]:
    """Example rows [image path, ground-truth path, domain] for the domains that have models: synthetic images
    generated here, and a few validation images of real datasets found locally. Failures skip the dataset."""
    from .data import build_dataset, default_root

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for dataset in domains:
        if dataset != "synthetic" and default_root(dataset) is None:
            continue
        try:
            options = {"num_images": per_dataset, "size": size} if dataset == "synthetic" else {}
            data = build_dataset(dataset, split="val", **options)
            for i in range(min(per_dataset, len(data))):
                image, mask = data[i]
                image_path, mask_path = folder / f"{dataset}-{i}.png", folder / f"{dataset}-{i}-mask.png"
                viz.to_pil(image).save(image_path)
                viz.palette_png(mask, data.info.palette, data.info.ignore_index).save(mask_path)
                rows.append([str(image_path), str(mask_path), dataset])
        except Exception:  # noqa: BLE001 - an example set that cannot be built is just not offered
            continue
    return rows


# ================================================================ about


def about_markdown(board: Leaderboard) -> str:
    """The protocol, with the hardware the current records came from."""
    machines: dict[str, int] = {}
    for r in board.records:
        hw = r.get("hardware") or {}
        line = str(hw.get("device", "?"))
        if hw.get("cpu") and str(hw["cpu"]) not in line:
            line += f"; CPU {hw['cpu']}"
        machines[line] = machines.get(line, 0) + 1
    hardware = [f"{line}: {n} record{'s' * (n > 1)}" for line, n in sorted(machines.items(), key=lambda kv: -kv[1])]
    datasets = board.frame.groupby("dataset").size().to_dict() if not board.frame.empty else {}
    counts = ", ".join(f"{dataset_label(d)}: {n}" for d, n in sorted(datasets.items(), key=lambda kv: _dataset_rank(kv[0])))
    hardware_text = "\n".join(f"- {h}" for h in hardware) or "- (no records yet)"
    return ABOUT.format(counts=counts or "none yet", hardware=hardware_text)


ABOUT = """
## What segbench measures

Every model is trained **from scratch** (no downloadable pretrained weights) and scored under **one protocol**, so
the numbers in the leaderboard are comparable with each other (not with papers that start from ImageNet).
Records in this leaderboard: {counts}.

### Datasets and splits
| dataset | task | train / evaluation split | classes |
|---|---|---|---|
| **synthetic** | semantic + instances | generated train set / generated `val` set (disjoint seeds) | background, disc, rectangle, triangle, line, blob |
| **ISBI 2012** | binary semantic (EM) | slices 0-24 / slices 25-29 (`val`) of the 30 labelled slices | membrane (label 0), cell (label 255) |
| **CamVid** | 11-class street scenes | `train` (367) / `val` (101); the test split is not used | 11 classes; *Unlabelled* is ignored |
| **balloon** | instances, one class | `train` (61) / `val` (13), VIA polygons | background, balloon |

### Metrics (one confusion matrix per dataset split)
All pixels of the split are accumulated into one K x K matrix (rows: ground truth, columns: prediction) and
the metrics are computed from it once, so the means are dataset-level, not averages of per-image scores.
- **PA** (pixel accuracy) = correct pixels / labelled pixels.
- **mPA** = mean over classes of TP / (TP + FN).
- **IoU** per class = TP / (TP + FP + FN); **mIoU** = mean over classes; **FWIoU** weights each IoU by the class's
  ground-truth pixel frequency.
- **Ignored pixels** (value 255, e.g. CamVid's *Unlabelled*) are skipped entirely.
- **Absent classes**: a class neither in the ground truth nor predicted has no IoU (NaN) and is left out of every
  mean; a class predicted but never in the ground truth has IoU 0 (it counts in mIoU) and is left out of mPA.
- **Mask R-CNN** is scored twice: its instances are turned into a class map (detections with score >= the
  record's threshold, 0.5 by default; where masks overlap the highest-scoring one wins; background elsewhere) and
  get the same PA / mPA / mIoU as the semantic models; its **mask AP** is COCO-style AP@[.5:.95] of the instances.
  Semantic-only datasets provide instances as connected components of each class.
- **Latency** is the median forward pass at batch 1 at the evaluation size, on the device named in its column;
  **GFLOPs** are counted at the same size; the **receptive field** is the theoretical one of the deepest output pixel.

### Where the numbers came from
{hardware}

The Compare tab runs on the machine serving this page (a Hugging Face Space has 2 CPU cores); its latencies are
measured there, per image, and include resizing to the model's evaluation size and back.

### Reproduce
```bash
pip install -r requirements.txt
python -m segbench run            # the default suite: trains, evaluates, writes leaderboard/records/...
python app.py                     # this app, on http://127.0.0.1:7860
```
Each record's details (Leaderboard tab, select a row) give the exact config and command that produced it.

### Add a model
1. Write a keyword-only builder `my_model(*, num_classes, in_channels=3, ...)` in its family file under
   `segbench/models/` and add it to that file's `BUILDERS` dict (the model sets `task`, `family`, `variant`).
2. Add a run to a suite YAML (`segbench/suites/`), e.g. `{{model: my_model, dataset: camvid, epochs: 50}}`.
3. `python -m segbench run <suite>`: the record appears here and the weights in the Compare tab.
"""


def pick_models(models: dict[str, list[ModelEntry]], domain: str | None, keys: list[str] | None) -> list[ModelEntry]:
    """The entries of ``keys`` that belong to ``domain``. Keys of another domain (a selection left over from the
    previous domain) are dropped; if none is left, the domain's defaults are used. An unknown domain raises
    SegbenchError listing the known ones."""
    if domain not in models:
        known = ", ".join(models) or "none (no weights found)"
        raise SegbenchError(f"domain '{domain}' has no models with weights; known domains: {known}")
    by_key = {e.key: e for e in models[domain]}
    chosen = [by_key[k] for k in dict.fromkeys(keys or []) if k in by_key]
    return chosen or [by_key[k] for k in default_selection(models[domain])]
