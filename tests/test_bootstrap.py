"""Bootstrap CI of mIoU over images, the paired bootstrap and shared ranks, against hand-computed cases."""

import math

import pytest
import torch

from segbench.errors import SegbenchError
from segbench.evaluation.metrics import ConfusionMatrix, bootstrap_miou_ci, paired_bootstrap, tie_groups


def _random_counts(n: int, k: int, seed: int, quality: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image union ~ U[1000, 5000) pixels and intersection = union x U[quality - 0.1, quality + 0.1)."""
    gen = torch.Generator().manual_seed(seed)
    union = torch.randint(1000, 5000, (n, k), generator=gen)
    fraction = (quality + 0.2 * (torch.rand(n, k, generator=gen) - 0.5)).clamp(0, 1)
    return (union * fraction).long(), union


def test_two_images_hand_computed():
    # Image 1 only has class 0 (IoU 1/2), image 2 only class 1 (IoU 3/4). The three possible resamples:
    # {1, 1} -> 1/2 (class 1 absent, left out), {2, 2} -> 3/4, {1, 2} -> (1/2 + 3/4) / 2, with probabilities
    # 1/4, 1/4, 1/2. The 2.5% and 97.5% percentiles of 1000 resamples are therefore exactly 1/2 and 3/4.
    low, high = bootstrap_miou_ci([[1, 0], [0, 3]], [[2, 0], [0, 4]])
    assert (low, high) == (0.5, 0.75)
    # At level 0.4 both percentiles (30% and 70%) fall inside the middle mass at 0.625.
    assert bootstrap_miou_ci([[1, 0], [0, 3]], [[2, 0], [0, 4]], level=0.4) == (0.625, 0.625)


def test_ci_brackets_the_dataset_miou_and_is_deterministic():
    inter, union = _random_counts(200, 5, seed=1, quality=0.6)
    miou = float((inter.sum(0) / union.sum(0)).mean())
    low, high = bootstrap_miou_ci(inter, union, seed=3)
    assert low < miou < high and high - low < 0.02
    assert bootstrap_miou_ci(inter, union, seed=3) == (low, high)
    assert bootstrap_miou_ci(inter, union, seed=4) != (low, high)
    assert bootstrap_miou_ci(inter[:1], union[:1]) == pytest.approx((math.nan, math.nan), nan_ok=True)


def test_identical_models_tie():
    inter, union = _random_counts(50, 4, seed=2, quality=0.5)
    result = paired_bootstrap(inter, union, inter, union)
    assert result == {"diff": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0}
    rows = [{"miou": 0.5, "per_image": {"intersection": inter.tolist(), "union": union.tolist()}}] * 2
    assert tie_groups(rows) == [1, 1]


def test_clearly_different_models_are_separated():
    inter_a, union = _random_counts(60, 4, seed=5, quality=0.7)
    inter_b = (inter_a * 0.9).long()  # B loses 10% of every intersection: worse on every image
    result = paired_bootstrap(inter_a, union, inter_b, union)
    assert result["diff"] > 0 and 0 < result["low"] <= result["diff"] <= result["high"]
    assert result["p_value"] == pytest.approx(2 / 1001)  # no resample has d* <= 0: the floor of the correction
    swapped = paired_bootstrap(inter_b, union, inter_a, union)
    assert swapped["diff"] == pytest.approx(-result["diff"]) and swapped["high"] < 0


def test_paired_resampling_cancels_image_difficulty():
    # Per-image scores vary a lot, but B is A minus a constant on every image: the unpaired CIs overlap,
    # the paired CI of the difference does not include 0.
    gen = torch.Generator().manual_seed(7)
    union = torch.full((40, 1), 1000)
    inter_a = (torch.rand(40, 1, generator=gen) * 600 + 300).long()
    inter_b = inter_a - 20
    low_a, _ = bootstrap_miou_ci(inter_a, union)
    _, high_b = bootstrap_miou_ci(inter_b, union)
    assert high_b > low_a  # unpaired intervals overlap
    paired = paired_bootstrap(inter_a, union, inter_b, union)
    assert paired["low"] == pytest.approx(0.02) and paired["high"] == pytest.approx(0.02)


def test_tie_groups_ranks():
    inter, union = _random_counts(40, 3, seed=9, quality=0.8)
    close = inter.clone()
    close[0, 0] -= 1  # one pixel fewer: indistinguishable
    worse = (inter * 0.7).long()

    def row(i):
        return {"miou": float((i.sum(0) / union.sum(0)).mean()), "intersection": i, "union": union}

    assert tie_groups([row(inter), row(close), row(worse)]) == [1, 1, 3]
    assert tie_groups([row(inter), row(worse), row(worse)]) == [1, 2, 2]
    no_data = {"miou": 0.1, "per_image": None}
    assert tie_groups([row(inter), row(worse), no_data]) == [1, 2, 3]
    assert tie_groups([]) == []
    with pytest.raises(SegbenchError, match="sorted by mIoU"):
        tie_groups([row(worse), row(inter)])


def test_bad_input_is_one_clear_error():
    with pytest.raises(SegbenchError, match=r"\[N images, K classes\]"):
        bootstrap_miou_ci([1, 2], [3, 4])
    with pytest.raises(SegbenchError, match="intersection <= union"):
        bootstrap_miou_ci([[5]], [[4]])
    with pytest.raises(SegbenchError, match="same images"):
        paired_bootstrap([[1], [1]], [[2], [2]], [[1]], [[2]])
    with pytest.raises(SegbenchError, match="resamples"):
        bootstrap_miou_ci([[1], [1]], [[2], [2]], resamples=0)
    with pytest.raises(SegbenchError, match="level"):
        bootstrap_miou_ci([[1], [1]], [[2], [2]], level=95)


# ---------------------------------------------------------------------------------------------------------------------
# ConfusionMatrix(per_image=True)
# ---------------------------------------------------------------------------------------------------------------------


def test_per_image_counts_hand_computed():
    # K=3. Image 0: class 0 TP 2, class 1 TP 1 + one 1->2 error; image 1: all class 2 except an ignored pixel
    # and a 2->0 error. Per-image union = TP + FP + FN.
    target = torch.tensor([[[0, 0], [1, 1]], [[2, 2], [2, 255]]])
    pred = torch.tensor([[[0, 0], [1, 2]], [[2, 2], [0, 1]]])
    cm = ConfusionMatrix(3, per_image=True)
    cm.update(pred, target)
    cm.update(pred[1], target[1])  # an unbatched image adds one row
    inter, union = cm.image_counts()
    assert inter.dtype == union.dtype == torch.int64
    assert inter.tolist() == [[2, 1, 0], [0, 0, 2], [0, 0, 2]]
    assert union.tolist() == [[2, 2, 1], [1, 0, 3], [1, 0, 3]]
    plain = ConfusionMatrix(3)
    plain.update(pred, target)
    plain.update(pred[1], target[1])
    assert torch.equal(cm.matrix, plain.matrix)  # the per-image bincount sums to the same matrix

    r = cm.compute()
    # key by key: pytest >= 9 refuses approx over a dict that holds lists ("nested dictionaries")
    for key, value in plain.compute().items():
        assert r[key] == pytest.approx(value, nan_ok=True), key
    assert r["per_image"] == {"intersection": inter.tolist(), "union": union.tolist()}
    assert r["ci"] == {"method": "bootstrap over images, percentile", "level": 0.95, "resamples": 1000, "seed": 0}
    assert r["miou_ci"] == list(bootstrap_miou_ci(inter, union))
    assert r["miou_ci"][0] <= r["miou"] <= r["miou_ci"][1]
    cm.reset()
    cm.update(pred[0], target[0])
    assert cm.compute()["miou_ci"] is None  # one image: no interval
    assert "miou_ci" not in plain.compute() and "boundary_iou" not in plain.compute()


def test_per_image_bad_values_still_one_error():
    cm = ConfusionMatrix(2, per_image=True)
    with pytest.raises(SegbenchError, match=r"target has values \[7\]"):
        cm.update(torch.zeros(2, 2, 2, dtype=torch.int64), torch.full((2, 2, 2), 7))


def test_all_reduce_gathers_per_image_counts(tmp_path):
    dist = torch.distributed
    target = torch.tensor([[[0, 1], [1, 1]], [[1, 1], [0, 0]]])
    cm = ConfusionMatrix(2, per_image=True, boundary=True)
    cm.update(target.flip(-1), target)
    before = (cm.matrix.clone(), cm.boundary_counts.clone(), *cm.image_counts())
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        cm.all_reduce()
    finally:
        dist.destroy_process_group()
    after = (cm.matrix, cm.boundary_counts, *cm.image_counts())
    assert all(torch.equal(a, b) for a, b in zip(before, after))
