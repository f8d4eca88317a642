"""The metric/column table every reader shares: well formed, and its scores are what ConfusionMatrix computes."""

import torch
from segbench.evaluation.metrics import ConfusionMatrix

from segbench.records import columns


def test_the_table_is_well_formed():
    keys = [c.key for c in columns.COLUMNS]
    assert len(keys) == len(set(keys)) and columns.HEADLINE in columns.SCORE_KEYS
    cards = [c.card for c in columns.SCORES if c.card]
    assert len(cards) == len(set(cards))
    for c in columns.COLUMNS:
        assert c.better in ("higher", "lower", "") and c.task in ("semantic", "instance")
        assert c.fmt == "" or format(1.5, c.fmt)  # a valid format spec
        assert not c.score or c.unit == "%"  # scores are fractions shown as percentages
    assert columns.column("miou") is columns.BY_KEY["miou"]


def test_a_wrong_key_lists_the_known_ones():
    try:
        columns.column("mIoU")
    except KeyError as exc:
        assert "miou" in str(exc) and "fwiou" in str(exc)
    else:
        raise AssertionError("no KeyError")


def test_every_semantic_score_is_computed_from_the_confusion_matrix():
    summary = ConfusionMatrix.summary(torch.tensor([[3, 1], [0, 2]]))
    for c in columns.SCORES:
        if c.task == "semantic" and c.key != "mean_boundary_iou":  # Boundary IoU needs masks, not the matrix
            assert isinstance(summary[c.key], float), c.key
