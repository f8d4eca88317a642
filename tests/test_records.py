import json

import pytest

from segbench.records.io import RecordError, load_frame, load_records, validate_record, write_record


def make_record(**over):
    """A minimal valid schema-2 record."""
    record = {
        "schema": 2, "id": "abcdef123456", "group": "fedcba654321", "hardware_class": "cpu", "model": "unet_small",
        "family": "unet", "variant": "same-16", "task": "semantic", "dataset": "synthetic", "split": "val",
        "num_classes": 2, "class_names": ["a", "b"],
        "metrics": {"pixel_accuracy": 0.9, "mean_pixel_accuracy": 0.8, "miou": 0.7, "fwiou": 0.85, "mean_dice": 0.8,
                    "iou": {"a": 0.9, "b": 0.5}, "miou_ci": [0.6, 0.8], "mean_boundary_iou": 0.5,
                    "per_image": {"intersection": [[4, 1], [5, 0]], "union": [[5, 2], [5, 0]]}},
        "test_metrics": {"miou": 0.65, "pixel_accuracy": 0.88},
        "selection": {"checkpoint": "final", "holdout_images": None, "holdout_seed": None, "selected_epoch": 1},
        "efficiency": {"params": 10, "gmacs": 0.05, "latency": {"device": "cpu", "forward_ms": 1.0, "end_to_end_ms": 2.0}},
        "training": {"seconds": 1.0, "device": "cpu", "epochs": 1, "steps": 4, "capped": False, "track": "steps"},
        "config": {}, "seed": 0, "versions": {}, "git_commit": None, "date": "2026-01-01T00:00:00+00:00",
        "weights": {"sha256": "0" * 64, "uri": "local:synthetic/unet_small--abcdef123456"}, "hardware": {},
    }
    record.update(over)
    return record


def schema1_record(**over):
    """A schema-1 record as the runner wrote them before schema 2."""
    record = {
        "schema": 1, "id": "0123456789ab", "model": "unet_small", "family": "unet", "variant": "same-16",
        "task": "semantic", "dataset": "synthetic", "split": "val", "num_classes": 2, "class_names": ["a", "b"],
        "metrics": {"pixel_accuracy": 0.9, "mean_pixel_accuracy": 0.8, "miou": 0.7, "fwiou": 0.85, "mean_dice": 0.8},
        "efficiency": {"params": 10, "gflops": 0.2, "latency": {"ms": 3.0, "ms_std": 0.1, "device": "AMD EPYC (2 cores)"}},
        "training": {"seconds": 20.0, "device": "AMD EPYC (2 cores)", "epochs": 1, "best_epoch": 1, "stopped_early": True},
        "config": {"epochs": 5, "max_train_seconds": 20}, "seed": 0, "versions": {}, "git_commit": None,
        "date": "2025-01-01T00:00:00+00:00", "hardware": {},
        "weights": {"sha256": "0" * 64, "uri": "local:synthetic/unet_small--0123456789ab"},
    }
    record.update(over)
    if "weights" not in over:  # the run's own store URI
        record["weights"]["uri"] = f"local:{record['dataset']}/{record['model']}--{record['id']}"
    return record


def test_write_and_load_roundtrip(tmp_path):
    record = make_record()
    record["metrics"].update(miou=0.9, miou_ci=[0.85, 0.95])  # class b absent: neither in the truth nor predicted
    record["metrics"]["iou"]["b"] = float("nan")
    record["metrics"]["per_image"] = {"intersection": [[4, 0], [5, 0]], "union": [[5, 0], [5, 0]]}
    path = write_record(record, tmp_path)
    assert path == tmp_path / "records" / "synthetic" / "unet_small--abcdef123456.json"
    stored = json.loads(path.read_text())
    assert stored["metrics"]["iou"]["b"] is None  # NaN stored as null
    frame, problems = load_frame(tmp_path)
    assert problems == [] and list(frame["model"]) == ["unet_small"] and frame.loc[0, "val_miou"] == 0.9
    assert not list(path.parent.glob(".*tmp"))  # no temporary files left


def test_malformed_records_are_skipped_by_name(tmp_path):
    write_record(make_record(), tmp_path)
    folder = tmp_path / "records" / "synthetic"
    (folder / "broken.json").write_text("{not json")
    (folder / "partial.json").write_text(json.dumps({**make_record(), "metrics": {"miou": 7}}))
    records, problems = load_records(tmp_path)
    assert len(records) == 1 and len(problems) == 2
    assert any("broken.json" in p for p in problems) and any("partial.json" in p and "metrics.miou must be in [0.0, 1.0]" in p for p in problems)


@pytest.mark.parametrize("field", ["model", "metrics", "weights", "efficiency"])
def test_missing_fields_rejected(field):
    record = make_record()
    del record[field]
    with pytest.raises(RecordError, match=field):
        validate_record(record)


def test_invalid_record_is_never_written(tmp_path):
    with pytest.raises(RecordError):
        write_record(make_record(metrics={"miou": 1.5}), tmp_path)
    assert not (tmp_path / "records").exists() or not list((tmp_path / "records").rglob("*.json"))


@pytest.mark.parametrize("change, message", [
    ({"metrics": {"miou": float("inf")}}, "metrics.miou must be a finite number"),
    ({"metrics": {"miou": 0.7, "miou_ci": [0.8, 0.6]}}, "miou_ci low"),
    ({"metrics": {"miou": 0.7, "per_image": {"intersection": [[3]], "union": [[2]]}}}, "intersection <= union"),
    ({"test_metrics": {"miou": 1.2}}, "test_metrics.miou must be in"),
    ({"efficiency": {"params": -1, "latency": {"device": "cpu"}}}, "efficiency.params must be >= 0"),
    ({"training": {"seconds": 1.0, "device": "cpu", "capped": "no", "track": "steps"}}, "training.capped"),
    ({"training": {"seconds": 1.0, "device": "cpu", "capped": False, "track": "wall"}}, "training.track"),
    ({"training": {"seconds": 1.0, "device": "cpu", "capped": False, "track": "steps", "memory_format": "nhwc"}},
     "training.memory_format"),
    ({"hardware_class": "tpu"}, "hardware_class"),
    ({"schema": 3}, "schema 3 is not 2"),
])
def test_out_of_range_values_rejected(change, message):
    with pytest.raises(RecordError, match=message):
        validate_record(make_record(**change))


def test_schema1_records_are_migrated_on_read(tmp_path):
    folder = tmp_path / "records" / "synthetic"
    folder.mkdir(parents=True)
    (folder / "unet_small--0123456789ab.json").write_text(json.dumps(schema1_record()))
    (folder / "gpu--0123456789ac.json").write_text(json.dumps(schema1_record(
        id="0123456789ac", training={"seconds": 1.0, "device": "NVIDIA H200", "epochs": 2}, config={"epochs": 2})))
    (folder / "odd--0123456789ad.json").write_text(json.dumps(schema1_record(
        training={"seconds": 1.0, "device": "abacus", "epochs": 1})))
    records, problems = load_records(tmp_path)
    assert len(records) == 2 and len(problems) == 1
    assert "odd--" in problems[0] and "cannot tell the hardware class" in problems[0] and "\n" not in problems[0]
    cpu, gpu = sorted(records, key=lambda r: r["hardware_class"])
    assert cpu["schema"] == 2 and cpu["hardware_class"] == "cpu" and gpu["hardware_class"] == "cuda"
    assert cpu["efficiency"]["gmacs"] == 0.1 and cpu["efficiency"]["latency"]["forward_ms"] == 3.0
    assert cpu["efficiency"]["latency"]["end_to_end_ms"] is None
    assert cpu["selection"]["checkpoint"] == "best-val (schema 1)"
    assert cpu["training"]["capped"] is True and cpu["training"]["track"] == "time"
    assert gpu["training"]["capped"] is False and gpu["training"]["track"] == "steps"


def test_committed_leaderboard_loads():
    """Every record shipped under leaderboard/ (schema 1 at the time of writing) loads as schema 2."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "leaderboard"
    records, problems = load_records(root)
    assert problems == [] and records and all(r["schema"] == 2 for r in records)
    frame, _ = load_frame(root)
    assert frame["gmacs"].notna().all() and set(frame["hardware_class"]) <= {"cpu", "cuda"}


def test_flat_columns_and_latency_alias(tmp_path):
    write_record(make_record(test_metrics=None), tmp_path)
    frame, _ = load_frame(tmp_path)
    row = frame.iloc[0]
    assert (row["miou_ci_low"], row["miou_ci_high"]) == (0.6, 0.8) and row["test_miou"] is None
    assert row["split"] == row["reported_split"] == "val" and row["val_miou"] == row["miou"] == 0.7
    assert row["latency_ms"] == row["end_to_end_ms"] == 2.0 and row["forward_ms"] == 1.0
    assert row["gmacs"] == 0.05 and row["gflops"] == 0.1 and row["hardware_class"] == "cpu"
    assert row["capped"] is False or row["capped"] == False  # noqa: E712 (numpy bool)
    assert (row["track"], row["selection"], row["group"], row["seed"]) == ("steps", "final", "fedcba654321", 0)
    assert row["mean_boundary_iou"] == 0.5


def test_board_rows_show_test_where_the_record_has_it_and_val_beside(tmp_path):
    """One rule for every table: a record with test_metrics is a test row (its scores, CI, per-image counts), val
    mIoU beside it; a record without stays on its reported split; per dataset test rows come first."""
    from segbench.cli.report import markdown_table
    from segbench.records.io import board_scores

    test = {"pixel_accuracy": 0.8, "mean_pixel_accuracy": 0.7, "miou": 0.55, "fwiou": 0.7, "mean_dice": 0.6,
            "iou": {"a": 0.8, "b": 0.3}, "miou_ci": [0.5, 0.6],
            "per_image": {"intersection": [[4, 1], [4, 2]], "union": [[5, 5], [5, 5]]}}
    scored = make_record(test_metrics=test)
    val_only = make_record(id="abcdef123457", model="fcn8s", family="fcn", test_metrics=None,
                           weights={"sha256": "0" * 64, "uri": "local:synthetic/fcn8s--abcdef123457"})
    for record in (scored, val_only):
        write_record(record, tmp_path)
    assert board_scores(scored) == ("test", test) and board_scores(val_only) == ("val", val_only["metrics"])
    frame, _ = load_frame(tmp_path)
    first, second = frame.iloc[0], frame.iloc[1]
    assert (first["model"], first["split"], first["miou"], first["miou_ci_low"]) == ("unet_small", "test", 0.55, 0.5)
    assert (first["val_miou"], first["val_miou_ci_low"], first["pixel_accuracy"]) == (0.7, 0.6, 0.8)
    assert (second["model"], second["split"], second["miou"]) == ("fcn8s", "val", 0.7)
    assert second["test_miou"] != second["test_miou"]  # NaN: no test score
    table = markdown_table(load_records(tmp_path)[0]).splitlines()
    assert "| split |" in table[0] and "| val mIoU (95% CI) |" in table[0]
    assert table[2].startswith("| synthetic | unet_small | unet | test | 80.0 | 70.0 | 55.0 (50.0-60.0) | 70.0 (60.0-80.0) |")
    assert table[3].startswith("| synthetic | fcn8s | fcn | val | 90.0 | 80.0 | 70.0 (60.0-80.0) | 70.0 (60.0-80.0) |")


def test_board_ranks_test_rows_by_their_test_counts(tmp_path):
    """The app's ranks read the per-image counts of the split a row shows: a record whose val counts would tie
    is ranked on its test counts."""
    from segbench.app.leaderboard import Leaderboard

    test = {"pixel_accuracy": 0.8, "mean_pixel_accuracy": 0.7, "miou": 0.55, "fwiou": 0.7, "mean_dice": 0.6,
            "iou": {"a": 0.8, "b": 0.3}, "miou_ci": [0.5, 0.6],
            "per_image": {"intersection": [[4, 1], [4, 2]], "union": [[5, 5], [5, 5]]}}
    board = Leaderboard.from_records([make_record(test_metrics=test)])
    inter, union = board.counts("abcdef123456")
    assert inter.tolist() == [[4, 1], [4, 2]] and union.tolist() == [[5, 5], [5, 5]]


def test_schema1_record_written_is_migrated(tmp_path):
    path = write_record(schema1_record(), tmp_path)
    assert json.loads(path.read_text())["schema"] == 2


# ---------------------------------------------------------------- reproduction of a committed record

def test_reproduction_report_inside_outside_identical(tmp_path):
    from segbench.records.io import previous_record, reproduction_report

    committed = make_record(git_commit="a" * 40, hardware={"device": "AMD EPYC (2 cores)", "cpu_count": 2})
    assert previous_record(tmp_path, committed) is None  # nothing to compare with yet
    write_record(committed, tmp_path)
    previous = previous_record(tmp_path, committed)
    same = reproduction_report(previous, previous)
    assert same[0].startswith("reproduction of the committed record (2026-01-01): bit-identical")
    inside = make_record(git_commit="b" * 40, hardware={"device": "Intel Xeon (2 cores)", "cpu_count": 1})
    inside["metrics"] = {**inside["metrics"], "miou": 0.75, "pixel_accuracy": 0.91}
    lines = reproduction_report(previous, inside)
    assert "reproduced" in lines[0] and "CPU/GPU AMD EPYC (2 cores) -> Intel Xeon (2 cores)" in lines[0]
    assert "code aaaaaaaa -> bbbbbbbb" in lines[0] and "threads 2 -> 1" in lines[0]
    assert "  val mIoU: 0.7000 -> 0.7500 (+0.0500), inside the committed 95% CI 0.6000-0.8000" in lines
    assert "  val PA: 0.9000 -> 0.9100 (+0.0100)" in lines and "  test mIoU: 0.6500 -> 0.6500 (+0.0000)" in lines
    outside = make_record()
    outside["metrics"] = {**outside["metrics"], "miou": 0.5}
    lines = reproduction_report(previous, outside)
    assert "outside the committed CI" in lines[0] and any("OUTSIDE the committed 95% CI" in line for line in lines)


def test_a_broken_previous_record_is_replaced_without_comparison(tmp_path):
    from segbench.records.io import previous_record

    record = make_record()
    path = write_record(record, tmp_path)
    path.write_text("{not json")
    assert previous_record(tmp_path, record) is None
