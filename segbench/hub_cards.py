"""Hub model and dataset cards: metadata (library, tags, datasets, data licence, ``model-index``), metric and
per-class tables, training and hardware, the reproduction command; the aggregated results table."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import yaml
from huggingface_hub import DatasetCardData, EvalResult, ModelCard, ModelCardData

from . import records as rec

RUN_CONFIG_FILE = "config.yaml"  # the training config, for 'python -m segbench train'
TABLE_FILE = "leaderboard.csv"
RUNS_DIR = "runs"



# Hub licence id (None = no Hub id) and the terms to print, for the datasets segbench knows.
_DATA_TERMS: dict[str, tuple[str | None, str]] = {
    "camvid": ("cc-by-nc-4.0", "CC BY-NC 4.0 (non-commercial, research use); cite Brostow et al. 2008"),
    "isbi2012": (None, "ISBI 2012 challenge data; cite Cardona et al. 2010 and Arganda-Carreras et al. 2015"),
    "balloon": ("mit", "MIT (annotations, matterport/Mask_RCNN); images from Flickr under their own terms"),
    "coco": ("cc-by-4.0", "COCO annotations CC BY 4.0; images under the Flickr terms of use"),
    "synthetic": (None, "generated on the fly by segbench (no third-party data)"),
}
_PRETTY = {"camvid": "CamVid", "isbi2012": "ISBI 2012 EM segmentation", "balloon": "Balloon", "coco": "COCO",
           "synthetic": "segbench synthetic shapes"}
# (record key, model-index metric type, display name)
_CARD_METRICS = [
    ("miou", "mean_iou", "mIoU"),
    ("pixel_accuracy", "accuracy", "pixel accuracy"),
    ("mean_pixel_accuracy", "mean_accuracy", "mean pixel accuracy"),
    ("fwiou", "frequency_weighted_iou", "FWIoU"),
    ("mean_dice", "dice", "mean Dice"),
    ("mask_ap", "mask_ap", "mask AP"),
    ("box_ap", "box_ap", "box AP"),
]


def data_terms(dataset: str) -> tuple[str | None, str]:
    """(Hub licence id or None, printable terms) of a dataset: the data package's DatasetInfo (licence and
    citation) when it has one for ``dataset``, else segbench's table, else 'unknown'."""
    hub_id, fallback = _DATA_TERMS.get(dataset, (None, "unknown: check the dataset's own terms before use"))
    try:
        from .data import DATASETS  # the dataset modules hold their DatasetInfo as INFO (no files are read)

        builder = DATASETS.get(dataset)
        module = sys.modules.get(getattr(builder, "__module__", ""))
        info = getattr(builder, "info", None) or getattr(module, "INFO", None)
    except Exception:  # the data package is optional here: a card must not fail on it
        info = None
    if info is None or not getattr(info, "license", ""):
        return hub_id, fallback
    citation = getattr(info, "citation", "")
    return hub_id, str(info.license) + (f". Citation: {citation}" if citation else "")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: Iterable[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def run_config_yaml(record: dict[str, Any]) -> bytes:
    """The run's full flat config as the YAML that ``python -m segbench train`` reads."""
    return yaml.safe_dump(record["config"], sort_keys=False, allow_unicode=True).encode("utf-8")


def reproduce_command(record: dict[str, Any], repo_id: str) -> str:
    """Shell lines that retrain this run: fetch its ``config.yaml`` from the model repo, train on it."""
    path = f"{RUNS_DIR}/{record['id']}/{RUN_CONFIG_FILE}"
    folder = repo_id.split("/")[1]
    return (
        f"hf download {repo_id} {path} --local-dir {folder}\n"
        f"python -m segbench train {folder}/{path}  # add data_root=/path/to/{record['dataset']} if needed"
    )


def model_card(record: dict[str, Any], *, repo_id: str, runs: Iterable[str] = ()) -> ModelCard:
    """The model card of ``repo_id`` describing ``record`` (the run at the repo root); ``runs`` lists the ids
    under ``runs/``. Hub metadata: library, tags, datasets, licence of the training data, ``model-index``."""
    m, e, t = record["metrics"], record["efficiency"], record["training"]
    dataset, split = record["dataset"], record["split"]
    licence_id, terms = data_terms(dataset)
    task = record["task"]
    results = [
        EvalResult(
            task_type="image-segmentation",
            task_name=f"{task.capitalize()} Segmentation",
            dataset_type=dataset,
            dataset_name=_PRETTY.get(dataset, dataset),
            dataset_split=split,
            metric_type=metric_type,
            metric_name=name,
            metric_value=round(float(m[key]), 4),
        )
        for key, metric_type, name in _CARD_METRICS
        if isinstance(m.get(key), (int, float))
    ]
    data = ModelCardData(
        model_name=repo_id.split("/")[1],
        library_name="pytorch",
        pipeline_tag="image-segmentation",
        license=licence_id,
        datasets=[dataset],
        metrics=sorted({r.metric_type for r in results}),
        tags=["segbench", "image-segmentation", f"{task}-segmentation", record["family"], record["model"], dataset,
              "safetensors"],
        eval_results=results,
    )
    latency = e.get("latency") or {}
    hardware = record.get("hardware") or {}
    per_class = [
        [name, m.get("iou", {}).get(name), m.get("accuracy", {}).get(name), (m.get("dice") or {}).get(name)]
        for name in record["class_names"]
    ] if isinstance(m.get("iou"), dict) else []
    run_list = sorted(set(runs) | {record["id"]})
    sections = [
        f"# {record['model']} on {_PRETTY.get(dataset, dataset)}",
        f"`{record['model']}` ({record['family']}, {record['variant']}) trained by segbench on **{dataset}** "
        f"({record['num_classes']} classes: {', '.join(record['class_names'])}). Scores are on the `{split}` split; "
        "metric values are fractions in [0, 1].",
        "## Results",
        _table(["metric", "value"], [[name, m.get(key)] for key, _, name in _CARD_METRICS if m.get(key) is not None]),
    ]
    if per_class:
        sections += ["### Per class (IoU, accuracy, Dice; – = class absent)",
                     _table(["class", "IoU", "accuracy", "Dice"], per_class)]
    sections += [
        "## Efficiency",
        _table(["", ""], [
            ["parameters", e.get("params")],
            ["GFLOPs", e.get("gflops")],
            ["GFLOPs input (C, H, W)", "x".join(str(v) for v in e.get("flops_input") or []) or None],
            ["receptive field (px)", e.get("receptive_field")],
            ["output stride", e.get("output_stride")],
            ["latency (ms, batch 1)", latency.get("ms")],
            ["latency device", latency.get("device")],
        ]),
        "## Training",
        _table(["", ""], [
            ["epochs", t.get("epochs")],
            ["training time (s)", t.get("seconds")],
            ["images / s", t.get("images_per_s")],
            ["training device", t.get("device")],
            ["hardware", ", ".join(f"{k}: {v}" for k, v in hardware.items()) or None],
            ["seed", record["seed"]],
            ["date", record["date"]],
            ["git commit", record.get("git_commit")],
            ["versions", ", ".join(f"{k} {v}" for k, v in (record.get("versions") or {}).items()) or None],
        ]),
        f"Full configuration (`{RUNS_DIR}/{record['id']}/{RUN_CONFIG_FILE}`):",
        "```yaml\n" + run_config_yaml(record).decode("utf-8") + "```",
        "## Reproduce",
        "```bash\n" + reproduce_command(record, repo_id) + "\n```",
        "## Use",
        "```python\nfrom huggingface_hub import snapshot_download\nfrom segbench.store import load_model\n\n"
        f'folder = snapshot_download("{repo_id}", allow_patterns=["model.*"])\n'
        "model, meta = load_model(folder)  # safetensors + model.json; no pickle\n```",
        "## Training data licence",
        f"{_PRETTY.get(dataset, dataset)}: {terms}. "
        "These weights are derived from that data: check its terms before use.",
        "## Files",
        f"`model.safetensors` (sha256 `{record['weights']['sha256']}`), `model.json` (config that rebuilds the model), "
        f"`record.json` (the full result record). Every pushed run is kept under `{RUNS_DIR}/<id>/` "
        f"(the same three files plus `{RUN_CONFIG_FILE}`): "
        + ", ".join(f"`{r}`" for r in run_list) + ".",
    ]
    return ModelCard("---\n" + data.to_yaml() + "\n---\n\n" + "\n\n".join(sections) + "\n")


def results_table(records: list[dict[str, Any]]) -> bytes:
    """The aggregated CSV of the results repo: records.COLUMNS (without the local path) plus the weights URI."""
    frame = rec.records_frame(records)
    uris = {(r["dataset"], r["model"], r["id"]): r["weights"]["uri"] for r in records}
    frame["weights_uri"] = [uris[k] for k in zip(frame["dataset"], frame["model"], frame["id"])]
    return frame.drop(columns=["path"]).to_csv(index=False, lineterminator="\n").encode("utf-8")


def results_card(records: list[dict[str, Any]], *, repo_id: str) -> str:
    data = DatasetCardData(
        pretty_name="segbench results",
        tags=["segbench", "image-segmentation", "leaderboard"],
        configs=[{"config_name": "default", "data_files": TABLE_FILE}],
    )
    frame = rec.records_frame(records)
    rows = [
        [r.dataset, r.model, r.variant, r.miou, r.pixel_accuracy, r.params, r.latency_ms, r.latency_device]
        for r in frame.itertuples()
    ]
    body = "\n\n".join([
        "# segbench results",
        f"Scores of every run pushed by `python -m segbench push`: one record per run under `records/<dataset>/`, "
        f"aggregated in `{TABLE_FILE}`. Weights live in the model repos each record's `weights.uri` names. "
        f"Read it with `python -m segbench pull --results-repo {repo_id}`.",
        _table(["dataset", "model", "variant", "mIoU", "pixel acc.", "params", "latency ms", "device"], rows),
    ])
    return "---\n" + data.to_yaml() + "\n---\n\n" + body + "\n"
