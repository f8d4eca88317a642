import json

import pytest

from segbench.records import RecordError, load_frame, load_records, validate_record, write_record


def make_record(**over):
    record = {
        "schema": 1, "id": "abcdef123456", "model": "unet_small", "family": "unet", "variant": "same-16", "task": "semantic",
        "dataset": "synthetic", "split": "val", "num_classes": 2, "class_names": ["a", "b"],
        "metrics": {"pixel_accuracy": 0.9, "mean_pixel_accuracy": 0.8, "miou": 0.7, "fwiou": 0.85, "mean_dice": 0.8,
                    "iou": {"a": 0.9, "b": float("nan")}},
        "efficiency": {"params": 10, "gflops": 0.1, "latency": {"ms": 1.0, "device": "cpu"}},
        "training": {"seconds": 1.0, "device": "cpu", "epochs": 1},
        "config": {}, "seed": 0, "versions": {}, "git_commit": None, "date": "2026-01-01T00:00:00+00:00",
        "weights": {"sha256": "0" * 64, "uri": "local:synthetic/unet_small--abcdef123456"}, "hardware": {},
    }
    record.update(over)
    return record


def test_write_and_load_roundtrip(tmp_path):
    path = write_record(make_record(), tmp_path)
    assert path == tmp_path / "records" / "synthetic" / "unet_small--abcdef123456.json"
    stored = json.loads(path.read_text())
    assert stored["metrics"]["iou"]["b"] is None  # NaN stored as null
    frame, problems = load_frame(tmp_path)
    assert problems == [] and list(frame["model"]) == ["unet_small"] and frame.loc[0, "miou"] == 0.7
    assert not list(path.parent.glob(".*tmp"))  # no temporary files left


def test_malformed_records_are_skipped_by_name(tmp_path):
    write_record(make_record(), tmp_path)
    folder = tmp_path / "records" / "synthetic"
    (folder / "broken.json").write_text("{not json")
    (folder / "partial.json").write_text(json.dumps({**make_record(), "metrics": {"miou": 7}}))
    records, problems = load_records(tmp_path)
    assert len(records) == 1 and len(problems) == 2
    assert any("broken.json" in p for p in problems) and any("partial.json" in p and "fraction" in p for p in problems)


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
