"""Sliding-window evaluation and test-time augmentation (models/inference.py): exact equalities with whole-image
inference where they must hold, the overlap average computed by hand, the validation messages, and a tiny run
whose record and weights state the evaluation settings."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from segbench.config.run import make_config
from segbench.data import DatasetInfo
from segbench.errors import SegbenchError
from segbench.models import build_model, inference
from segbench.models.inference import (WHOLE, Evaluation, evaluation_from, evaluation_settings, infer,
                                       slide_logits, window_starts)
from segbench.inference.predict import LARGE_WINDOW, Predictor
from segbench.train.runner import run_one
from segbench.config.settings import EvalSettings
from segbench.weights.store import LocalStore
from segbench.weights.meta import WeightsMeta

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/app_fixtures.py


class PixelModel(nn.Module):
    """A 1x1 convolution: the output at a pixel depends only on that pixel (so also flip-equivariant)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 4) -> None:
        super().__init__()
        self.head = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"out": self.head(x)}


class WindowMean(nn.Module):
    """One class whose logit is the mean of input channel 0 over the whole window: a constant per window."""

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"out": x[:, :1].mean(dim=(2, 3), keepdim=True).expand(-1, -1, *x.shape[-2:])}


class MirrorConv(nn.Module):
    """A 3x3 convolution with left-right symmetric kernels and zero padding: flip-equivariant, not pixel-wise."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_((self.conv.weight + self.conv.weight.flip(-1)) / 2)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"out": self.conv(x)}


def _image(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def slide(crop, stride, **tta) -> Evaluation:
    return evaluation_settings(mode="slide", crop=crop, stride=stride, **tta)


# ---------------------------------------------------------------- window grid


def test_windows_cover_the_image_and_the_last_is_flush_to_the_border():
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]  # 0,3,6 on the grid; the last moved back to end at 11
    assert window_starts(12, 4, 4) == [0, 4, 8]  # stride = crop tiles exactly, no overlap
    assert window_starts(3, 4, 2) == [0]  # shorter than the crop: one window, the image's own length
    assert window_starts(1024, 512, 341) == [0, 341, 512]  # Cityscapes' height: 3 windows (MMSeg's grid)
    assert window_starts(2048, 1024, 683) == [0, 683, 1024]


# ---------------------------------------------------------------- exact equalities with whole-image inference


@pytest.mark.parametrize("size", [(12, 16), (13, 17)])  # divisible by the crop, and not (the last window overlaps)
def test_stride_equal_to_crop_equals_whole_for_a_pixelwise_model(size):
    model = PixelModel().eval()
    x = _image(2, 3, *size)
    whole = model(x)["out"]
    got = slide_logits(model, x, crop=(4, 8), stride=(4, 8))
    assert torch.equal(got, whole)  # each pixel: (a [+ a]) / count, exact in float


def test_stride_equal_to_crop_on_an_image_of_the_crop_size_equals_whole_for_real_models():
    torch.manual_seed(0)
    for name, options in (("fcn_resnet50", {"width": 0.125}), ("unet_small", {"base_channels": 4, "depth": 2}),
                          ("unet", {"base_channels": 4, "depth": 2})):  # unet: valid padding, mirror-padded inside
        model = build_model(name, num_classes=5, **options).eval()
        x = _image(1, 3, 48, 64)
        whole = infer(model, x, WHOLE)
        assert torch.equal(infer(model, x, slide([48, 64], [48, 64])), whole), name


def test_images_smaller_than_the_crop_run_whole():
    torch.manual_seed(0)
    model = build_model("unet_small", num_classes=3, base_channels=4, depth=2).eval()
    x = _image(1, 3, 20, 28)
    assert torch.equal(infer(model, x, slide([64, 64], [32, 32])), infer(model, x, WHOLE))


# ---------------------------------------------------------------- overlap averaging, by hand


def test_overlapping_windows_are_averaged_in_logit_space():
    """Input = column index; each window outputs its mean column. Width 11, crop 4, stride 3: windows [0,4),
    [3,7), [6,10), [7,11) with means 1.5, 4.5, 7.5, 8.5; a pixel gets the mean over the windows covering it."""
    columns = torch.arange(11, dtype=torch.float32).expand(1, 3, 2, 11)
    got = slide_logits(WindowMean(), columns, crop=(2, 4), stride=(2, 3))
    expected = torch.tensor([1.5, 1.5, 1.5, (1.5 + 4.5) / 2, 4.5, 4.5, (4.5 + 7.5) / 2,
                             (7.5 + 8.5) / 2, (7.5 + 8.5) / 2, (7.5 + 8.5) / 2, 8.5])
    assert got.shape == (1, 1, 2, 11)
    assert torch.equal(got[0, 0], expected.expand(2, 11))


def test_overlap_average_in_two_dimensions():
    """Input = row + 100 * column over 6 x 11 pixels, crop 3 x 4, stride 2 x 3. Rows: windows [0,3), [2,5),
    [3,6) with mean rows 1, 3, 4; columns as above. Windows form a grid, so a pixel's average is its rows' average
    plus 100 times its columns' average."""
    x = (torch.arange(6.0)[:, None] + 100 * torch.arange(11.0)).expand(1, 3, 6, 11)
    got = slide_logits(WindowMean(), x, crop=(3, 4), stride=(2, 3))
    rows = torch.tensor([1.0, 1.0, (1 + 3) / 2, (3 + 4) / 2, (3 + 4) / 2, 4.0])
    columns = torch.tensor([1.5, 1.5, 1.5, 3.0, 4.5, 4.5, 6.0, 8.0, 8.0, 8.0, 8.5])
    assert torch.allclose(got[0, 0], rows[:, None] + 100 * columns, rtol=0, atol=1e-4)


# ---------------------------------------------------------------- test-time augmentation


def test_tta_with_scale_one_and_no_flip_equals_plain():
    torch.manual_seed(0)
    model = build_model("unet_small", num_classes=3, base_channels=4, depth=2).eval()
    x = _image(2, 3, 24, 40)
    plain = infer(model, x, WHOLE)
    assert torch.equal(infer(model, x, evaluation_settings(scales=[1.0], flip=False)), plain)
    assert torch.equal(infer(model, x, slide([16, 16], [8, 8], scales=[1.0])), slide_logits(model, x, crop=(16, 16),
                                                                                           stride=(8, 8)))


@pytest.mark.parametrize("model", [PixelModel(), MirrorConv()], ids=["pixelwise", "mirror-symmetric"])
def test_flip_with_a_flip_equivariant_model_equals_plain(model):
    model.eval()
    x = _image(1, 3, 10, 13)
    plain = infer(model, x, WHOLE)
    flipped = infer(model, x, evaluation_settings(flip=True))
    assert torch.equal(flipped.argmax(1), plain.argmax(1))
    assert torch.allclose(flipped.softmax(1), plain.softmax(1), atol=1e-6)
    slid = infer(model, x, slide([6, 8], [4, 5], flip=True))  # flip composes with windows
    assert torch.allclose(slid.softmax(1), infer(model, x, slide([6, 8], [4, 5])).softmax(1), atol=1e-6)


def test_flip_averages_the_probabilities_of_the_mirror_view():
    """A model that is not flip-equivariant: the result is log((p(x) + flip(p(flip(x)))) / 2)."""
    torch.manual_seed(0)
    model = nn.Conv2d(3, 4, 3, padding=1).eval()
    wrapped = _Wrap(model)
    x = _image(1, 3, 8, 9)
    expected = (model(x).softmax(1) + model(x.flip(-1)).flip(-1).softmax(1)) / 2
    got = infer(wrapped, x, evaluation_settings(flip=True))
    assert torch.allclose(got.exp(), expected, atol=1e-6)


class _Wrap(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"out": self.inner(x)}


def test_scales_run_the_model_at_each_size_and_answer_at_the_output_size():
    sizes = []

    class Recorder(PixelModel):
        def forward(self, x):
            sizes.append(tuple(x.shape[-2:]))
            return super().forward(x)

    x = _image(1, 3, 20, 30)
    got = infer(Recorder().eval(), x, evaluation_settings(scales=[0.5, 1.0, 1.5]), out_size=(10, 15))
    assert sizes == [(10, 15), (20, 30), (30, 45)] and got.shape == (1, 4, 10, 15)
    assert torch.allclose(got.exp().sum(1), torch.ones(1, 10, 15), atol=1e-5)  # log of averaged probabilities


def test_evaluation_scores_resize_to_the_label_size_with_windows():
    torch.manual_seed(0)
    model = PixelModel().eval()
    x = _image(1, 3, 16, 24)
    info = DatasetInfo(name="pixels", num_classes=4, class_names=("a", "b", "c", "d"))

    def scores(evaluation: Evaluation) -> Tensor:
        settings = EvalSettings(amp=False, evaluation=evaluation)
        return Predictor.for_scoring(model, info=info, device=torch.device("cpu"), settings=settings).scores(
            x, out_size=(32, 48))

    got = scores(slide([8, 8], [8, 8]))
    assert got.shape == (1, 4, 32, 48) and torch.equal(got, scores(WHOLE))


# ---------------------------------------------------------------- validation, one line each


SLIDE = {"eval_mode": "slide"}


@pytest.mark.parametrize("values, message", [
    ({"eval_mode": "tiles"}, "eval_mode='tiles' is invalid; valid: one of whole, slide"),
    ({**SLIDE, "eval_crop": [0, 64], "eval_stride": [1, 1]}, "eval_crop=[0, 64] is invalid; valid: [H, W]"),
    ({**SLIDE, "eval_crop": [64, 64], "eval_stride": [0, 32]}, "eval_stride=[0, 32] is invalid; valid: [H, W]"),
    ({**SLIDE, "eval_crop": [64, 64], "eval_stride": [32, 65]}, "eval_stride must satisfy 0 < stride <= eval_crop"),
    ({**SLIDE, "eval_crop": [64], "eval_stride": [32, 32]}, "eval_crop=[64] is invalid; valid: [H, W]"),
    ({"eval_mode": "slide"}, "eval_mode=slide needs eval_crop and eval_stride"),
    ({"eval_crop": [64, 64], "eval_stride": [32, 32]}, "eval_crop/eval_stride apply to sliding windows"),
    ({"eval_scales": [0.5, 0]}, "eval_scales=[0.5, 0] is invalid; valid: a list of 1-16 numbers in (0, 16]"),
    ({"eval_scales": [-1.0]}, "eval_scales=[-1.0] is invalid; valid: a list of 1-16 numbers"),
    ({"eval_scales": []}, "eval_scales=[] is invalid; valid: a list of 1-16 numbers"),
    ({"eval_flip": "yes"}, "eval_flip='yes' is invalid; valid: true or false"),
    ({"model": "maskrcnn_small", "eval_flip": True}, "apply to semantic models"),
])
def test_bad_evaluation_settings_are_one_line(values, message):
    with pytest.raises(SegbenchError) as err:
        make_config({"model": "unet_small", **values}, "cfg.yaml")
    text = str(err.value)
    assert text.startswith("cfg.yaml: ") and message in text and "\n" not in text


def test_settings_round_trip_through_the_record_entry():
    evaluation = slide([512, 1024], [341, 683], scales=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75], flip=True)
    entry = json.loads(json.dumps(evaluation.to_dict()))
    assert entry == {"mode": "slide", "crop": [512, 1024], "stride": [341, 683],
                     "scales": [0.5, 0.75, 1.0, 1.25, 1.5, 1.75], "flip": True}
    assert evaluation_from(entry) == evaluation and evaluation_from(None) == WHOLE
    assert evaluation.views == 12
    with pytest.raises(SegbenchError, match="eval_stride"):
        evaluation_from({**entry, "stride": [600, 683]})  # a hand-edited model.json is checked too


# ---------------------------------------------------------------- predict and the app use the recorded settings


def test_predictor_runs_as_recorded_and_slides_large_images_of_whole_models():
    torch.manual_seed(0)
    model = PixelModel(in_channels=1, num_classes=3).eval()
    meta = WeightsMeta(task="semantic", in_channels=1, mean=(0.5,), std=(0.25,), num_classes=3)
    image = torch.randint(0, 256, (1, 40, 56), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    whole = Predictor.from_model(model, meta, fast=False)
    sliding = dataclasses.replace(meta, evaluation=slide([16, 16], [8, 8]).to_dict())
    slid = Predictor.from_model(model, sliding, fast=False)
    assert slid.evaluation_for((40, 56)).mode == "slide" and whole.evaluation_for((40, 56)) == WHOLE
    assert torch.equal(slid(image).mask, whole(image).mask)  # pixel-wise model: windows change nothing
    large = Predictor.from_model(model, meta, fast=False, slide_above=48)
    assert large.evaluation_for((40, 48)) == WHOLE  # longer side 48: not above the threshold
    assert large.evaluation_for((40, 56)).crop == LARGE_WINDOW
    assert torch.equal(large(image).mask, whole(image).mask)


def test_a_tiny_run_with_sliding_windows_records_the_evaluation(tmp_path, tiny_config, monkeypatch):
    cfg = make_config({**tiny_config, "eval_mode": "slide", "eval_crop": [16, 24], "eval_stride": [8, 16],
                       "eval_flip": True, "device": "cpu"})
    sweeps = []
    original = inference.slide_logits
    monkeypatch.setattr(inference, "slide_logits", lambda *a, **k: sweeps.append(k["crop"]) or original(*a, **k))
    record = run_one(cfg, store=LocalStore(tmp_path / "store"), leaderboard=tmp_path / "board", progress=False,
                     log=lambda _: None)
    expected = {"mode": "slide", "crop": [16, 24], "stride": [8, 16], "scales": [1.0], "flip": True}
    assert record["evaluation"] == expected and record["config"]["eval_mode"] == "slide"
    assert 0.0 <= record["metrics"]["miou"] <= 1.0 and sweeps and set(sweeps) == {(16, 24)}  # scored with windows
    weights = LocalStore(tmp_path / "store").run_dir(cfg.dataset, cfg.display_name(), cfg.run_id())
    assert json.loads((weights / "model.json").read_text())["evaluation"] == expected
    assert Predictor(weights).evaluation == evaluation_from(expected)
    whole = make_config({**tiny_config, "device": "cpu"})
    assert whole.run_id() != cfg.run_id()  # the settings change the scores, so they are part of the id


def test_the_app_runs_large_uploads_in_windows_at_full_size(tmp_path):
    """An upload longer than catalog.SLIDE_ABOVE is not downscaled; a whole-image model slides over it, says so in
    the notices and the results table, and returns the mask at the upload's size."""
    from app_fixtures import write_model_store

    from segbench.app import catalog, compare, uploads  # the app's modules import Gradio: only this test needs them

    write_model_store(tmp_path / "store", tmp_path / "board", specs=[("unet_small", {"base_channels": 4, "depth": 2})])
    models = catalog.discover_models(tmp_path / "store", [])
    entry = models["synthetic"][0]
    path = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 100, 3), dtype=np.uint8)).save(path)
    image, notices = uploads.read_upload(path)
    assert image.shape == (3, 24, 100) and notices == []
    cache = catalog.PredictorCache(slide_above=64)
    result = compare.compare(image, [entry], cache)
    predictor = cache.get(entry)
    assert predictor.evaluation_for((24, 100)).mode == "slide" and result.results[0].mask.shape == (24, 100)
    assert any("sliding windows" in n for n in result.notices)
    assert "sliding 1024x1024 windows" in compare.results_table(result).loc[0, "Runs at"]
    small = compare.compare(image[:, :, :60], [entry], cache)
    assert small.results[0].evaluation == "whole image" and not any("sliding" in n for n in small.notices)
