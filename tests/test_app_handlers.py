"""The app's leaderboard rules (shared ranks, CI text, capped/time-track filter, seed merging, hardware filter) and
every event handler called as a plain function, without a browser or a server."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app_fixtures import fake_record, write_model_store  # noqa: E402

from segbench.app import about, compare, leaderboard  # noqa: E402
from segbench.app.config import AppConfig, dataset_label  # noqa: E402
from segbench.app.state import AppState  # noqa: E402
from segbench.app.details import ci_text  # noqa: E402
from segbench.app.leaderboard import BoardFilter, Leaderboard, ensure_columns  # noqa: E402
from segbench.data import dataset_info  # noqa: E402
from segbench.records.io import records_frame  # noqa: E402

TINY_UNET = [("unet_small", {"base_channels": 4, "depth": 2})]


def _board(*records) -> Leaderboard:
    return Leaderboard.from_records(list(records))


# ================================================================ leaderboard rules


def test_tie_groups_share_a_rank_and_untestable_rows_get_their_own():
    a = fake_record(0, dataset="camvid", model="a", miou=0.60, images=12, noise=0.05, seed=1)
    b = fake_record(1, dataset="camvid", model="b", miou=0.598, images=12, noise=0.05, seed=2)  # within noise of a
    c = fake_record(2, dataset="camvid", model="c", miou=0.40, images=12, noise=0.05, seed=3)  # clearly below
    d = fake_record(3, dataset="camvid", model="d", miou=0.30)  # no per-image counts: cannot be tested
    e = fake_record(4, dataset="isbi2012", model="e", miou=0.50, images=12, seed=4)  # another dataset: ranked apart
    table = _board(a, b, c, d, e).filter(columns=["rank", "model"])
    ranks = dict(zip(table["Model"], table["Rank"]))
    assert [ranks[m] for m in "abcd"] == [1, 1, 3, 4] and ranks["e"] == 1


def test_ci_is_shown_as_an_interval():
    assert ci_text(0.605, 0.641) == "[60.5, 64.1]"
    assert ci_text(None, 0.6) == "" and ci_text(float("nan"), 0.6) == ""
    record = fake_record(0, dataset="camvid", miou=0.62, images=6)
    record["metrics"]["miou_ci"] = [0.605, 0.641]
    table = _board(record).filter(columns=["miou", "miou_ci"])
    assert table["mIoU 95% CI (val)"].tolist() == ["[60.5, 64.1]"]


def test_capped_and_time_track_runs_are_hidden_unless_asked():
    normal = fake_record(0, dataset="camvid", model="normal")
    capped = fake_record(1, dataset="camvid", model="capped", capped=True)
    timed = fake_record(2, dataset="camvid", model="timed", track="time")
    board = _board(normal, capped, timed)
    assert board.filter(columns=["model"])["Model"].tolist() == ["normal"]
    shown = board.filter(BoardFilter(show_capped=True), columns=["model", "run"]).set_index("Model")["Run"].to_dict()
    assert shown == {"normal": "", "capped": "capped (safety stop)", "timed": "time budget"}
    assert leaderboard.count_text(board, 1, show_capped=False, by_seed=False) == \
        "1 of 3 records · 2 capped / time-budget runs hidden"


def test_seeds_of_one_configuration_merge_into_mean_and_sd():
    seeds = [fake_record(i, dataset="camvid", model="u", miou=m, images=8, seed=i, group="g0000000000a")
             for i, m in enumerate([0.5, 0.6, 0.7])]
    other = fake_record(9, dataset="camvid", model="other", miou=0.2, group="g0000000000b")
    board = _board(*seeds, other)
    assert len(board.filter()) == 4
    merged = board.filter(BoardFilter(by_seed=True), columns=["model", "miou"]).set_index("Model")
    mean = np.mean([r["metrics"]["miou"] for r in seeds])
    sd = np.std([r["metrics"]["miou"] for r in seeds], ddof=1)
    assert merged.loc["u", "Seeds"] == 3 and merged.loc["other", "Seeds"] == 1
    assert merged.loc["u", "mIoU % (val)"] == pytest.approx(round(100 * mean, 2))
    assert merged.loc["u", "mIoU s.d. over seeds"] == pytest.approx(round(100 * sd, 2))
    assert np.isnan(merged.loc["other", "mIoU s.d. over seeds"])


def test_hardware_classes_are_separate_rows_and_filterable():
    cpu = fake_record(0, dataset="camvid", model="u", hardware_class="cpu", device="AMD EPYC (2 cores)")
    gpu = fake_record(0, dataset="camvid", model="u", hardware_class="cuda", device="NVIDIA H200", run_id="0" * 12)
    board = _board(cpu, gpu)
    assert sorted(board.filter(columns=["hardware_class"])["Hardware"]) == ["cpu", "cuda"]
    assert board.filter(BoardFilter(hardware=["cuda"]), columns=["latency_device"])["Latency device"].tolist() == ["NVIDIA H200"]
    assert board.filter(BoardFilter(devices=["AMD EPYC (2 cores)"]), columns=["model"])["id"].tolist() == [cpu["id"]]
    assert board.choices("hardware_class") == ["cpu", "cuda"]


def test_missing_schema_2_columns_are_read_from_the_record_or_left_blank():
    record = fake_record(0, dataset="camvid")
    bare = fake_record(1, dataset="camvid")
    del bare["efficiency"]["gmacs"], bare["efficiency"]["latency"]["end_to_end_ms"]
    frame = records_frame([record, bare]).drop(columns=["gmacs", "end_to_end_ms"], errors="ignore")
    frame = ensure_columns(frame, [record, bare]).set_index("id")
    assert frame.loc[record["id"], "gmacs"] == pytest.approx(record["efficiency"]["gmacs"])
    assert pd.isna(frame.loc[bare["id"], "gmacs"]) and pd.isna(frame.loc[bare["id"], "end_to_end_ms"])
    table = _board(record, bare).filter(columns=["gmacs"]).set_index("id")
    assert np.isnan(table.loc[bare["id"], "GMACs"])


def test_dataset_labels_and_licences_come_from_dataset_info():
    assert dataset_label("camvid") == dataset_info("camvid").label
    assert dataset_label("no_such_dataset") == "no_such_dataset"
    text = about.about_markdown(_board(fake_record(0, dataset="camvid")))
    assert dataset_info("camvid").license in text and dataset_info("isbi2012").license in text
    assert "How to read these numbers" in text and "GMACs" in text and "Boundary IoU" in text


# ================================================================ handlers as plain functions


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    root = tmp_path_factory.mktemp("handlers")
    write_model_store(root / "store", root / "leaderboard", specs=TINY_UNET)
    from segbench.records.io import write_record

    write_record(fake_record(5, dataset="camvid", model="deeplabv3", family="deeplab", miou=0.5, images=4),
                 root / "leaderboard")
    write_record(fake_record(6, dataset="camvid", model="fcn8s", family="fcn", capped=True), root / "leaderboard")
    return AppState.load(AppConfig(leaderboard=root / "leaderboard", store=root / "store"), workdir=root / "work")


def test_leaderboard_handlers(state):
    table, csv_path, count = leaderboard.on_filter(state, BoardFilter(datasets=["camvid"]), "", True, ["model", "miou"])
    assert table["Model"].tolist() == ["deeplabv3"] and count.startswith("1 of 3 records")
    assert Path(csv_path).read_text().startswith("Model,mIoU % (val),id")
    table, _, _ = leaderboard.on_filter(state, BoardFilter(show_capped=True), "", True, None)
    assert len(table) == 3 and "capped (safety stop)" in table["Run"].tolist()
    latency, params, heat, heat_dataset = leaderboard.on_charts(state, BoardFilter(), "forward_ms", "camvid")
    scatter = latency.data[0]
    assert scatter.error_y.array is not None and len(scatter.error_y.array) == len(scatter.x)  # CI error bars
    assert "forward latency" in latency.layout.xaxis.title.text and heat_dataset["value"] == "camvid"
    record_id = table["id"].iloc[0]
    text, curve = leaderboard.on_details(state, record_id)
    assert "Selection" in text and curve is not None
    selected = leaderboard.on_select(state, table.iloc[0].tolist())
    assert selected[0] == record_id and selected[1] == text
    assert "Select a row" in leaderboard.on_details(state, "")[0]


def test_compare_handlers(state, tmp_path):
    domain = state.domains[0]
    assert compare.on_domain(state, domain)["value"] == [e.key for e in state.models[domain]]
    image = tmp_path / "upload.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(image)
    preview, status = compare.on_upload(state, {"path": str(image), "orig_name": "mine.png"})
    assert preview.shape == (24, 32, 3) and "mine.png: 32x24" in status
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert compare.on_upload(state, str(bad))[0] is None
    outputs = compare.on_compare(state, str(image), domain, [], 0.5, None)
    overlays, masks, cmp = outputs[0], outputs[1], outputs[8]
    assert len(overlays["value"]) == 1 and len(masks["value"]) == 1 and "Compared 1 model" in outputs[7]
    assert compare.HERE_LATENCY in outputs[5].columns
    redrawn, instances = compare.on_alpha(state, 1.0, cmp)
    assert len(redrawn) == 1 and instances["visible"] is False
    no_weights, area, domains, chosen = compare.on_rescan(state)
    assert no_weights["visible"] is False and area["visible"] is True and domains["value"] == domain
    with pytest.raises(Exception, match="Upload an image"):
        compare.on_compare(state, None, domain, [], 0.5, None)
