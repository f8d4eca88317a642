"""Which models can run here, and their loaded predictors.

A model can run when its weights are in the local store (``<store>/weights/<dataset>/<model>--<id>/``), a record
points at weights on the Hub (``hf://``), or it is in the committed demo pack (``leaderboard/demo``, see
``segbench.weights.demo``). Demo models fill in only the datasets that have no local or Hub model, and none are used when a
Hub models repo is configured (Hub mode takes precedence). Entries are grouped by dataset (the Compare tab's
"domain"), best record mIoU first; the default selection is the best model of each family, a pretrained one (an
ImageNet encoder) before any trained from scratch. Predictors are loaded lazily, once, and cached; they run each
model as its weights were evaluated, and whole-image models run uploads longer than ``SLIDE_ABOVE`` pixels in sliding windows (``predict.LARGE_WINDOW``) instead of one huge forward pass.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import SegbenchError
from ..models import FAMILIES, FAMILY_OF
from ..viz import masks as viz
from ..weights.meta import WeightsMeta
from ..weights.store import CONFIG_FILE, WEIGHTS_FILE, LocalStore, read_meta

if TYPE_CHECKING:
    from ..weights.demo import DemoPack
from .config import MAX_MODELS, AppConfig, dataset_rank, one_line

SLIDE_ABOVE = 2048  # longer side (px, at the model's input) above which whole-image models slide over the upload

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
    split: str = "val"  # the split the record's mIoU is on
    source: str = "store"  # "store" | "hub" | "demo" (the committed demo pack, fp16 weights)
    license: str = ""  # demo models: the training data's licence (and the pretrained encoder's)
    pretrained: bool = False  # its encoder started from pretrained weights (record "pretrained", model_args)
    test_miou: float | None = None  # the record's test mIoU, where the data has a test split

    def label(self, *, with_id: bool = False) -> str:
        """'unet_small (unet) · val mIoU 81.2%' ('· test 75.0%' beside it where the record has a test score;
        '(unet, pretrained)' for a pretrained encoder), with the run id when two runs share a name; '· demo' for
        the pack."""
        score = f"{self.split} mIoU {100 * self.miou:.1f}%" if self.miou is not None else "no record"
        if self.test_miou is not None:
            score += f" · test {100 * self.test_miou:.1f}%"
        family = f"{self.family}, pretrained" if self.pretrained else self.family
        return (f"{self.name} ({family}) · {score}" + (f" · #{self.run_id[:6]}" if with_id else "")
                + (" · demo" if self.source == "demo" else ""))


def model_choices(entries: list[ModelEntry]) -> list[tuple[str, str]]:
    """(label, key) pairs for a dropdown; names used by several runs get the run id."""
    names = [e.name for e in entries]
    return [(e.label(with_id=names.count(e.name) > 1), e.key) for e in entries]


def family_of(model: str) -> str:
    """The family of a builder name (unet_small -> unet, deeplabv3_resnet50 -> deeplab) from the model table; for a
    name it lacks, the first family key in the name; 'other' if none."""
    if model in FAMILY_OF:
        return FAMILY_OF[model]
    flat = model.lower().replace("_", "").replace("-", "")
    return next((key for key in FAMILIES if key in flat), "other")


def discover_models(store_root: str | Path, records: list[dict[str, Any]], *,
                    hub_models: str | None = None, demo: DemoPack | None = None) -> dict[str, list[ModelEntry]]:
    """dataset -> models that can run here: every weights folder in the store, plus records whose weights are on
    the Hub (an ``hf://`` URI, or a run in the ``hub_models`` repos, see hub.hub_weights_uri). A record pointing at
    a store folder lends it its family, variant and mIoU. The verified ``demo`` pack's models are added for the
    datasets that have none of those, unless ``hub_models`` is set. Best mIoU first."""
    store = LocalStore(store_root)
    by_dir = {}
    hub_entries = []
    for record in records:
        uri = str((record.get("weights") or {}).get("uri", ""))
        try:
            local = None if uri.startswith("hf://") or not uri else store.resolve(uri)
        except SegbenchError:
            continue  # a URI outside the store: records are checked on read, this is the second line of defence
        if local is not None and (local / WEIGHTS_FILE).is_file():
            by_dir[str(local.resolve())] = record
            continue
        hub_uri = uri if uri.startswith("hf://") else _hub_uri(record, hub_models)
        if hub_uri:
            entry = _entry(record["dataset"], record["model"], record["id"], hub_uri, record, None)
            hub_entries.append(dataclasses.replace(entry, source="hub"))
    entries: dict[str, ModelEntry] = {}
    for meta_path in sorted((store.root / "weights").glob(f"*/*/{CONFIG_FILE}")):
        folder = meta_path.parent
        if folder.name.startswith(".") or not (folder / WEIGHTS_FILE).is_file() or "--" not in folder.name:
            continue  # half-written (store.save renames a hidden temporary folder) or foreign
        name, run_id = folder.name.rsplit("--", 1)
        record = by_dir.get(str(folder.resolve()))
        meta = None if record else _read_meta(meta_path)
        entry = _entry(folder.parent.name, name, run_id, str(folder), record, meta)
        entries[entry.key] = entry
    for entry in hub_entries:
        entries.setdefault(entry.key, entry)  # local weights win over downloading the same run
    if demo is not None and not hub_models:
        covered = {e.dataset for e in entries.values()}
        for entry in demo_entries(demo):
            if entry.dataset not in covered:  # a dataset with local weights shows those, never a mix
                entries.setdefault(entry.key, entry)
    grouped: dict[str, list[ModelEntry]] = {}
    for entry in entries.values():
        grouped.setdefault(entry.dataset, []).append(entry)
    return {
        dataset: sorted(group, key=lambda e: (-(e.miou if e.miou is not None else -1.0), e.name))
        for dataset, group in sorted(grouped.items(), key=lambda kv: dataset_rank(kv[0]))
    }


def demo_entries(pack: DemoPack) -> list[ModelEntry]:
    """The pack's verified models as entries (weights: their folder inside the pack)."""
    entries = []
    for m in pack.models:
        licence = "; ".join(str(v) for v in (m.get("license") or {}).values())
        entries.append(ModelEntry(
            key=m["key"], dataset=m["dataset"], name=m["name"], run_id=m["run_id"], family=m["family"],
            variant=str(m.get("variant", "")), task=m.get("task", "semantic"), miou=m.get("miou"),
            weights=m["folder"], sha256=None, split=str(m.get("split", "val")), source="demo", license=licence,
            test_miou=m.get("test_miou")))
    return entries


def _hub_uri(record: dict[str, Any], hub_models: str | None) -> str | None:
    if not hub_models:
        return None
    from ..hub import hub_weights_uri

    return hub_weights_uri(record, models=hub_models)


def _entry(dataset: str, name: str, run_id: str, weights: str, record: dict | None,
           meta: WeightsMeta | None) -> ModelEntry:
    if record is not None:
        return ModelEntry(
            key=f"{dataset}/{name}--{run_id}", dataset=dataset, name=name, run_id=run_id, family=record["family"],
            variant=str(record.get("variant", "")), task=record.get("task", "semantic"),
            miou=record["metrics"].get("miou"), weights=weights, sha256=record["weights"].get("sha256"),
            split=str(record.get("split", "val")), pretrained=bool(record.get("pretrained")),
            test_miou=(record.get("test_metrics") or {}).get("miou"),
        )
    builder = meta.model if meta is not None else name
    pretrained = meta is not None and meta.model_args.get("backbone_weights") is not None
    task = meta.task if meta is not None else WeightsMeta.task
    return ModelEntry(key=f"{dataset}/{name}--{run_id}", dataset=dataset, name=name, run_id=run_id,
                      family=family_of(builder), variant=builder, task=task, miou=None,
                      weights=weights, pretrained=pretrained)


def _read_meta(path: Path) -> WeightsMeta | None:
    """The folder's weights config, or None when unreadable or invalid (the entry then shows the folder's name;
    loading the model reports what is wrong)."""
    try:
        return read_meta(path.parent)
    except SegbenchError:
        return None


def default_selection(entries: list[ModelEntry], limit: int = MAX_MODELS) -> list[str]:
    """Keys of one model per family, in FAMILIES order, at most ``limit``: the family's best pretrained model
    (highest record mIoU) if it has one, else its best model. On street scenes this puts the ImageNet-initialised
    CamVid models in front of the small from-scratch ones: the models a user would deploy."""
    best: dict[str, ModelEntry] = {}
    for entry in sorted(entries, key=lambda e: not e.pretrained):  # stable: pretrained first, each best first
        best.setdefault(entry.family, entry)
    keys = list(FAMILIES)
    order = sorted(best, key=lambda f: (keys.index(f) if f in keys else len(keys), f))
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
    """Loaded ``segbench.inference.predict.Predictor`` objects keyed by weights folder (plus its mtime, so retrained weights
    reload). Least recently used are dropped beyond ``capacity``. Loading is serialised by a lock: two users asking
    for the same model load it once."""

    def __init__(self, *, capacity: int = 8, device: str = "cpu", backend: str | None = None,
                 slide_above: int | None = SLIDE_ABOVE) -> None:
        """``backend``: "torch", "onnx" (ONNX Runtime for semantic models when onnxruntime is installed, else
        torch) or None: ``$SEGBENCH_BACKEND``, default "torch" (ONNX Runtime measured slower on 2 CPU cores,
        see segbench.bench.app)."""
        self.capacity, self.device, self.slide_above = capacity, device, slide_above
        self.backend = backend or os.environ.get("SEGBENCH_BACKEND") or "torch"
        self._items: OrderedDict[tuple[str, float], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, entry: ModelEntry):
        """The predictor of ``entry``, loading it on first use. Any failure is one SegbenchError naming the model."""
        try:
            return self._get(entry)
        except SegbenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken weights folder must give a message, not a traceback
            raise SegbenchError(f"{entry.name} ({entry.weights}): could not be loaded ({one_line(exc)}); retrain it "
                                "with 'python -m segbench run' or pick another model") from None

    def _get(self, entry: ModelEntry):
        folder = self._local_folder(entry)
        key = (str(folder), _mtime(folder / WEIGHTS_FILE))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            from ..inference.predict import Predictor

            predictor = Predictor(folder, device=self.device, backend=self._backend(entry),
                                  slide_above=self.slide_above)
            # One tiny forward pass creates the kernels' caches, so the user's first comparison is warm too.
            predictor(torch.zeros(predictor.in_channels, 64, 64, dtype=torch.uint8))
            self._items[key] = predictor
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return predictor

    def __len__(self) -> int:
        return len(self._items)

    def _backend(self, entry: ModelEntry) -> str:
        if self.backend != "onnx" or entry.task != "semantic" or self.device != "cpu":
            return "torch"
        # the runtime runs the graph, onnx writes it on first use: without either the app stays on PyTorch
        usable = all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))
        return "onnx" if usable else "torch"

    @staticmethod
    def _local_folder(entry: ModelEntry) -> Path:
        if entry.weights.startswith("hf://"):
            from ..hub import fetch_weights

            return Path(fetch_weights(entry.weights, entry.sha256 or ""))
        return Path(entry.weights)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


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


# ================================================================ examples


def make_examples(folder: str | Path, domains: list[str], *, per_dataset: int = 2, size: int = 160,
                  demo: DemoPack | None = None) -> list[list]:
    """Example rows [image path, ground-truth path, domain] for the domains that have models: the demo pack's
    verified examples (copied into ``folder``, where Gradio may serve them), synthetic images generated here, and a
    few validation images of real datasets found locally. Failures skip the dataset."""
    from ..data import build_dataset, default_root

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for dataset in domains:
        packed = [e for e in (demo.examples if demo is not None else []) if e["dataset"] == dataset]
        if packed:
            for e in packed:
                image, mask = shutil.copy(e["image"], folder), shutil.copy(e["mask"], folder)
                rows.append([str(image), str(mask), dataset])
            continue
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


def preload(models: dict[str, list[ModelEntry]], cache: PredictorCache) -> None:
    """Load (and warm up) the default models of the first domain, so the first comparison is fast. A model that
    fails here is skipped: it fails again, with a message, when a user picks it."""
    if not models:
        return
    first = next(iter(models.values()))
    by_key = {e.key: e for e in first}
    for key in default_selection(first):
        try:
            cache.get(by_key[key])
        except SegbenchError:
            continue
