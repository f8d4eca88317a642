"""Hub model and dataset cards, and the results repo's ``leaderboard.csv``.

Every number is printed with how it was measured: GMACs with their convention and input size, latency with its
scope, mIoU with its bootstrap 95% CI, the split and the checkpoint selection rule, the hardware class, mask AP
with its ``maxDets``. A key a record lacks is left out, never printed as None. Schema-1 records (GFLOPs, one
latency figure) are read too: GMACs = GFLOPs / 2, their latency is the forward latency. Dataset names, licences
and citations come from the data package's ``DatasetInfo``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml
from huggingface_hub import DatasetCardData, EvalResult, ModelCard, ModelCardData

from ..data import dataset_info
from ..records import io as rec
from ..records.columns import (AP_CONVENTION, BOUNDARY_CONVENTION, BY_KEY, CI_CONVENTION, CI_METHOD, END_TO_END_SCOPE,
    FOLDED, FORWARD_SCOPE, HEADLINE, MACS_CONVENTION, SCORES)
from ..records.io import markdown_code as code
from ..records.io import markdown_text as esc
from .names import RUN_CONFIG_FILE, RUNS_DIR, TABLE_FILE

UNKNOWN_TERMS = "unknown: check the dataset's own terms before use"
SCHEMA1_GMACS = "GFLOPs / 2 of a schema-1 record (1 multiply-add = 2 FLOPs); aux head not counted"
SCHEMA1_LATENCY = "batch-1 forward through the predict path (schema-1 record)"
# (record key, model-index metric type, display name): the scores of columns.COLUMNS with a card type, headline first
_CARD_METRICS = [(c.key, c.card, c.long_name) for c in sorted(SCORES, key=lambda c: c.key != HEADLINE) if c.card]
_NUMBER = (int, float)


# ---------------------------------------------------------------------------------------------------------------
# Reading a record (schema 2, or schema 1 where a key moved)
# ---------------------------------------------------------------------------------------------------------------

def data_terms(dataset: str) -> tuple[str | None, str]:
    """(Hub licence id or None, printable terms with the citation) from the dataset's ``DatasetInfo``;
    'unknown: ...' for a dataset without static info (COCO, folder: their terms come with the files)."""
    info = dataset_info(dataset)
    if info is None or not info.license:
        return (info.hub_license if info else None), UNKNOWN_TERMS
    return info.hub_license, info.license + (f". Citation: {info.citation}" if info.citation else "")


def dataset_label(dataset: str) -> str:
    """How cards name a dataset: ``DatasetInfo.label`` ("CamVid (street scenes)"), else its key."""
    info = dataset_info(dataset)
    return info.label if info else dataset


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, _NUMBER) and not isinstance(value, bool) else None


def gmacs(efficiency: dict[str, Any]) -> tuple[float | None, str]:
    """(GMACs = multiply-adds / 1e9, the convention they follow): ``efficiency.gmacs``, else a schema-1
    ``gflops / 2`` (torch's FlopCounterMode counted a multiply-add as 2 FLOPs)."""
    if _number(efficiency.get("gmacs")) is not None:
        return float(efficiency["gmacs"]), MACS_CONVENTION
    if _number(efficiency.get("gflops")) is not None:
        return float(efficiency["gflops"]) / 2, SCHEMA1_GMACS
    return None, ""


def latency_ms(efficiency: dict[str, Any]) -> dict[str, Any]:
    """forward_ms(+_std, scope) and end_to_end_ms(+_std, scope); a schema-1 ``ms`` is the forward latency."""
    lat = efficiency.get("latency") or {}
    if "forward_ms" in lat or "ms" not in lat:
        return lat
    return {**lat, "forward_ms": lat.get("ms"), "forward_ms_std": lat.get("ms_std"), "forward_scope": SCHEMA1_LATENCY}


def miou_ci(metrics: dict[str, Any] | None) -> tuple[float, float] | None:
    """The bootstrap 95% CI of mIoU, None when the record has none (fewer than 2 images, or schema 1)."""
    ci = (metrics or {}).get("miou_ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_number(v) is not None for v in ci):
        return float(ci[0]), float(ci[1])
    return None


def selection_rule(record: dict[str, Any]) -> str | None:
    """How the reported checkpoint was chosen, in words; None when the record does not say."""
    sel = record.get("selection") or {}
    checkpoint = sel.get("checkpoint")
    if checkpoint == "final":
        return "the final checkpoint (no selection)"
    if checkpoint == "holdout":
        parts = [f"{sel['holdout_images']} images" if sel.get("holdout_images") is not None else None,
                 f"seed {sel['holdout_seed']}" if sel.get("holdout_seed") is not None else None]
        where = ", ".join(p for p in parts if p)
        epoch = f", epoch {sel['selected_epoch']}" if sel.get("selected_epoch") is not None else ""
        return f"best mIoU on a holdout slice of train{f' ({where})' if where else ''}{epoch}"
    return str(checkpoint) if checkpoint else None


def max_dets(metrics: dict[str, Any]) -> int | None:
    """The detections per image COCO AP is computed at (the largest ``max_dets``), None when not recorded."""
    dets = metrics.get("max_dets")
    return int(dets[-1]) if isinstance(dets, (list, tuple)) and dets else None


# ---------------------------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------------------------

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


def _forward_scope(latency: dict[str, Any]) -> str:
    """segbench's own words for what the forward latency covers (a record's text is never shown as ours)."""
    if latency.get("forward_scope") == SCHEMA1_LATENCY:
        return SCHEMA1_LATENCY
    return FORWARD_SCOPE + (FOLDED if latency.get("batchnorm_folded") else "")


def _esc(value: Any) -> str | None:
    return None if value is None else esc(value)


def _known(rows: Iterable[list[Any]]) -> list[list[Any]]:
    """Rows whose value (second cell) is known: a missing key is left out, never printed as None."""
    return [row for row in rows if row[1] is not None and row[1] != ""]


def _fixed(value: Any, digits: int) -> str | None:
    return f"{value:.{digits}f}" if _number(value) is not None else None


def _ms(value: Any, std: Any) -> str | None:
    """``value ± std`` with 2 decimals (milliseconds, counts), None when ``value`` is unknown."""
    if _number(value) is None:
        return None
    return f"{value:.2f} ± {std:.2f}" if _number(std) is not None else f"{value:.2f}"


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


# ---------------------------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------------------------

def _eval_results(record: dict[str, Any]) -> list[EvalResult]:
    """``model-index`` entries: every scalar metric on the reported split and, when scored, on the test split."""
    scored = [(record["split"], record["metrics"])]
    if isinstance(record.get("test_metrics"), dict):
        scored.append(("test", record["test_metrics"]))
    return [
        EvalResult(
            task_type="image-segmentation",
            task_name=f"{record['task'].capitalize()} Segmentation",
            dataset_type=record["dataset"],
            dataset_name=dataset_label(record["dataset"]),
            dataset_split=split,
            metric_type=metric_type,
            metric_name=name,
            metric_value=round(float(metrics[key]), 4),
        )
        for split, metrics in scored
        for key, metric_type, name in _CARD_METRICS
        if _number(metrics.get(key)) is not None
    ]


def _metric_note(key: str, metrics: dict[str, Any]) -> str:
    """How one metric was measured, for the third column of the results table."""
    if key == HEADLINE:
        ci = miou_ci(metrics)
        if ci is None:
            return ""
        resamples = (metrics.get("ci") or {}).get("resamples")
        return f"95% CI [{ci[0]:.4f}, {ci[1]:.4f}], {CI_METHOD}" + (f", {resamples} resamples" if resamples else "")
    convention = BY_KEY[key].convention
    if convention == BOUNDARY_CONVENTION:
        ratio = metrics.get("boundary_dilation_ratio")
        return convention + (f"; band {ratio:.0%} of the image diagonal" if _number(ratio) is not None else "")
    if convention == AP_CONVENTION:
        dets = max_dets(metrics)
        return convention + (f", maxDets {dets}" if dets else "")
    return convention


def _results_sections(record: dict[str, Any]) -> list[str]:
    """The metric tables (reported split, test split when scored) and the per-class table."""
    m = record["metrics"]
    header = ["metric", "value", "how measured"]
    rows = _known([[name, m.get(key), _metric_note(key, m)] for key, _, name in _CARD_METRICS])
    sections = ["## Results", f"On the `{record['split']}` split:", _table(header, rows)]
    test = record.get("test_metrics")
    if isinstance(test, dict):
        test_rows = _known([[name, test.get(key), _metric_note(key, test)] for key, _, name in _CARD_METRICS])
        sections += ["On the `test` split (same checkpoint):", _table(header, test_rows)]
    if isinstance(m.get("iou"), dict):
        boundary = m.get("boundary_iou") if isinstance(m.get("boundary_iou"), dict) else None
        columns = ["class", "IoU", "accuracy", "Dice"] + (["Boundary IoU"] if boundary else [])
        per_class = [
            [name, m["iou"].get(name), (m.get("accuracy") or {}).get(name), (m.get("dice") or {}).get(name)]
            + ([boundary.get(name)] if boundary else [])
            for name in record["class_names"]
        ]
        sections += [f"### Per class ({', '.join(columns[1:])}; – = class absent)", _table(columns, per_class)]
    return sections


def _efficiency_section(record: dict[str, Any]) -> list[str]:
    e = record["efficiency"]
    macs, convention = gmacs(e)
    size = "x".join(str(v) for v in e.get("macs_input") or e.get("flops_input") or [])
    lat = latency_ms(e)
    setup = [f"device {esc(lat['device'])}" if lat.get("device") else None,
             f"batch {lat['batch_size']}" if lat.get("batch_size") else None,
             "x".join(str(v) for v in lat.get("image_size") or []) or None, esc(lat.get("precision") or "fp32"),
             f"inputs: {esc(lat['inputs'])}" if lat.get("inputs") else None]
    rows = _known([
        ["parameters", e.get("params"), ""],
        ["GMACs", macs, convention + (f"; input {size} (C x H x W)" if size else "")],
        ["GMACs with aux head", e.get("gmacs_aux"), "as above, auxiliary head included"],
        ["latency, forward (ms)", _ms(lat.get("forward_ms"), lat.get("forward_ms_std")), _forward_scope(lat)],
        ["latency, end to end (ms)", _ms(lat.get("end_to_end_ms"), lat.get("end_to_end_ms_std")), END_TO_END_SCOPE],
        ["latency setup", ", ".join(s for s in setup if s) or None, "± = standard deviation over the timed runs"],
        ["mean detections per image", _ms(lat.get("mean_detections"), None), "instance models, on the timed images"],
        ["receptive field (px)", e.get("receptive_field"), ""],
        ["output stride", e.get("output_stride"), ""],
    ])
    return ["## Efficiency", _table(["", "value", "how measured"], rows)]


def _training_section(record: dict[str, Any]) -> list[str]:
    t, hardware = record["training"], record.get("hardware") or {}
    budget = ", ".join(f"{v} {k}" for k, v in (t.get("budget") or {}).items() if v is not None) or None
    track = {"steps": "steps (the LR schedule follows optimizer steps)",
             "time": "time (LR progress = max(step, wall-time fraction); a separately labelled track)"}.get(t.get("track"), t.get("track"))
    capped = {True: "yes: a wall-clock safety stop ended training before its budget", False: "no"}.get(t.get("capped"))
    rows = _known([
        ["epochs", t.get("epochs")], ["optimizer steps", t.get("steps")], ["budget", budget], ["track", track],
        ["capped", capped], ["training time (s)", _fixed(t.get("seconds"), 1)],
        ["images / s", _fixed(t.get("images_per_s"), 1)],
        ["training device", _esc(t.get("device"))], ["loader", _esc(t.get("loader"))],
        ["hardware class", record.get("hardware_class")],
        ["hardware", ", ".join(f"{esc(k)}: {esc(v)}" for k, v in hardware.items()) or None],
        ["seed", record.get("seed")], ["date", _esc(record.get("date"))], ["git commit", _esc(record.get("git_commit"))],
        ["versions", ", ".join(f"{esc(k)} {esc(v)}" for k, v in (record.get("versions") or {}).items()) or None],
    ])
    return ["## Training", _table(["", ""], rows)]


def _pretrained_section(record: dict[str, Any]) -> list[str]:
    pretrained = record.get("pretrained")
    if not isinstance(pretrained, dict) or not pretrained.get("source"):
        return []
    sha = f" (sha256 `{pretrained['sha256']}`)" if pretrained.get("sha256") else ""
    return ["## Pretrained backbone", f"Initialised from {code(pretrained['source'])}{sha}; check its licence too."]


def _intro(record: dict[str, Any]) -> str:
    scope = [f"Scores are on the `{record['split']}` split"]
    rule = selection_rule(record)
    if rule:
        scope.append(f"the reported checkpoint is {rule}")
    if record.get("hardware_class"):
        scope.append(f"trained and timed on `{record['hardware_class']}` hardware")
    return (
        f"`{record['model']}` ({record['family']}, {esc(record['variant'])}) trained by segbench on "
        f"**{dataset_label(record['dataset'])}** "
        f"({record['num_classes']} classes: {', '.join(map(esc, record['class_names']))}). "
        + "; ".join(scope) + ". Metric values are fractions in [0, 1]."
    )


def model_card(record: dict[str, Any], *, repo_id: str, runs: Iterable[str] = ()) -> ModelCard:
    """The model card of ``repo_id`` describing ``record`` (the run at the repo root); ``runs`` lists the ids
    under ``runs/``. Hub metadata: library, tags, datasets, licence of the training data, ``model-index``."""
    dataset, task = record["dataset"], record["task"]
    licence_id, terms = data_terms(dataset)
    results = _eval_results(record)
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
    run_list = sorted(set(runs) | {record["id"]})
    sections = [
        f"# {record['model']} on {dataset_label(dataset)}",
        _intro(record),
        *_results_sections(record),
        *_efficiency_section(record),
        *_training_section(record),
        *_pretrained_section(record),
        f"Full configuration (`{RUNS_DIR}/{record['id']}/{RUN_CONFIG_FILE}`):",
        "```yaml\n" + run_config_yaml(record).decode("utf-8") + "```",
        "## Reproduce",
        "```bash\n" + reproduce_command(record, repo_id) + "\n```",
        "## Use",
        "```python\nfrom huggingface_hub import snapshot_download\nfrom segbench.weights.store import load_model\n\n"
        f'folder = snapshot_download("{repo_id}", allow_patterns=["model.*"])\n'
        "model, meta = load_model(folder)  # safetensors + model.json; no pickle\n```",
        "## Training data licence",
        f"{dataset_label(dataset)}: {terms.rstrip('.')}. "
        "These weights are derived from that data: check its terms before use.",
        "## Files",
        f"`model.safetensors` (sha256 `{record['weights']['sha256']}`), `model.json` (config that rebuilds the model), "
        f"`record.json` (the full result record). Every pushed run is kept under `{RUNS_DIR}/<id>/` "
        f"(the same three files plus `{RUN_CONFIG_FILE}`): "
        + ", ".join(f"`{r}`" for r in run_list) + ".",
    ]
    return ModelCard("---\n" + data.to_yaml() + "\n---\n\n" + "\n\n".join(sections) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# Results dataset: leaderboard.csv and its card
# ---------------------------------------------------------------------------------------------------------------

# Columns the table states next to the numbers, read here from each record so the CSV has them whichever
# records.COLUMNS version built the frame (a column the frame already has is kept as it is).
_CONVENTION_COLUMNS = {
    "gmacs": lambda r: gmacs(r["efficiency"])[0],
    "forward_ms": lambda r: latency_ms(r["efficiency"]).get("forward_ms"),
    "end_to_end_ms": lambda r: latency_ms(r["efficiency"]).get("end_to_end_ms"),
    "miou_ci_low": lambda r: (miou_ci(r["metrics"]) or (None, None))[0],
    "miou_ci_high": lambda r: (miou_ci(r["metrics"]) or (None, None))[1],
    "hardware_class": lambda r: r.get("hardware_class"),
    "selection": lambda r: (r.get("selection") or {}).get("checkpoint"),
    "max_dets": lambda r: max_dets(r["metrics"]),
    "pretrained_sha256": lambda r: (r.get("pretrained") or {}).get("sha256"),
}

_COLUMN_NOTES = [
    ("miou, miou_ci_low, miou_ci_high", f"mIoU on `split` with its 95% CI ({CI_CONVENTION})"),
    *((c.key, c.convention) for c in SCORES if c.key != HEADLINE and c.task == "semantic"),
    ("gmacs", MACS_CONVENTION + " (schema-1 records: GFLOPs / 2)"),
    ("forward_ms", FORWARD_SCOPE + "; batch 1"),
    ("end_to_end_ms", END_TO_END_SCOPE + "; batch 1"),
    (", ".join(c.key for c in SCORES if c.task == "instance") + ", max_dets",
     AP_CONVENTION + " at `max_dets` detections per image (instance models)"),
    ("selection", "checkpoint rule: `final`, or `holdout` (best on a holdout slice of train)"),
    ("hardware_class", "`cpu` or `cuda`: compare latency within one class only"),
]


def _by_key(records: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["dataset"], r["model"], r["id"]): r for r in records}


def results_table(records: list[dict[str, Any]]) -> bytes:
    """The aggregated CSV of the results repo: records.COLUMNS (without the local path), the convention columns
    above, and the weights URI; one row per record, best mIoU first within each dataset."""
    frame = rec.records_frame(records)
    keyed = _by_key(records)
    rows = [keyed[k] for k in zip(frame["dataset"], frame["model"], frame["id"])]
    for column, read in _CONVENTION_COLUMNS.items():
        if column not in frame.columns:
            frame[column] = [read(r) for r in rows]
    frame["weights_uri"] = [r["weights"]["uri"] for r in rows]
    return rec.csv_text(frame.drop(columns=["path"], errors="ignore")).encode("utf-8")


def _miou_cell(record: dict[str, Any]) -> str:
    ci = miou_ci(record["metrics"])
    return _fmt(record["metrics"]["miou"]) + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")


def results_card(records: list[dict[str, Any]], *, repo_id: str) -> str:
    """The results repo's dataset card: what is in it, a summary table, what each convention column means."""
    data = DatasetCardData(
        pretty_name="segbench results",
        tags=["segbench", "image-segmentation", "leaderboard"],
        configs=[{"config_name": "default", "data_files": TABLE_FILE}],
    )
    ordered = sorted(records, key=lambda r: (r["dataset"], -float(r["metrics"]["miou"])))
    rows = []
    for r in ordered:
        lat = latency_ms(r["efficiency"])
        rows.append([dataset_label(r["dataset"]), r["model"], r["variant"], r["split"], _miou_cell(r),
                     r["efficiency"].get("params"), gmacs(r["efficiency"])[0], _ms(lat.get("forward_ms"), None),
                     _ms(lat.get("end_to_end_ms"), None), r.get("hardware_class") or lat.get("device"),
                     (r.get("selection") or {}).get("checkpoint")])
    header = ["dataset", "model", "variant", "split", "mIoU [95% CI]", "params", "GMACs", "forward ms",
              "end-to-end ms", "hardware", "checkpoint"]
    body = "\n\n".join([
        "# segbench results",
        f"Scores of every run pushed by `python -m segbench push`: one record per run under `records/<dataset>/`, "
        f"aggregated in `{TABLE_FILE}`. Weights live in the model repos each record's `weights.uri` names. "
        f"Read it with `python -m segbench pull --results-repo {repo_id}`.",
        _table(header, rows),
        "## Columns",
        "\n".join(f"- `{names}`: {note}" for names, note in _COLUMN_NOTES),
    ])
    return "---\n" + data.to_yaml() + "\n---\n\n" + body + "\n"
