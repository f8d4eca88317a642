"""The device-resident training split: geometry against the host transforms, padding, jitter, batching, runner."""

import pytest
import torch
import torch.nn.functional as tf
import yaml

from segbench.cli import main
from segbench.data import build_dataset
from segbench.data.resident import DeviceAugment, NotResident, Preload, ResidentLoader
from segbench.records.io import load_records

CPU = torch.device("cpu")


def _batch(b=4, c=3, h=20, w=30, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8, generator=g)
    masks = torch.randint(0, k, (b, h, w), generator=g)
    return images, masks


def _windows(big, size):
    """Every ``size`` window of ``big [..., H, W]`` as a dict offset -> window."""
    h, w = size
    return {(t, l): big[..., t:t + h, l:l + w] for t in range(big.shape[-2] - h + 1) for l in range(big.shape[-1] - w + 1)}


def test_identity_and_flip_are_exact():
    images, masks = _batch()
    g = torch.Generator().manual_seed(1)
    out, target = DeviceAugment(None, hflip=False)(images, masks, g)
    assert torch.equal(out, images) and torch.equal(target, masks) and target.dtype == torch.int64
    out, target = DeviceAugment(None, hflip=True)(images, masks, g)
    flipped = [not torch.equal(out[i], images[i]) for i in range(4)]
    for i in range(4):
        want_img = images[i].flip(-1) if flipped[i] else images[i]
        want_mask = masks[i].flip(-1) if flipped[i] else masks[i]
        assert torch.equal(out[i], want_img) and torch.equal(target[i], want_mask)
    assert any(flipped) and not all(flipped)  # seed 1 draws both outcomes


def test_scaled_crop_is_a_window_of_the_resized_mask():
    """At scale 2 every output mask is a window of the nearest-resized mask (what TrainTransform would produce)."""
    images, masks = _batch(k=7)
    out, target = DeviceAugment(12, scale=(2.0, 2.0), hflip=False)(images, masks, torch.Generator().manual_seed(3))
    assert out.shape == (4, 3, 12, 12) and target.shape == (4, 12, 12)
    for i in range(4):
        big_mask = tf.interpolate(masks[i][None, None].float(), size=(40, 60), mode="nearest")[0, 0].long()
        offsets = [o for o, win in _windows(big_mask, (12, 12)).items() if torch.equal(win, target[i])]
        assert len(offsets) == 1
        t, l = offsets[0]
        big_img = tf.interpolate(images[i][None].float(), size=(40, 60), mode="bilinear", align_corners=False)[0]
        assert (out[i].float() - big_img[:, t:t + 12, l:l + 12]).abs().max() <= 1.0  # rounding to uint8 only


def test_small_images_are_padded_with_ignore_and_zero():
    images, masks = _batch(b=3, h=8, w=6)
    out, target = DeviceAugment((16, 16), hflip=False, ignore_index=255)(images, masks, torch.Generator().manual_seed(0))
    for i in range(3):
        inside = target[i] != 255
        assert int(inside.sum()) == 8 * 6
        rows, cols = inside.nonzero(as_tuple=True)
        t, l = int(rows.min()), int(cols.min())
        assert torch.equal(target[i, t:t + 8, l:l + 6], masks[i]) and torch.equal(out[i, :, t:t + 8, l:l + 6], images[i])
        assert int(out[i].sum()) == int(images[i].sum())  # the padding is 0


def test_colour_jitter_changes_colours_only():
    images, masks = _batch()
    g = torch.Generator().manual_seed(0)
    out, target = DeviceAugment(None, hflip=False, color_jitter=0.4)(images, masks, g)
    assert torch.equal(target, masks) and not torch.equal(out, images) and out.dtype == torch.uint8
    grey, _ = _batch(c=1)
    out, _ = DeviceAugment(None, hflip=False, color_jitter=0.4)(grey, masks, g)
    assert torch.equal(out, grey)  # jitter is for RGB only, as in TrainTransform


def test_scale_without_crop_is_refused():
    with pytest.raises(NotResident, match="set crop_size"):
        DeviceAugment(None, scale=(0.5, 2.0))


def test_loader_batches_every_image_once_and_reseeds():
    ds = build_dataset("synthetic", split="train", size=24, num_images=10)
    loader = ResidentLoader(ds, batch_size=4, device=CPU, augment=None, seed=0, drop_last=False)
    assert len(loader) == 3 and loader.images.dtype == torch.uint8 and loader.masks.dtype == torch.uint8
    batches = list(loader)
    assert [b[0].shape[0] for b in batches] == [4, 4, 2] and batches[0][1].dtype == torch.int64
    seen = torch.cat([b[1] for b in batches])
    expected = torch.stack([ds[i][1] for i in range(10)])
    # each image exactly once: match rows by content
    assert sorted(int((seen == expected[i]).flatten(1).all(1).nonzero()[0]) for i in range(10)) == list(range(10))
    loader.generator.manual_seed(5)
    first = [m.clone() for _, m in loader]
    loader.generator.manual_seed(5)
    assert all(torch.equal(a, m) for a, (_, m) in zip(first, loader))
    assert len(ResidentLoader(ds, batch_size=4, device=CPU, augment=None)) == 2  # drop_last


class _Sizes(torch.utils.data.Dataset):
    def __init__(self, sizes):
        self.sizes = sizes

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, i):
        h, w = self.sizes[i]
        return torch.zeros(3, h, w, dtype=torch.uint8), torch.zeros(h, w, dtype=torch.int64)


def test_loader_refuses_mixed_sizes_and_over_budget():
    with pytest.raises(NotResident, match="image 1 is 3x8x9.*sizes differ"):
        ResidentLoader(_Sizes([(8, 8), (8, 9)]), batch_size=2, device=CPU, augment=None)
    with pytest.raises(NotResident, match="GiB"):
        ResidentLoader(_Sizes([(8, 8)] * 4), batch_size=2, device=CPU, augment=None, preload=Preload(max_bytes=100))


def test_run_with_device_loader(tmp_path, tiny_config, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**tiny_config, "loader": "device", "scale_min": 0.75, "scale_max": 1.25,
                                   "color_jitter": 0.2}))
    board = tmp_path / "b"
    assert main(["train", str(cfg), "--leaderboard", str(board), "--store", str(tmp_path / "s"), "--no-progress"]) == 0
    assert "training split on" in capsys.readouterr().out
    record = load_records(board)[0][0]
    assert record["training"]["loader"] == "device" and record["metrics"]["miou"] >= 0
    # auto on a CPU keeps the host loader; the run id names the resolved loader, so the two records differ
    assert main(["train", str(cfg), "loader=auto", "--leaderboard", str(tmp_path / "b2"), "--store",
                 str(tmp_path / "s2"), "--no-progress"]) == 0
    again = load_records(tmp_path / "b2")[0][0]
    assert again["training"]["loader"] == "host" and again["id"] != record["id"]


def test_device_loader_errors_are_one_line(tmp_path, tiny_config, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**tiny_config, "model": "maskrcnn_small", "model_args": {}, "loader": "device"}))
    assert main(["train", str(cfg), "--leaderboard", str(tmp_path / "b"), "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "loader=device" in err and "\n" not in err
    assert main(["train", str(cfg), "loader=gpu", "--leaderboard", str(tmp_path / "b")]) == 2
    assert "loader='gpu' is invalid; valid: one of auto, host, device" in capsys.readouterr().err
