"""Records validated on read: a NaN, infinite or negative number where a reader shows or plots it is reported by
file in one line and the record is skipped (never reaches the table or a plot); the good records still load."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from segbench.cli import main
from segbench.records.io import load_frame, write_record

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_records import make_record, schema1_record  # noqa: E402

NAN, INF = float("nan"), float("inf")

# (path into the record, bad value); json.dumps writes NaN/Infinity literals, which json.loads reads back
BAD = [
    ("metrics.miou", NAN), ("metrics.miou", INF), ("metrics.miou", -0.1), ("metrics.pixel_accuracy", 1.5),
    ("metrics.iou.a", NAN), ("metrics.miou_ci", [0.8, 0.6]), ("test_metrics.miou", INF),
    ("efficiency.params", -5), ("efficiency.gmacs", -1.0), ("efficiency.gmacs", NAN),
    ("efficiency.latency.forward_ms", -1.0), ("efficiency.latency.end_to_end_ms", INF),
    ("training.seconds", -1.0), ("training.images_per_s", NAN),
    # gaps closed in this change:
    ("efficiency.receptive_field", NAN), ("efficiency.receptive_field", -3), ("efficiency.output_stride", 0),
    ("efficiency.macs_input", [3, -1, 8]), ("efficiency.latency.batch_size", 0),
    ("efficiency.latency.image_size", [0, 5]), ("training.history", [{"epoch": 1, "loss": NAN}]),
    ("training.history", [{"epoch": 1, "loss": 0.5, "seconds": -2.0}]), ("training.budget", {"epochs": 2, "steps": -1}),
    ("metrics.coco", {"mask_AP50": 1.7}), ("metrics.score_threshold", -0.5),
    ("metrics.boundary_dilation_ratio", NAN), ("selection.holdout_seed", INF),
]


def _set(record: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = record
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return record


@pytest.mark.parametrize("where,value", BAD, ids=[f"{w}={v}" for w, v in BAD])
def test_a_bad_number_skips_the_record_by_name(tmp_path, where, value):
    write_record(make_record(), tmp_path)
    bad = tmp_path / "records" / "synthetic" / "bad--000000000000.json"
    bad.write_text(json.dumps(_set(make_record(id="000000000000"), where, value)))
    frame, problems = load_frame(tmp_path)
    assert list(frame["id"]) == ["abcdef123456"]  # the table (and every plot drawn from it) has the good one only
    assert len(problems) == 1 and "\n" not in problems[0]
    assert problems[0].startswith(str(bad)) and where.split(".")[-1] in problems[0]


@pytest.mark.parametrize("where,value", [("efficiency.gflops", -2.0), ("efficiency.latency.ms", NAN)])
def test_a_bad_schema1_record_is_skipped_after_migration(tmp_path, where, value):
    folder = tmp_path / "records" / "synthetic"
    folder.mkdir(parents=True)
    (folder / "old.json").write_text(json.dumps(_set(schema1_record(), where, value)))
    frame, problems = load_frame(tmp_path)
    assert frame.empty and len(problems) == 1 and "old.json" in problems[0]


def test_the_leaderboard_command_reports_the_bad_file_and_shows_the_rest(tmp_path, capsys):
    write_record(make_record(), tmp_path)
    bad = tmp_path / "records" / "synthetic" / "bad--000000000000.json"
    bad.write_text(json.dumps(_set(make_record(id="000000000000"), "efficiency.gmacs", NAN)))
    assert main(["leaderboard", "--leaderboard", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "bad--000000000000.json" in err and "gmacs" in err
    assert "unet_small" in out


def test_the_writer_refuses_what_the_reader_would_skip(tmp_path):
    from segbench.records.io import RecordError

    with pytest.raises(RecordError, match="receptive_field"):
        write_record(_set(make_record(), "efficiency.receptive_field", -3), tmp_path)
    assert not (tmp_path / "records").exists()
