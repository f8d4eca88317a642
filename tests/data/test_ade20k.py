"""ADE20K SceneParsing: reduce_zero_label (0 -> ignore, 1..150 -> 0..149), roots, refusals, connected-component
instances, and a 1-epoch run."""

import numpy as np
import pytest
import torch
from PIL import Image

from dataset_layouts import make_ade20k
from segbench.config.run import make_config
from segbench.data import build_dataset, dataset_info
from segbench.errors import SegbenchError
from segbench.train.runner import run_one
from segbench.weights.store import LocalStore


@pytest.fixture
def ade(tmp_path):
    return make_ade20k(tmp_path / "data")


def test_info():
    info = dataset_info("ade20k")
    assert info.num_classes == 150 == len(info.class_names) == len(info.palette) == len(set(info.class_names))
    assert info.class_names[:3] == ("wall", "building", "sky") and info.class_names[-1] == "flag"
    assert info.palette[0] == (120, 120, 120) and info.hub_license == "bsd-3-clause"


def test_reduce_zero_label(ade):
    ds = build_dataset("ade20k", split="train", root=str(ade))
    assert len(ds) == 4 and len(build_dataset("ade20k", split="val", root=str(ade.parent))) == 2
    _, mask = ds[0]
    raw = torch.from_numpy(np.array(Image.open(ds.pairs[0][1])).astype(np.int64))
    assert torch.equal(mask, torch.where(raw == 0, 255, raw - 1))
    assert int(mask[-1, -1]) == 149 and bool((mask[:2] == 255).all()) and int(mask.max()) == 255


def test_refusals(ade, tmp_path):
    with pytest.raises(SegbenchError, match="test labels are not public"):
        build_dataset("ade20k", split="test", root=str(ade))
    with pytest.raises(SegbenchError, match=r"missing images/ .*ADEChallengeData2016/\{images,annotations\}"):
        build_dataset("ade20k", split="train", root=str(tmp_path / "none"))
    path = sorted((ade / "annotations" / "validation").glob("*.png"))[0]
    Image.fromarray(np.full((32, 48), 151, np.uint8)).save(path)
    with pytest.raises(SegbenchError, match=rf"{path.name}: ade20k label values \{{151\}}"):
        build_dataset("ade20k", split="val", root=str(ade))[0]


def test_instances_are_connected_components(ade):
    ds = build_dataset("ade20k", split="train", root=str(ade), task="instance")
    assert ds.num_labels == 151 and ds.label_names[0] == "background"
    _, target = ds[0]
    _, mask = build_dataset("ade20k", split="train", root=str(ade))[0]
    classes = sorted(c for c in mask.unique().tolist() if c != 255 and int((mask == c).sum()) >= 16)
    assert sorted(target["labels"].tolist()) == [c + 1 for c in classes]


def test_semantic_run(ade, tmp_path):
    cfg = make_config({"model": "unet_small", "model_args": {"base_channels": 4, "depth": 2}, "dataset": "ade20k",
                       "data_root": str(ade), "epochs": 1, "batch_size": 2, "crop_size": 32, "latency_runs": 1,
                       "device": "cpu"})
    record = run_one(cfg, store=LocalStore(tmp_path / "s"), leaderboard=tmp_path / "lb", progress=False,
                     log=lambda _: None)
    assert record["num_classes"] == 150 and len(record["metrics"]["iou"]) == 150
    # only classes in the two val masks or predicted count; ignored "other" pixels never do
    assert len(record["metrics"]["absent"]) > 100
