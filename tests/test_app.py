"""The app (issue #5) through gradio_client against the app launched in-process, plus its logic and handlers
called directly (tests/test_app_handlers.py: ranks, CIs, seeds, hardware, capped runs, every handler).

Fixture: a leaderboard of four records (two with real weights of a tiny U-Net in a store, one CamVid record
without weights, one instance record) and one malformed record file; images are tiny (<= 64 px).
"""

from __future__ import annotations

import json
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradio_client import Client, handle_file  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # app.py lives at the top level

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/app_fixtures.py

from app_fixtures import fake_record, write_model_store  # noqa: E402

from segbench.app import catalog, compare, details, leaderboard, uploads  # noqa: E402
from segbench.app.config import AppConfig  # noqa: E402
from segbench.records.columns import MACS_CONVENTION  # noqa: E402
from segbench.app.state import AppState  # noqa: E402
from segbench.errors import SegbenchError  # noqa: E402
from segbench.evaluation.metrics import ConfusionMatrix  # noqa: E402
from segbench.inference.predict import Predictor, load_image  # noqa: E402
from segbench.records.io import write_record  # noqa: E402

TINY_UNET = [("unet_small", {"base_channels": 4, "depth": 2})]
KEYS = ["synthetic/unet_small--000000000000", "synthetic/unet_small--000000000001"]


def make_fixture(root: Path) -> tuple[Path, Path]:
    """(leaderboard, store): two tiny U-Nets with weights, a CamVid and a balloon record without, one broken file."""
    leaderboard, store = root / "leaderboard", root / "store"
    write_model_store(store, leaderboard, specs=TINY_UNET * 2)
    camvid = fake_record(7, dataset="camvid", model="deeplabv3", family="deeplab",
                         class_names=["Sky", "Building", "Road"])
    write_record(camvid, leaderboard)
    balloon = fake_record(8, dataset="balloon", model="maskrcnn", family="maskrcnn", class_names=["bg", "balloon"])
    balloon["task"], balloon["metrics"]["mask_ap"] = "instance", 0.42
    write_record(balloon, leaderboard)
    broken = leaderboard / "records" / "camvid" / "broken--000000000bad.json"
    broken.write_text(json.dumps({"schema": 1, "model": "broken"}))
    return leaderboard, store


@pytest.fixture(scope="module")
def fixture_dirs(tmp_path_factory):
    return make_fixture(tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="module")
def state(fixture_dirs, tmp_path_factory):
    board_dir, store = fixture_dirs
    return AppState.load(AppConfig(leaderboard=board_dir, store=store), workdir=tmp_path_factory.mktemp("work"))


@pytest.fixture(scope="module")
def served(state):
    """The app on 127.0.0.1 (random port) and a gradio_client connected to it."""
    import app

    demo = app.build_app(state)
    _, url, _ = app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    client = Client(url, verbose=False, download_files=str(Path(os.environ["GRADIO_TEMP_DIR"]) / "client"))
    yield demo, client
    demo.close()


def _png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def _rgb(path: Path, h: int = 40, w: int = 48, seed: int = 0) -> Path:
    return _png(path, np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


# ================================================================ compare through gradio_client


def test_compare_returns_one_panel_per_model_at_the_image_size(served, tmp_path):
    _, client = served
    image = _rgb(tmp_path / "upload.png", h=40, w=48)
    overlays, masks, disagreement, sentence, legend, table, instances, status, models = client.predict(
        handle_file(str(image)), "synthetic", KEYS, 0.5, None, api_name="/compare")
    assert len(overlays["value"]) == 2 and len(masks["value"]) == 2
    for item in overlays["value"] + masks["value"]:
        assert Image.open(item["image"]).size == (48, 40)
    assert Image.open(disagreement).size == (48, 40)
    assert "disagree" in sentence and "background" in legend
    assert [row[0] for row in table["data"]] == ["unet_small", "unet_small"]
    assert models["value"] == KEYS
    assert "Compared 2 models" in status
    assert instances["visible"] is False
    redrawn, _ = client.predict(1.0, api_name="/redraw")  # another opacity: no model runs, the session's masks
    assert len(redrawn) == 2 and redrawn[0]["image"] != overlays["value"][0]["image"]


def test_grey_16_bit_upload_is_compared(served, tmp_path):
    _, client = served
    path = tmp_path / "grey16.png"
    Image.fromarray((np.arange(30 * 20, dtype=np.uint16).reshape(30, 20) * 100)).save(path)
    overlays, *_ = client.predict(handle_file(str(path)), "synthetic", KEYS[:1], 0.3, None, api_name="/compare")
    assert len(overlays["value"]) == 1
    assert Image.open(overlays["value"][0]["image"]).size == (20, 30)


def test_ground_truth_metrics_equal_confusion_matrix(served, fixture_dirs, tmp_path):
    _, client = served
    image = _rgb(tmp_path / "img.png", h=32, w=36, seed=1)
    gt = np.random.default_rng(2).integers(0, 6, (32, 36), dtype=np.uint8)
    gt[:4] = 255  # ignored rows
    gt_path = _png(tmp_path / "gt.png", gt)
    outputs = client.predict(handle_file(str(image)), "synthetic", KEYS, 0.5, handle_file(str(gt_path)),
                             api_name="/compare")
    masks, table = outputs[1], outputs[5]
    assert len(masks["value"]) == 3 and masks["value"][-1]["caption"] == "ground truth"
    header = table["headers"]
    _, store = fixture_dirs
    for key, row in zip(KEYS, table["data"]):
        predictor = Predictor(store / "weights" / key)
        cm = ConfusionMatrix(6, ignore_index=255)
        cm.update(predictor(load_image(image)).mask, torch.from_numpy(gt.astype(np.int64)))
        expected = cm.compute()
        for column, metric in (("PA %", "pixel_accuracy"), ("mPA %", "mean_pixel_accuracy"), ("mIoU %", "miou")):
            assert row[header.index(column)] == pytest.approx(round(100 * expected[metric], 2), abs=1e-9)


def test_bad_ground_truth_gets_a_message(served, tmp_path):
    _, client = served
    image = _rgb(tmp_path / "img.png", h=20, w=20)
    wrong_size = _png(tmp_path / "gt.png", np.zeros((10, 12), dtype=np.uint8))
    with pytest.raises(Exception, match="mask is 12x10"):
        client.predict(handle_file(str(image)), "synthetic", KEYS, 0.5, handle_file(str(wrong_size)), api_name="/compare")


def test_non_image_and_bomb_uploads_get_messages(served, tmp_path):
    _, client = served
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    preview, status = client.predict(handle_file(str(text)), api_name="/upload")
    assert preview is None and "not an image" in status and "notes.png" in status
    with pytest.raises(Exception, match="not an image"):
        client.predict(handle_file(str(text)), "synthetic", KEYS, 0.5, None, api_name="/compare")
    bomb = _png_header_only(tmp_path / "bomb.png", 20000, 20000)
    preview, status = client.predict(handle_file(str(bomb)), api_name="/upload")
    assert preview is None and "too large" in status


def test_large_upload_keeps_its_size(served, tmp_path):
    """No downscaling (whole-image models slide over large uploads: tests/models/test_inference.py)."""
    _, client = served
    wide = _png(tmp_path / "wide.png", np.zeros((20, 2100), dtype=np.uint8))
    preview, status = client.predict(handle_file(str(wide)), api_name="/upload")
    assert Image.open(preview).size == (2100, 20) and "downscaled" not in status


def test_uploads_stay_in_the_temporary_folder(served, fixture_dirs, tmp_path):
    _, client = served
    before = {p for d in fixture_dirs for p in d.rglob("*")}
    client.predict(handle_file(str(_rgb(tmp_path / "upload-x1.png"))), api_name="/upload")
    client.predict(handle_file(str(_rgb(tmp_path / "upload-y1.png"))), "synthetic", KEYS, 0.5, None, api_name="/compare")
    assert {p for d in fixture_dirs for p in d.rglob("*")} == before  # nothing written into the store or records
    temp = Path(os.environ["GRADIO_TEMP_DIR"]).resolve()
    for folder in (REPO, Path.cwd()):
        assert not list(folder.glob("upload-*1.png"))
    assert list(temp.rglob("upload-x1.png"))  # the uploads landed in the temporary folder ...
    demo, _ = served
    assert demo.delete_cache is not None  # ... which Gradio empties as they age, and app.py removes at exit


def test_compare_runs_one_at_a_time(served):
    demo, _ = served
    compare = next(fn for fn in demo.fns.values() if fn.api_name == "compare")
    assert compare.concurrency_limit == 1 and demo._queue.max_size is not None


# ================================================================ leaderboard through gradio_client


FILTERS_NONE = [[], [], [], [], "", False, False]  # datasets, families, hardware, devices, search, capped, by seed


def test_filter_returns_expected_rows_and_skips_the_malformed_record(served, state):
    _, client = served
    table, csv_path, count = client.predict(*FILTERS_NONE, "", True, leaderboard.CHOOSABLE, api_name="/filter")
    assert count == "4 of 4 records"
    assert "GMACs" in table["headers"] and "End-to-end (ms)" in table["headers"] and "mIoU % (val)" in table["headers"]
    table, csv_path, count = client.predict(["camvid"], [], [], [], "", False, False, "", True,
                                            ["model", "dataset", "miou"], api_name="/filter")
    assert table["headers"] == ["Model", "Dataset", "mIoU % (val)", "id"]
    assert [row[:2] for row in table["data"]] == [["deeplabv3", "camvid"]]
    assert Path(csv_path).read_text().splitlines()[0] == "Model,Dataset,mIoU % (val),id"
    table, _, _ = client.predict([], ["unet"], [], [], "", False, False, "miou", False, ["model", "miou"],
                                 api_name="/filter")
    scores = [row[1] for row in table["data"]]
    assert len(scores) == 2 and scores == sorted(scores)
    table, _, count = client.predict([], [], [], [], "MASKR", False, False, "", True, ["model"], api_name="/filter")
    assert [row[0] for row in table["data"]] == ["maskrcnn"] and count == "1 of 4 records"
    problems = state.board.problems
    assert len(problems) == 1 and "broken--000000000bad.json" in problems[0]


def test_details_show_weights_and_command(served, state):
    _, client = served
    record = state.board.records[0]
    text, curve = client.predict(record["id"], api_name="/details")
    assert record["weights"]["sha256"] in text and "python -m segbench train" in text
    assert "Selection" in text and "GMACs" in text and "End-to-end" in text
    assert curve is not None
    missing, _ = client.predict("nope", api_name="/details")
    assert "No record" in missing


def test_charts_endpoint(served):
    _, client = served
    latency, params, heat, heat_dataset = client.predict(*FILTERS_NONE, "end_to_end_ms", "camvid", api_name="/charts")
    assert all(plot is not None for plot in (latency, params, heat)) and heat_dataset["value"] == "camvid"
    *_, heat_dataset = client.predict(["balloon"], *FILTERS_NONE[1:], "forward_ms", "camvid", api_name="/charts")
    assert heat_dataset["value"] == "balloon"  # the heat map follows the dataset filter


# ================================================================ app without weights


def test_no_weights_tells_how_to_get_them(tmp_path):
    import app

    demo = app.build_app(AppState.load(AppConfig(leaderboard=tmp_path / "none", store=tmp_path / "empty"),
                                       workdir=tmp_path / "work"))
    text = json.dumps(demo.config, default=str)
    assert "python -m segbench run" in text and "No trained weights" in text


def test_the_ui_says_gmacs_with_its_convention_never_gflops(served):
    demo, _ = served
    text = json.dumps(demo.config, default=str)
    assert "GFLOPs" not in text and "GMACs" in text
    assert json.dumps(MACS_CONVENTION)[1:-1] in text  # the one convention text, as the records state it
    assert details.FORWARD_SCOPE in text and details.END_TO_END_SCOPE in text  # latency scopes next to the table


# ================================================================ logic


def test_default_selection_is_best_of_each_family():
    def entry(name, family, miou):
        return catalog.ModelEntry(f"d/{name}--x", "d", name, "x", family, "", "semantic", miou, "/w")

    entries = [entry("a", "unet", 0.9), entry("b", "unet", 0.5), entry("c", "fcn", 0.7), entry("d", "maskrcnn", None)]
    assert catalog.default_selection(entries) == ["d/a--x", "d/c--x", "d/d--x"]
    models = {"d": entries}
    assert [e.name for e in catalog.pick_models(models, "d", ["other/z--y"])] == ["a", "c", "d"]
    assert [e.name for e in catalog.pick_models(models, "d", ["d/b--x"])] == ["b"]


def test_ground_truth_colour_and_binary_masks(tmp_path):
    palette = [(0, 0, 0), (200, 10, 10)]
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[1:3, 1:4] = (200, 10, 10)
    mask, notices = uploads.read_ground_truth(_png(tmp_path / "c.png", rgb), name="c.png", size=(4, 5),
                                            num_classes=2, ignore_index=255, palette=palette)
    assert mask.sum() == 6 and notices
    binary = np.where(np.eye(4, dtype=bool), 255, 0).astype(np.uint8)
    mask, _ = uploads.read_ground_truth(_png(tmp_path / "b.png", binary), name="b.png", size=(4, 4), num_classes=2,
                                      ignore_index=255, palette=palette)
    assert mask.tolist() == np.eye(4, dtype=int).tolist()
    big = np.kron(np.eye(4, dtype=np.uint8), np.ones((2, 2), dtype=np.uint8))  # 8x8: the image was downscaled 2x
    mask, notices = uploads.read_ground_truth(_png(tmp_path / "big.png", big), name="big.png", size=(4, 4),
                                            num_classes=2, ignore_index=255, palette=palette)
    assert mask.tolist() == np.eye(4, dtype=int).tolist() and "resized" in notices[0]
    rgb[0, 0] = (1, 2, 3)
    with pytest.raises(SegbenchError, match="#010203"):
        uploads.read_ground_truth(_png(tmp_path / "u.png", rgb), name="u.png", size=(4, 5), num_classes=2,
                                ignore_index=255, palette=palette)


def test_pareto_front():
    from segbench.viz.masks import pareto_front

    front = pareto_front([10, 5, 20, 5, float("nan")], [0.6, 0.5, 0.7, 0.55, 0.9])
    assert front.tolist() == [True, False, True, True, False]


# ================================================================ helpers


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims width x height but holds almost no data: a decompression-bomb stand-in."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100))
                     + chunk(b"IEND", b""))
    return path


def test_read_upload_formats(tmp_path):
    grey16 = tmp_path / "grey16.tif"
    Image.fromarray(np.full((6, 7), 40000, dtype=np.uint16)).save(grey16)
    image, notices = uploads.read_upload(grey16)
    assert image.shape == (1, 6, 7) and image.dtype == torch.uint8 and not notices
    rgba = _png(tmp_path / "rgba.png", np.zeros((5, 4, 4), dtype=np.uint8))
    assert uploads.read_upload(rgba)[0].shape == (3, 5, 4)


def test_instance_panels_and_table():
    entry = catalog.ModelEntry("d/m--x", "d", "m", "x", "maskrcnn", "r18", "instance", 0.5, "/w")
    masks = torch.zeros(2, 20, 30, dtype=torch.bool)
    masks[0, 2:8, 2:8], masks[1, 10:18, 12:28] = True, True
    instances = {"boxes": torch.tensor([[2.0, 2, 8, 8], [12, 10, 28, 18]]), "labels": torch.tensor([1, 1]),
                 "scores": torch.tensor([0.9, 0.7]), "masks": masks}
    semantic = masks.any(0).long()
    result = compare.ModelResult(entry, semantic, instances, 12.0, None, [16, 16])
    cmp = compare.Comparison(torch.zeros(3, 20, 30, dtype=torch.uint8), [result], ["background", "balloon"],
                           [(0, 0, 0), (255, 0, 0)], 255, None, [], 0.1)
    (panel, caption), = compare.instance_panels(cmp, 0.5)
    assert panel.shape == (20, 30, 3) and caption == "m · 2 instances"
    assert compare.results_table(cmp).loc[0, "Runs at"] == "16x16"
    assert compare.disagreement_panel(cmp)[0] is None


def test_numeric_columns_sort_as_numbers(tmp_path):
    records = []
    for i, rf in enumerate([900, 1000, 95]):
        record = fake_record(i, dataset="camvid", model=f"m{i}")
        record["efficiency"]["receptive_field"] = rf
        records.append(record)
    board = leaderboard.Leaderboard.from_records(records)
    table = board.filter(sort_by="receptive_field", descending=True, columns=["model", "receptive_field"])
    assert table["RF (px)"].tolist() == [1000, 900, 95]


def test_reproduce_command_rebuilds_the_same_config():
    import yaml

    from segbench.config.run import RunConfig, make_config

    cfg = RunConfig(model="unet_small", dataset="synthetic", epochs=3, lr=0.002, model_args={"base_channels": 8})
    record = fake_record(0, dataset="synthetic")
    record.update(config=cfg.to_dict(), id=cfg.run_id())
    command = details.reproduce_command(record)
    body = command.split("<<'EOF'\n")[1].split("\nEOF")[0]
    assert command.endswith("python -m segbench train unet_small-synthetic.yaml")
    assert make_config(yaml.safe_load(body)).run_id() == record["id"]


def test_the_benchmarks_generated_records_pass_the_trust_boundary(tmp_path):
    """The app's benchmarks time the app on generated records: they must load like real ones (consistent numbers)."""
    from segbench.bench.fixtures import write_fake_leaderboard
    from segbench.records.io import load_records

    records, problems = load_records(write_fake_leaderboard(tmp_path, 12))
    assert problems == [] and len(records) == 12
