import pytest
import torch
from torch.utils.data import DataLoader

from segbench.data import build_dataset
from segbench.data.transforms import TrainTransform, collate_semantic
from segbench.engine import evaluate, make_optimizer, make_scheduler, train
from segbench.losses import build_loss
from segbench.metrics import ConfusionMatrix
from segbench.models import build_model


def _setup(seed=0):
    torch.manual_seed(seed)
    ds = build_dataset("synthetic", split="train", size=32, num_images=8,
                       transform=TrainTransform(crop_size=32, scale=(0.75, 1.25), hflip=True, color_jitter=0.0))
    val = build_dataset("synthetic", split="val", size=32, num_images=4)
    loader = DataLoader(ds, batch_size=4, shuffle=True, collate_fn=collate_semantic, generator=torch.Generator())
    val_loader = DataLoader(val, batch_size=4, collate_fn=collate_semantic)
    model = build_model("unet_small", num_classes=6, base_channels=4, depth=2)
    opt = make_optimizer(model, "adamw", lr=1e-2, momentum=0.9, weight_decay=1e-4)
    sched = make_scheduler(opt, "poly", total_steps=2 * len(loader), warmup_steps=1)
    return model, dict(train_loader=loader, val_loader=val_loader, info=ds.info, loss_fn=build_loss("ce", num_classes=6),
                       optimizer=opt, scheduler=sched, device=torch.device("cpu"), progress=False, log=lambda s: None)


def test_resume_continues_exactly(tmp_path):
    model_a, kw_a = _setup()
    train(model_a, epochs=2, checkpoint_dir=tmp_path / "a", **kw_a)
    last_a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]

    model_b, kw_b = _setup()
    train(model_b, epochs=1, checkpoint_dir=tmp_path / "b", **kw_b)
    model_c, kw_c = _setup(seed=123)  # fresh objects, different init: resume must overwrite everything
    result = train(model_c, epochs=2, checkpoint_dir=tmp_path / "b", resume=True, **kw_c)
    last_c = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert result.epochs_done == 2 and len(result.history) == 2
    for key in last_a:
        assert torch.equal(last_a[key], last_c[key]), key


def test_checkpoints_written_atomically(tmp_path):
    model, kw = _setup()
    train(model, epochs=1, checkpoint_dir=tmp_path, **kw)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["best.pt", "last.pt"]


def test_evaluate_matches_manual_confusion_matrix():
    model, kw = _setup()
    metrics = evaluate(model, kw["val_loader"], info=kw["info"], device=torch.device("cpu"))
    cm = ConfusionMatrix(6)
    model.eval()
    with torch.no_grad():
        for images, masks in kw["val_loader"]:
            from segbench.data.transforms import normalize

            cm.update(model(normalize(images, kw["info"].mean, kw["info"].std))["out"].argmax(1), masks)
    assert abs(cm.compute()["miou"] - metrics["miou"]) < 1e-9


def test_training_reduces_loss():
    model, kw = _setup()
    result = train(model, epochs=3, **kw)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]


# Recorded from the base commit (8760259) with one CPU thread: the engine refactor must reproduce them.
BASE_HISTORY = [
    {"epoch": 1, "loss": 1.9867284297943115, "lr": 0.03471265813308035, "miou": 0.12026405134529806},
    {"epoch": 2, "loss": 1.419022798538208, "lr": 0.0, "miou": 0.14389482415551266},
]


def test_refactor_reproduces_base_commit_numbers():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the recorded numbers are single-threaded: reduction order changes the last bits
    try:
        torch.manual_seed(0)
        ds = build_dataset("synthetic", split="train", size=32, num_images=16,
                           transform=TrainTransform(crop_size=32, scale=(0.75, 1.25), hflip=True, color_jitter=0.1))
        val = build_dataset("synthetic", split="val", size=32, num_images=4)
        loader = DataLoader(ds, batch_size=4, shuffle=True, collate_fn=collate_semantic, generator=torch.Generator())
        model = build_model("unet_small", num_classes=6, base_channels=4, depth=2)
        opt = make_optimizer(model, "sgd", lr=0.05, momentum=0.9, weight_decay=1e-4)
        sched = make_scheduler(opt, "poly", total_steps=2 * len(loader), warmup_steps=2)
        result = train(model, train_loader=loader, val_loader=DataLoader(val, batch_size=4, collate_fn=collate_semantic),
                       info=ds.info, loss_fn=build_loss("ce", num_classes=6), optimizer=opt, scheduler=sched,
                       device=torch.device("cpu"), epochs=2, seed=3, progress=False, log=lambda s: None)
    finally:
        torch.set_num_threads(threads)
    for got, want in zip(result.history, BASE_HISTORY, strict=True):
        assert got["epoch"] == want["epoch"]
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert got["lr"] == pytest.approx(want["lr"], rel=1e-9, abs=1e-12)
        assert got["miou"] == pytest.approx(want["miou"], abs=2e-3)  # a pixel or two may flip on another CPU
