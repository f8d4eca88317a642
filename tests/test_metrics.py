"""ConfusionMatrix against hand-computed matrices and torchmetrics; to_semantic on hand-made predictions."""

import math

import pytest
import torch

from segbench.errors import SegbenchError
from segbench.evaluation.metrics import ConfusionMatrix, to_semantic

NAN = float("nan")


def _same(a: list[float], b: list[float]) -> bool:
    """Equal lists where NaN == NaN."""
    return len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or x == pytest.approx(y) for x, y in zip(a, b))


# ---------------------------------------------------------------------------------------------------------------------
# ConfusionMatrix: hand-computed cases
# ---------------------------------------------------------------------------------------------------------------------


def test_hand_computed_with_absent_ignored_and_predicted_only_classes():
    # K=4. Class 2 appears nowhere (absent); class 3 is predicted but never in the ground truth; 255 is ignored.
    target = torch.tensor([[0, 0, 0, 1], [1, 1, 255, 255]])
    pred = torch.tensor([[0, 0, 1, 1], [1, 3, 2, 0]])  # the 2 and 0 under 255 must not count
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    expected = torch.tensor([[2, 1, 0, 0], [0, 2, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert torch.equal(cm.matrix, expected)
    assert cm.matrix.dtype == torch.int64

    r = cm.compute()
    # class 0: TP 2, FN 1, FP 0 -> IoU 2/3, acc 2/3, dice 4/5; class 1: TP 2, FN 1, FP 1 -> IoU 2/4, acc 2/3, dice 4/6
    # class 3: TP 0, FP 1 -> IoU 0, acc NaN, dice 0; class 2: empty union -> NaN everywhere, absent.
    assert _same(r["iou"], [2 / 3, 1 / 2, NAN, 0.0])
    assert _same(r["accuracy"], [2 / 3, 2 / 3, NAN, NAN])
    assert _same(r["dice"], [4 / 5, 4 / 6, NAN, 0.0])
    assert r["absent"] == [2]
    assert r["pixel_accuracy"] == pytest.approx(4 / 6)
    assert r["mean_pixel_accuracy"] == pytest.approx(2 / 3)  # class 3 left out of mPA
    assert r["miou"] == pytest.approx((2 / 3 + 1 / 2 + 0.0) / 3)  # class 3 counts as 0, class 2 excluded
    assert r["mean_dice"] == pytest.approx((4 / 5 + 4 / 6 + 0.0) / 3)
    assert r["fwiou"] == pytest.approx(3 / 6 * 2 / 3 + 3 / 6 * 1 / 2)
    assert all(type(r[key]) is float for key in ("pixel_accuracy", "mean_pixel_accuracy", "miou", "fwiou", "mean_dice"))


def test_frequency_weighted_dice_by_hand():
    """fw_dice = sum over classes in the ground truth of (GT pixels / all labelled pixels) * Dice."""
    # rows = ground truth, cols = prediction. Class 0: TP 5, FN 1, FP 1 -> Dice 10/12, 6 GT pixels;
    # class 1: TP 2, FN 2, FP 1 -> Dice 4/7, 4 GT pixels; class 2: predicted once, never in the GT -> weight 0.
    matrix = torch.tensor([[5, 1, 0], [1, 2, 1], [0, 0, 0]])
    r = ConfusionMatrix.summary(matrix)
    assert r["fw_dice"] == pytest.approx(6 / 10 * 10 / 12 + 4 / 10 * 4 / 7)
    assert type(r["fw_dice"]) is float
    assert ConfusionMatrix.summary(torch.diag(torch.tensor([3, 1])))["fw_dice"] == 1.0
    assert math.isnan(ConfusionMatrix(2).compute()["fw_dice"])  # no pixels: NaN, no error


def test_all_correct_and_all_wrong():
    target = torch.tensor([[[0, 1], [2, 2]]])
    cm = ConfusionMatrix(3)
    cm.update(target.clone(), target)
    r = cm.compute()
    assert r["pixel_accuracy"] == r["mean_pixel_accuracy"] == r["miou"] == r["fwiou"] == r["mean_dice"] == 1.0
    assert r["absent"] == []

    cm.reset()
    assert cm.matrix.sum() == 0
    cm.update((target + 1) % 3, target)
    r = cm.compute()
    assert r["pixel_accuracy"] == r["mean_pixel_accuracy"] == r["miou"] == r["fwiou"] == r["mean_dice"] == 0.0


def test_logits_input_and_accumulation():
    target = torch.tensor([[[0, 1], [1, 255]]])
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1] = torch.tensor([[1.0, 1.0], [-1.0, 5.0]])  # argmax: [[1, 1], [0, 1]]
    cm = ConfusionMatrix(2)
    cm.update(logits, target)
    cm.update(logits[0], target[0])  # unbatched logits [K,H,W] with mask [H,W]
    assert cm.matrix.tolist() == [[0, 2], [2, 2]]


def test_uint8_class_map_and_custom_ignore():
    target = torch.tensor([[0, 1, 9]])
    pred = torch.tensor([[0, 1, 1]], dtype=torch.uint8)
    cm = ConfusionMatrix(2, ignore_index=9)
    cm.update(pred, target)
    assert cm.matrix.tolist() == [[1, 0], [0, 1]]


def test_empty_matrix_gives_nan_not_crash():
    r = ConfusionMatrix(3).compute()
    for key in ("pixel_accuracy", "mean_pixel_accuracy", "miou", "fwiou", "mean_dice"):
        assert math.isnan(r[key])
    assert all(math.isnan(v) for v in r["iou"] + r["accuracy"] + r["dice"])
    assert r["absent"] == [0, 1, 2]

    cm = ConfusionMatrix(3)  # only ignored pixels: still empty
    cm.update(torch.zeros(2, 2, dtype=torch.int64), torch.full((2, 2), 255))
    assert math.isnan(cm.compute()["miou"])


def test_summary_of_an_existing_matrix():
    r = ConfusionMatrix.summary(torch.tensor([[3, 1], [0, 4]]))
    assert r["iou"] == pytest.approx([3 / 4, 4 / 5])
    assert r["pixel_accuracy"] == pytest.approx(7 / 8)


@pytest.mark.parametrize(
    ("pred", "target", "message"),
    [
        (torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 2, dtype=torch.int64), "differ in shape"),
        (torch.zeros(1, 5, 2, 2), torch.zeros(1, 2, 2, dtype=torch.int64), "have 5 classes"),
        (torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.int64), "float pred"),
        (torch.zeros(2, 2, dtype=torch.int64), torch.zeros(2, 2), "integer class map"),
        (torch.zeros(2, 2, dtype=torch.int64), torch.tensor([[0, 7], [-1, 255]]), r"target has values \[-1, 7\]"),
        (torch.tensor([[0, 3], [0, 0]]), torch.zeros(2, 2, dtype=torch.int64), r"pred has values \[3\]"),
    ],
)
def test_bad_input_raises_one_line_error(pred, target, message):
    cm = ConfusionMatrix(3)
    with pytest.raises(SegbenchError, match=message) as info:
        cm.update(pred, target)
    assert "\n" not in str(info.value)
    assert cm.matrix.sum() == 0  # a rejected batch leaves the matrix untouched


def test_all_reduce_is_a_noop_without_distributed():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 0]]))
    cm.all_reduce()
    assert cm.matrix.tolist() == [[1, 1], [0, 0]]


# ---------------------------------------------------------------------------------------------------------------------
# ConfusionMatrix: parity with torchmetrics
# ---------------------------------------------------------------------------------------------------------------------


def test_matches_torchmetrics_on_random_data():
    import torchmetrics.classification as tm
    k = 5
    gen = torch.Generator().manual_seed(0)
    targets = torch.randint(0, k, (3, 2, 32, 32), generator=gen)
    targets[torch.rand(targets.shape, generator=gen) < 0.1] = 255
    preds = torch.where(torch.rand(targets.shape, generator=gen) < 0.6, targets % k, torch.randint(0, k, targets.shape))

    ours = ConfusionMatrix(k)
    jaccard = tm.MulticlassJaccardIndex(k, average="macro", ignore_index=255)
    accuracy = tm.MulticlassAccuracy(k, average="macro", ignore_index=255)
    for pred, target in zip(preds, targets):
        ours.update(pred, target)
        jaccard.update(pred, target)
        accuracy.update(pred, target)
    r = ours.compute()
    assert r["absent"] == []
    assert abs(r["miou"] - float(jaccard.compute())) < 1e-6
    assert abs(r["mean_pixel_accuracy"] - float(accuracy.compute())) < 1e-6


# ---------------------------------------------------------------------------------------------------------------------
# to_semantic
# ---------------------------------------------------------------------------------------------------------------------


def _prediction(masks: list[list[list[float]]], scores: list[float], labels: list[int]) -> dict:
    return {
        "masks": torch.tensor(masks, dtype=torch.float32).unsqueeze(1),  # [N, 1, H, W]
        "scores": torch.tensor(scores),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "boxes": torch.zeros(len(scores), 4),
    }


def test_to_semantic_overlap_goes_to_the_higher_score():
    pred = _prediction(
        [[[0.9, 0.9, 0.0], [0.0, 0.0, 0.0]], [[0.0, 0.8, 0.8], [0.0, 0.0, 0.0]]],
        scores=[0.6, 0.9],
        labels=[1, 2],
    )
    out = to_semantic(pred, 3, 2, 3)
    assert out.dtype == torch.int64
    assert out.tolist() == [[1, 2, 2], [0, 0, 0]]


def test_to_semantic_thresholds_fill_and_label_mapping():
    pred = _prediction(
        [[[0.9, 0.4], [0.6, 0.0]], [[0.9, 0.9], [0.9, 0.9]]],
        scores=[0.8, 0.3],  # the second detection falls below score_threshold
        labels=[1, 1],
    )
    assert to_semantic(pred, 4, 2, 2, fill=3).tolist() == [[1, 3], [1, 3]]
    assert to_semantic(pred, 4, 2, 2, mask_threshold=0.7, fill=3).tolist() == [[1, 3], [3, 3]]
    assert to_semantic(pred, 4, 2, 2, score_threshold=0.2, label_to_class=[0, 2]).tolist() == [[2, 2], [2, 2]]


def test_to_semantic_empty_prediction_and_bad_inputs():
    empty = {"masks": torch.zeros(0, 1, 2, 3), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    assert to_semantic(empty, 2, 2, 3, fill=1).tolist() == [[1, 1, 1], [1, 1, 1]]

    pred = _prediction([[[0.9, 0.9]]], scores=[0.9], labels=[5])
    with pytest.raises(SegbenchError, match="outside"):
        to_semantic(pred, 3, 1, 2)
    with pytest.raises(SegbenchError, match="image size"):
        to_semantic(pred, 6, 2, 2)
