"""One test over every semantic model in MODELS (as torchvision's test_segmentation_model): output shape at odd and
even sizes, finite values, backward, one SGD step at batch size 1 in train mode, deterministic eval output.

Models are built narrow (``base_channels``/``width`` where the builder takes them) to keep the file fast on 2 CPU
cores; models still above 60M parameters run at one small size only. Instance models have their own tests.
"""

import pytest
import torch
import torch.nn.functional as F

from segbench.models import MODELS, build_model, model_options, model_task
from segbench.models.inference import forward_full

NUM_CLASSES = 3
NARROW = {"base_channels": 8, "width": 0.25}  # width-reducing options, passed where a builder takes them
HEAVY_PARAMS = 60_000_000
SIZES = [(1, 97, 131), (2, 64, 64)]  # (batch, H, W): odd and even
HEAVY_SIZES = [(1, 33, 47)]


def _build(name: str) -> torch.nn.Module:
    options = model_options(name)
    return build_model(name, num_classes=NUM_CLASSES, **{k: v for k, v in NARROW.items() if k in options})


def _check_outputs(outputs: dict[str, torch.Tensor], batch: int, height: int, width: int) -> None:
    assert "out" in outputs
    for key, value in outputs.items():
        assert value.shape == (batch, NUM_CLASSES, height, width), key
        assert torch.isfinite(value).all(), key


SEMANTIC = sorted(name for name in MODELS if model_task(name) == "semantic")  # instance models: test_maskrcnn.py


@pytest.mark.parametrize("name", SEMANTIC, ids=SEMANTIC)
def test_semantic_model(name):
    torch.manual_seed(0)
    model = _build(name)
    assert model.task == "semantic"
    assert model.family and model.variant and model.output_stride >= 1
    heavy = sum(p.numel() for p in model.parameters()) > HEAVY_PARAMS
    sizes = HEAVY_SIZES if heavy else SIZES

    model.train()
    for batch, height, width in sizes:
        outputs = forward_full(model, torch.randn(batch, 3, height, width))
        _check_outputs(outputs, batch, height, width)
        sum(v.float().mean() for v in outputs.values()).backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        model.zero_grad(set_to_none=True)

    # One SGD step at batch size 1 (BatchNorm on 1x1 maps must not fail) changes the weights.
    _, height, width = sizes[-1]
    x = torch.randn(1, 3, height, width)
    target = torch.randint(0, NUM_CLASSES, (1, height, width))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    loss = F.cross_entropy(forward_full(model, x)["out"], target)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))

    model.eval()
    with torch.no_grad():
        first = forward_full(model, x)["out"]
        second = forward_full(model, x)["out"]
    assert first.shape == (1, NUM_CLASSES, height, width)
    assert torch.equal(first, second)
