"""Instance pictures: per-instance colours, boxes and captions; the instance-id map (best score wins)."""

import torch

from segbench.viz.instances import draw_instances, instance_colors, instance_id_map


def _pred():
    masks = torch.zeros(3, 1, 20, 30)
    masks[0, 0, 2:10, 2:12] = 0.9
    masks[1, 0, 5:15, 8:20] = 0.8  # overlaps the first
    masks[2, 0, 15:20, 0:5] = 0.7
    return {
        "boxes": torch.tensor([[2.0, 2.0, 12.0, 10.0], [8.0, 5.0, 20.0, 15.0], [0.0, 15.0, 5.0, 20.0]]),
        "labels": torch.tensor([1, 2, 1]),
        "scores": torch.tensor([0.6, 0.9, 0.3]),
        "masks": masks,
    }


def test_instance_id_map_highest_score_wins():
    ids = instance_id_map(_pred(), score_threshold=0.5)
    assert ids.dtype == torch.int32 and ids.shape == (20, 30)
    assert ids[6, 10] == 2  # detection 1 (score 0.9) beats detection 0 (0.6)
    assert ids[3, 3] == 1 and ids[17, 2] == 0  # detection 2 is below the score threshold
    assert ids[0, 29] == 0
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0),
             "masks": torch.zeros(0, 1, 20, 30)}  # fmt: skip
    assert instance_id_map(empty).sum() == 0


def test_draw_instances():
    image = torch.full((1, 20, 30), 100, dtype=torch.uint8)  # grey input is drawn in colour
    image = torch.cat([image, torch.full((1, 40, 30), 100, dtype=torch.uint8)], dim=1)  # room below the captions
    pred = _pred()
    pred["masks"] = torch.cat([pred["masks"], torch.zeros(3, 1, 40, 30)], dim=2)
    out = draw_instances(image, pred, ["background", "cat", "dog"], palette=[(0, 0, 0), (255, 0, 0), (0, 255, 0)])
    assert out.dtype == torch.uint8 and out.shape == (3, 60, 30)
    assert not torch.equal(out[:, 6, 10], torch.tensor([100, 100, 100], dtype=torch.uint8))
    assert torch.equal(out[:, 55, 25], torch.tensor([100, 100, 100], dtype=torch.uint8))  # nothing there
    assert len(set(instance_colors(5))) == 5
    nothing = draw_instances(image, pred, ["background", "cat", "dog"], score_threshold=0.99)
    assert torch.equal(nothing, image.expand(3, -1, -1))
