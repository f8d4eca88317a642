"""End to end through the command line, on tiny synthetic data: run, train, eval, predict, models, bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image
from segbench.records.io import load_records

from segbench.cli import main


@pytest.fixture
def suite(tmp_path, tiny_config):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"common": tiny_config, "runs": [{}, {"name": "unet_tiny_sgd", "optimizer": "sgd", "lr": 0.05}]}))
    return path


def test_run_writes_valid_records_and_weights(tmp_path, suite, capsys):
    board, store = tmp_path / "board", tmp_path / "store"
    assert main(["run", str(suite), "--leaderboard", str(board), "--store", str(store), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "unet_tiny_sgd" in out
    records, problems = load_records(board)
    assert problems == [] and {r["model"] for r in records} == {"unet_small", "unet_tiny_sgd"}
    for r in records:
        assert r["efficiency"]["params"] > 0 and r["efficiency"]["gmacs"] > 0 and r["efficiency"]["receptive_field"] > 1
        assert r["schema"] == 2 and r["hardware_class"] == "cpu" and r["training"]["track"] == "steps"
        assert r["training"]["seconds"] > 0 and r["weights"]["uri"].startswith("local:")
        assert r["training"]["memory_format"] == "channels_last"  # semantic models train NHWC on the CPU too
        assert len(r["metrics"]["iou"]) == 6
    # a second run reuses the weights (same config hash) and rewrites the same records
    assert main(["run", str(suite), "--leaderboard", str(board), "--store", str(store), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "reusing weights" in out
    # each record replaced one with the same id: the run says how the numbers compare (same weights, same data)
    assert out.count("reproduction of the committed record") == 2 and out.count(": bit-identical") == 2
    assert "val mIoU:" in out and "inside the committed 95% CI" in out
    assert len(load_records(board)[0]) == 2


def test_train_eval_predict(tmp_path, tiny_config, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config))
    store = tmp_path / "store"
    assert main(["train", str(cfg), "epochs=1", "--leaderboard", str(tmp_path / "b"), "--store", str(store), "--no-progress"]) == 0
    record = load_records(tmp_path / "b")[0][0]
    weights = record["weights"]["uri"]
    capsys.readouterr()

    metrics_path = tmp_path / "m.json"
    assert main(["eval", weights, "--store", str(store), "--dataset-arg", "size=32", "--dataset-arg", "num_images=4",
                 "--json", str(metrics_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "background" in out and "mIoU" in out
    metrics = json.loads(metrics_path.read_text())
    assert set(metrics) >= {"pixel_accuracy", "mean_pixel_accuracy", "miou", "iou", "absent"}

    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(np.random.randint(0, 255, (40, 50, 3), dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(np.random.randint(0, 255, (33, 21), dtype=np.uint8)).save(images / "b.jpg")
    out_dir = tmp_path / "pred"
    assert main(["predict", weights, str(images), "--out", str(out_dir), "--store", str(store), "--probs"]) == 0
    mask = Image.open(out_dir / "a_mask.png")
    assert mask.mode == "P" and mask.size == (50, 40)
    assert Image.open(out_dir / "b_overlay.png").size == (21, 33)
    assert np.load(out_dir / "a_probs.npy").shape == (6, 40, 50)


def test_models_table(capsys):
    assert main(["models", "unet_small", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "unet_small" in out and "RF(px)" in out
    assert main(["models", "unet_small", "--size", "64", "--json", "-"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["params"] > 0 and rows[0]["receptive_field"] > 1


@pytest.mark.parametrize("argv, message", [
    (["run", "defualt"], "unknown suite 'defualt'"),
    (["run", "default", "epoch=2"], "unknown config key 'epoch'"),
    (["eval", "/nonexistent/weights"], "weights file not found"),
    (["predict", "/nonexistent/weights", ".", "--out", "x"], "weights file not found"),
    (["models", "fcn9s"], "unknown model 'fcn9s'"),
])
def test_bad_input_is_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err and "Traceback" not in err


def test_predict_corrupt_image(tmp_path, tiny_config, capsys):
    from segbench.weights.meta import WeightsMeta
    from segbench.weights.store import save_weights

    from segbench.models import build_model

    model = build_model("unet_small", num_classes=6, base_channels=4, depth=2)
    save_weights(model, WeightsMeta.from_dict({"model": "unet_small", "model_args": {"base_channels": 4, "depth": 2},
                                               "num_classes": 6, "mean": [0.5] * 3, "std": [0.25] * 3,
                                               "palette": [[0, 0, 0]] * 6, "in_channels": 3}), tmp_path / "w")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    assert main(["predict", str(tmp_path / "w"), str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.png" in err and "Traceback" not in err


def test_module_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "segbench", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("run", "train", "eval", "predict", "models", "speed"):
        assert command in out


# Every command's --help and argument errors, in one fresh interpreter: none may load torch (4 s to import on a
# 2-core machine), nor the Hub client, Gradio or the image libraries.
_LIGHT_CLI = r"""
import sys
from segbench.cli import build_parser, main

HEAVY = ("torch", "torchvision", "huggingface_hub", "gradio", "numpy", "PIL", "safetensors")
sub = build_parser()._subparsers._group_actions[0].choices
argvs = [["--help"], ["--version"], []] + [[name, "--help"] for name in sub]
argvs += [["data", kind, "--help"] for kind in ("list", "check", "convert")] + [["space", "deploy", "--help"]]
argvs += [["run", "--seeds", "0"], ["run", "--shard"], ["leaderboard", "--seeds", "1000000"], ["trian"],
          ["data", "convert", "voc", "a", "b"], ["models", "--size", "-3"], ["predict", "w"], ["eval", "--batch-size", "x"],
          ["speed", "unet_small", "--baseline", "tensorrt"], ["data", "check", "camvid", "--limit", "0"],
          ["space", "deploy"]]
for argv in argvs:
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code
    loaded = [name for name in HEAVY if name in sys.modules]
    assert not loaded, f"{argv} loaded {loaded}"
    print(argv, status, file=sys.stderr)
"""


def test_help_and_argument_errors_do_not_load_torch():
    done = subprocess.run([sys.executable, "-c", _LIGHT_CLI], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    statuses = [line.rsplit(" ", 1)[1] for line in done.stderr.splitlines() if line.startswith("[")]
    assert statuses.count("2") == 12 and "Traceback" not in done.stderr  # each bad argv is one error line, status 2


def test_models_erf(tmp_path, capsys):
    out = tmp_path / "erf.png"
    assert main(["models", "unet_small", "--erf", "--erf-size", "32", "--erf-out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert out.is_file() and info["theoretical_rf"] > 1 and info["erf_radius_95"] > 0


def test_instance_model_end_to_end(tmp_path, capsys):
    """Mask R-CNN through the same run -> record -> predict path as the semantic families."""
    cfg = {
        "model": "maskrcnn_small", "model_args": {"min_size": 64, "max_size": 64, "fpn_channels": 32},
        "dataset": "synthetic", "dataset_args": {"size": 48, "num_images": 4}, "epochs": 1, "batch_size": 2,
        "latency_runs": 1, "lr": 0.0005, "hflip": False,
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(cfg))
    store = tmp_path / "store"
    assert main(["train", str(path), "--leaderboard", str(tmp_path / "b"), "--store", str(store), "--no-progress"]) == 0
    record = load_records(tmp_path / "b")[0][0]
    assert record["task"] == "instance" and record["family"] == "maskrcnn"
    assert 0.0 <= record["metrics"]["miou"] <= 1.0 and record["metrics"]["score_threshold"] == 0.5
    assert "mask_ap" in record["metrics"] and record["metrics"]["coco"] is not None
    assert record["metrics"]["max_dets"] == [1, 10, 50]  # maskrcnn_small keeps 50 detections per image
    image = tmp_path / "x.png"
    Image.fromarray(np.random.randint(0, 255, (48, 48, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "pred"
    assert main(["predict", record["weights"]["uri"], str(image), "--out", str(out), "--store", str(store)]) == 0
    for name in ("x_mask.png", "x_overlay.png", "x_instances.png", "x_coco.json"):
        assert (out / name).is_file(), name
    assert Image.open(out / "x_mask.png").size == (48, 48)


@pytest.mark.slow
def test_speed_benchmarks_run(tmp_path, capsys):
    """The speed command's predict-path and training-loop baselines, at toy sizes (numbers are not checked)."""
    out = tmp_path / "eager.json"
    assert main(["speed", "unet_small", "--baseline", "eager", "--device", "cpu", "--size", "32", "--steps", "1",
                 "--json", str(out)]) == 0
    eager = json.loads(out.read_text())
    assert eager["eager_fp32_s"] > 0 and 0.0 <= eager["pixel_agreement"] <= 1.0 and eager["weights"] == "random init"
    capsys.readouterr()
    assert main(["speed", "unet_small", "--baseline", "plain-loop", "--device", "cpu", "--size", "32", "--batch", "2",
                 "--steps", "2"]) == 0
    loop = json.loads(capsys.readouterr().out)
    assert loop["plain_images_per_s"] > 0 and loop["ours_images_per_s"] > 0
    assert main(["speed", "--baseline", "eager"]) == 2  # a model name is needed: one line
    capsys.readouterr()
    assert main(["speed", "deeplabv3", "--baseline", "torchvision", "--device", "cpu", "--size", "64", "--batch", "2",
                 "--steps", "1"]) == 0
    tv = json.loads(capsys.readouterr().out)
    # the paper's multi-grid and torchvision's layer4 layout: same parameters, both timed against torchvision
    assert tv["ours_params"] == tv["ours_same_layout_params"] < tv["torchvision_params"]
    assert tv["infer_ratio"] > 0 and tv["ours_same_layout_train_ratio"] > 0


def test_leaderboard_shows_miou_ci_and_no_issue_numbers_in_help(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    from segbench.records.io import write_record

    from segbench.cli import build_parser

    spec = importlib.util.spec_from_file_location("record_fixtures", Path(__file__).with_name("test_records.py"))
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    board = tmp_path / "b"
    write_record(fixtures.make_record(test_metrics=None), board)
    assert main(["leaderboard", "--leaderboard", str(board)]) == 0
    out = capsys.readouterr().out
    assert "95% CI" in out and "0.6000-0.8000" in out
    assert main(["leaderboard", "--leaderboard", str(board), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "70.0 (60.0-80.0)" in out and "BN folded" not in out  # timed before the predict path folded BatchNorm
    folded = fixtures.make_record(name="folded")
    folded["efficiency"]["latency"]["batchnorm_folded"] = 20
    write_record(folded, board)
    assert main(["leaderboard", "--leaderboard", str(board), "--markdown"]) == 0
    assert "(fp32, BN folded)" in capsys.readouterr().out
    import re

    parser = build_parser()
    texts = [parser.format_help()] + [p.format_help() for p in parser._subparsers._group_actions[0].choices.values()]
    assert not any(re.search(r"#\d|issue \d", t, re.I) for t in texts)


def test_facts_the_parser_types_match_their_modules(tmp_path):
    """The parser cannot import the modules that own these facts (they load torch), so they are typed twice."""
    from pathlib import Path

    from segbench.weights import demo

    from segbench.cli.pack import DEMO_OUT
    from segbench.data.convert import KINDS, convert
    from segbench.data.formats import CONVERSIONS
    from segbench.errors import SegbenchError

    assert Path(DEMO_OUT) == demo.DEMO_DIR
    assert KINDS == tuple(CONVERSIONS)
    for kind in KINDS:  # every listed kind is one convert() implements: it gets as far as the missing input
        with pytest.raises(SegbenchError) as err:
            convert(kind, tmp_path / "missing", tmp_path / "out")
        assert "unknown conversion" not in str(err.value)
