"""torch.compile traces every semantic model, through the path the engine uses, as one graph (no graph breaks)."""

import pytest
import torch
import torch._dynamo as dynamo

from segbench.models import MODELS, build_model, model_options, model_task
from segbench.models.inference import forward_full

pytestmark = pytest.mark.slow  # torch.compile of every model: seconds each (make quick leaves them out)

SEMANTIC = sorted(name for name in MODELS if model_task(name) == "semantic")


@pytest.mark.parametrize("name", SEMANTIC)
def test_no_graph_breaks(name):
    options = model_options(name)
    kwargs = {"base_channels": 8} if "base_channels" in options else {"width": 0.25} if "width" in options else {}
    model = build_model(name, num_classes=3, **kwargs).eval()
    dynamo.reset()
    explanation = dynamo.explain(lambda x: forward_full(model, x)["out"])(torch.randn(1, 3, 64, 64))
    assert explanation.graph_break_count == 0, [str(b.reason) for b in explanation.break_reasons]
    assert explanation.graph_count == 1
