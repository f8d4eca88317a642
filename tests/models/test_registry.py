"""The model table: parameter counts and state-dict layouts every builder must keep (saved weights keep loading),
one Segmenter class for FCN-ResNet and DeepLab, tasks and options known without building a model."""

from __future__ import annotations

import hashlib

import pytest
import torch

from segbench.errors import SegbenchError
from segbench.models import MODELS, OPTIONS, TASKS, build_model, check_model_args, model_options, model_task
from segbench.models.fcn import FCNVGG
from segbench.models.maskrcnn import MaskRCNN
from segbench.models.segmenter import Segmenter
from segbench.models.unet import UNet

# Parameters at num_classes=21 and default options ("+aux": with aux=True), counted on main @ 8760259, before the
# models were rebuilt on one Segmenter class.
PARAMS = {
    "deeplabv1": 20_505_429,
    "deeplabv2": 44_048_532,
    "deeplabv2+aux": 46_413_737,
    "deeplabv3": 39_048_533,
    "deeplabv3+aux": 41_413_738,
    "deeplabv3plus": 40_352_181,
    "deeplabv3plus+aux": 42_717_386,
    "deeplabv3plus_mobilenet": 11_727_653,
    "deeplabv3plus_mobilenet+aux": 11_756_542,
    "fcn16s": 134_815_994,
    "fcn32s": 136_152_917,
    "fcn8s": 134_489_759,
    "fcn8s_small": 1_233_895,
    "fcn_resnet101": 51_949_141,
    "fcn_resnet101+aux": 54_314_346,
    "fcn_resnet50": 32_957_013,
    "fcn_resnet50+aux": 35_322_218,
    "maskrcnn": 44_077_773,
    "maskrcnn_small": 20_279_245,
    "unet": 31_033_045,
    "unet_same": 31_038_933,
    "unet_small": 483_077,
    # EfficientNet-Lite0 models, added after the refactor (counted on their first commit).
    "deeplabv3plus_lite0": 6_963_189,
    "deeplabv3plus_lite0+aux": 6_992_078,
    "fcn8s_lite0": 3_415_255,
    "maskrcnn_lite0": 22_076_045,
    "unet_lite0": 5_205_669,
}

# sha256 (first 16 hex digits) of the ordered "key shape" lines of state_dict() at num_classes=21, default options
# and aux=True where the builder takes it, on main @ 8760259: weights saved then load into today's models.
STATE_LAYOUT = {
    "deeplabv1": "98d0f5903f680706",
    "deeplabv2": "60c6defa9aa3fa46",
    "deeplabv3": "3d53683b14595a77",
    "deeplabv3plus": "a05b7f65f96a0852",
    "deeplabv3plus_mobilenet": "a1a1d1933d5723c3",
    "fcn16s": "9098facd8e6eb0ef",
    "fcn32s": "bcab460cc497b85c",
    "fcn8s": "bd4dfa158fb180b6",
    "fcn8s_small": "77013ae60f1d05fe",
    "fcn_resnet101": "57b9ed07f89a1fe5",
    "fcn_resnet50": "df0c0e2fe214bfe9",
    "maskrcnn": "78a140f6cc789666",
    "maskrcnn_small": "1e2f38ab9df82fa3",
    "unet": "c617314c47386f32",
    "unet_same": "97142b176ad724d7",
    "unet_small": "470d9fc4cac95a8f",
    "deeplabv3plus_lite0": "69c692d1a9e5ea94",
    "fcn8s_lite0": "8f7ea71b01b4d36d",
    "maskrcnn_lite0": "df1e791a38704298",
    "unet_lite0": "f7924f003959285d",
}


def _meta_model(name: str, **options: object) -> torch.nn.Module:
    with torch.device("meta"):  # shapes only: no memory, no compute
        return build_model(name, num_classes=21, **options)


def test_tables_cover_every_builder():
    assert set(STATE_LAYOUT) == set(MODELS) == set(TASKS) == set(OPTIONS)
    assert {key.removesuffix("+aux") for key in PARAMS} == set(MODELS)


@pytest.mark.parametrize("key", sorted(PARAMS))
def test_parameter_count_unchanged(key):
    name, aux = key.removesuffix("+aux"), key.endswith("+aux")
    model = _meta_model(name, **({"aux": True} if aux else {}))
    assert sum(p.numel() for p in model.parameters()) == PARAMS[key]


@pytest.mark.parametrize("name", sorted(STATE_LAYOUT))
def test_state_dict_layout_unchanged(name):
    model = _meta_model(name, **({"aux": True} if "aux" in model_options(name) else {}))
    text = "\n".join(f"{key} {tuple(value.shape)}" for key, value in model.state_dict().items())
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == STATE_LAYOUT[name]


def test_fcn_and_deeplab_share_one_segmenter_class():
    fcn, deeplab = _meta_model("fcn_resnet50", aux=True), _meta_model("deeplabv3plus")
    assert type(fcn) is type(deeplab) is Segmenter
    assert (fcn.family, deeplab.family) == ("fcn", "deeplab")
    for name in ("fcn_resnet101", "deeplabv1", "deeplabv2", "deeplabv3", "deeplabv3plus_mobilenet"):
        assert type(_meta_model(name)) is Segmenter, name
    assert type(_meta_model("fcn8s_small")) is FCNVGG and type(_meta_model("unet_small")) is UNet
    assert type(_meta_model("maskrcnn_small")) is MaskRCNN


@pytest.mark.parametrize("name", sorted(MODELS))
def test_task_from_the_table_matches_the_model(name):
    assert model_task(name) == ("instance" if name.startswith("maskrcnn") else "semantic")
    assert _meta_model(name).task == model_task(name)


def test_presets_are_rows_of_defaults():
    assert model_options("unet_small") == {**model_options("unet"), "base_channels": 16, "depth": 3,
                                           "padding": "same", "batch_norm": True}  # fmt: skip
    assert model_options("maskrcnn_small")["backbone"] == "resnet18_fpn"
    assert model_options("maskrcnn")["backbone"] == "resnet50_fpn"
    model_options("unet")["depth"] = 99  # a copy: the table is not changed
    assert model_options("unet")["depth"] == 4


def test_bad_names_and_options_name_the_fix():
    with pytest.raises(SegbenchError, match="unknown model 'unet_smal'.*did you mean 'unet_small'"):
        model_task("unet_smal")
    with pytest.raises(SegbenchError, match="model 'deeplabv3' has no option 'outptu_stride'.*output_stride"):
        check_model_args("deeplabv3", {"outptu_stride": 8})
    for name in ("fcn_resnet50", "deeplabv3", "deeplabv3plus_mobilenet"):  # the run's config owns aux_weight
        with pytest.raises(SegbenchError, match="no option 'aux_weight'"):
            build_model(name, num_classes=3, aux=True, aux_weight=0.4)
    with pytest.raises(SegbenchError, match="model 'fcn8s_small' has no option 'width'"):
        build_model("fcn8s_small", num_classes=3, width=0.5)  # the preset fixes the width


def test_models_import_nothing_above_them():
    """models/ sits below the speed, runner, app, hub, cli and bench layers (imports point down only)."""
    import ast
    from pathlib import Path

    import segbench.models

    above = {"speed", "runner", "app", "app_logic", "hub", "cli", "bench", "engine", "records", "store", "analysis"}
    for path in Path(segbench.models.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2:  # "from ..x import y", "from .. import x"
                targets = [node.module] if node.module else [alias.name for alias in node.names]
                assert not {t.split(".")[0] for t in targets} & above, f"{path.name} imports ..{targets}"
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith(tuple(f"segbench.{m}" for m in above)), path.name
