"""WeightsMeta: every model.json on disk loads and writes back byte for byte; bad files are one line naming the
file and the key."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from segbench.errors import SegbenchError
from segbench.weights.meta import _RULES, WeightsMeta

REPO = Path(__file__).resolve().parents[1]
ON_DISK = sorted(REPO.glob("leaderboard/**/model.json"))
OLDEST = {"model": "unet_small", "num_classes": 3, "mean": [0.5] * 3, "std": [0.25] * 3}  # the keys load_model needs


def test_one_rule_per_field():
    assert [f.name for f in dataclasses.fields(WeightsMeta)] == list(_RULES)


@pytest.mark.parametrize("path", ON_DISK, ids=lambda p: p.parent.name)
def test_every_committed_model_json_round_trips_byte_for_byte(path):
    text = path.read_text(encoding="utf-8")
    meta = WeightsMeta.from_dict(json.loads(text), source=path)
    assert json.dumps(meta.to_dict(), indent=2) + "\n" == text


def test_the_pack_holds_model_json_files():
    assert len(ON_DISK) >= 4


def test_older_weights_load_with_the_defaults():
    meta = WeightsMeta.from_dict(OLDEST)
    assert meta.task == "semantic" and meta.in_channels == 3 and meta.semantic_classes == 3
    assert meta.evaluation is None and meta.amp and meta.channels_last and meta.score_threshold == 0.5
    assert meta.display_name == "unet_small" and meta.mean == (0.5, 0.5, 0.5)
    assert "training" not in meta.to_dict() and list(meta.to_dict())[:3] == ["model", "model_args", "num_classes"]


@pytest.mark.parametrize("change, fragment", [
    ({"num_clases": 3}, "unknown key 'num_clases' (did you mean 'num_classes'?)"),
    ({"num_classes": "3"}, "num_classes='3' is invalid; valid: an integer in [1, 65536]"),
    ({"num_classes": 0}, "num_classes=0 is invalid"),
    ({"task": "panoptic"}, "valid: semantic or instance"),
    ({"std": [0.25, 0.0, 0.25]}, "std=[0.25, 0.0, 0.25] is invalid"),
    ({"mean": [0.5]}, "mean has 1 values for in_channels=3"),
    ({"palette": [[0, 0, 300]]}, "palette=[[0, 0, 300]] is invalid"),
    ({"eval_size": [64]}, "eval_size=[64] is invalid"),
    ({"model_args": {"depth": {"a": [1]}}}, "model_args="),
    ({"evaluation": {"mode": "tiles"}}, "evaluation="),
    ({"amp": None}, "amp=None is invalid"),
])
def test_a_bad_value_is_one_line_naming_the_file_the_key_and_the_fix(change, fragment):
    with pytest.raises(SegbenchError) as info:
        WeightsMeta.from_dict({**OLDEST, **change}, source="w/model.json")
    message = str(info.value)
    assert message.startswith("w/model.json: ") and fragment in message and "\n" not in message
    assert message.endswith("retrain, or pull or download the weights again")


def test_missing_keys_and_non_objects_are_refused():
    with pytest.raises(SegbenchError, match="m.json: weights config lacks num_classes"):
        WeightsMeta.from_dict({k: v for k, v in OLDEST.items() if k != "num_classes"}, source="m.json")
    with pytest.raises(SegbenchError, match="m.json: weights config is not a JSON object"):
        WeightsMeta.from_dict([1, 2], source="m.json")
