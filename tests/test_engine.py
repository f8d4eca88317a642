"""The training loop and evaluation: selection, budgets, checkpoints, and the numbers of the base commit."""


import pytest
import torch
from segbench.evaluation.metrics import ConfusionMatrix
from segbench.train import engine
from segbench.train.engine import EvalSettings, Loaders, TrainSettings, evaluate, make_optimizer, make_scheduler, train
from segbench.train.losses import build_loss
from torch.utils.data import DataLoader, Dataset

from segbench.data import build_dataset
from segbench.data.transforms import TrainTransform, collate_instance, collate_semantic
from segbench.errors import SegbenchError
from segbench.models import build_model


def train_with(model, *, train_loader, select_loader=None, monitor_loader=None, loss_fn, optimizer, scheduler,
               log=lambda s: None, **settings):
    """``engine.train`` with the loaders and the ``TrainSettings`` fields given as keywords (tests vary them one by one)."""
    return train(model, Loaders(train_loader, select_loader, monitor_loader), loss_fn=loss_fn, optimizer=optimizer,
                 scheduler=scheduler, settings=TrainSettings(**settings), log=log)


def _setup(seed=0, epochs=2):
    """A 2-step-per-epoch U-Net run on 8 synthetic images; ``kw`` holds every train() argument but epochs."""
    torch.manual_seed(seed)
    ds = build_dataset("synthetic", split="train", size=32, num_images=8,
                       transform=TrainTransform(crop_size=32, scale=(0.75, 1.25), hflip=True, color_jitter=0.0))
    val = build_dataset("synthetic", split="val", size=32, num_images=4)
    loader = DataLoader(ds, batch_size=4, shuffle=True, collate_fn=collate_semantic, generator=torch.Generator())
    val_loader = DataLoader(val, batch_size=4, collate_fn=collate_semantic)
    model = build_model("unet_small", num_classes=6, base_channels=4, depth=2)
    opt = make_optimizer(model, "adamw", lr=1e-2, momentum=0.9, weight_decay=1e-4)
    sched = make_scheduler(opt, "poly", total_steps=epochs * len(loader), warmup_steps=1)
    return model, dict(train_loader=loader, select_loader=val_loader, info=ds.info, loss_fn=build_loss("ce", num_classes=6),
                       optimizer=opt, scheduler=sched, device=torch.device("cpu"), progress=False, log=lambda s: None)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- checkpoints and selection

def test_checkpoint_is_one_atomic_file(tmp_path):
    model, kw = _setup()
    train_with(model, epochs=1, checkpoint_dir=tmp_path, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # the best weights live inside it


def test_without_select_loader_the_final_weights_are_the_result(tmp_path):
    model, kw = _setup(epochs=3)
    kw["select_loader"] = None
    result = train_with(model, epochs=3, checkpoint_dir=tmp_path, **kw)
    assert (result.selection, result.selected_epoch, result.select_metrics) == ("final", 3, None)
    assert _same(_weights(model), torch.load(tmp_path / "last.pt", weights_only=True)["model"])
    assert all("select_miou" not in h and "val_miou" not in h for h in result.history)


def _scripted_evaluate(scores):
    """evaluate() stand-in: the next scripted mIoU for whichever loader is scored."""
    def fake(model, loader, **kwargs):
        miou = scores[loader].pop(0)
        return {"miou": miou, "pixel_accuracy": miou, "kwargs": kwargs}
    return fake


def test_holdout_selection_restores_the_best_epoch_and_val_never_chooses(monkeypatch):
    model, kw = _setup(epochs=3)
    select, val = kw["select_loader"], object()
    monkeypatch.setattr(engine, "evaluate", _scripted_evaluate({select: [0.2, 0.5, 0.3], val: [0.1, 0.2, 0.9]}))
    snapshots = {}
    kw["log"] = lambda line: snapshots.setdefault(line.split()[1], _weights(model)) if line.startswith("epoch ") else None
    result = train_with(model, epochs=3, monitor_loader=val, **kw)
    assert (result.selection, result.selected_epoch, result.select_metrics["miou"]) == ("holdout", 2, 0.5)
    assert _same(_weights(model), snapshots["2/3:"]) and not _same(snapshots["2/3:"], snapshots["3/3:"])
    assert [h["select_miou"] for h in result.history] == [0.2, 0.5, 0.3]
    assert [h["val_miou"] for h in result.history] == [0.1, 0.2, 0.9]
    # curve evaluations skip the per-image counts and Boundary IoU
    assert result.select_metrics["kwargs"]["settings"].per_image is False
    assert result.select_metrics["kwargs"]["settings"].boundary is False


def test_monitor_is_scored_every_eval_every_and_leaves_training_unchanged():
    model_a, kw_a = _setup(epochs=3)
    kw_a["select_loader"] = None
    train_with(model_a, epochs=3, **kw_a)
    model_b, kw_b = _setup(epochs=3)
    monitor, kw_b["select_loader"] = kw_b["select_loader"], None
    result = train_with(model_b, epochs=3, monitor_loader=monitor, eval_every=2, **kw_b)
    assert ["val_miou" in h for h in result.history] == [False, True, True]  # every 2nd epoch and the last
    assert _same(_weights(model_a), _weights(model_b))  # scoring draws no RNG that training sees


# ---------------------------------------------------------------- budgets: epochs, not wall time

class FakeClock:
    """perf_counter stand-in: each call advances by the next of ``increments`` (the last one repeats)."""

    def __init__(self, *increments):
        self.now, self.increments = 0.0, list(increments)

    def __call__(self):
        self.now += self.increments.pop(0) if len(self.increments) > 1 else self.increments[0]
        return self.now


def _timed_run(monkeypatch, clock, **kwargs):
    monkeypatch.setattr(engine, "clock", clock)
    model, kw = _setup(epochs=3)
    kw["select_loader"] = None
    result = train_with(model, epochs=3, **kw, **kwargs)
    return result, _weights(model), kw["scheduler"]


def test_a_slow_machine_trains_the_same_steps_and_schedule(monkeypatch):
    fast, fast_w, _ = _timed_run(monkeypatch, FakeClock(0.001), max_seconds=1000.0)
    # a first step that takes half the time limit (a compile, a cold cache) must not decay the learning rate
    slow, slow_w, _ = _timed_run(monkeypatch, FakeClock(0.0, 500.0, 1.0), max_seconds=1000.0)
    assert not fast.capped and not slow.capped and slow.seconds > 500
    assert [h["lr"] for h in slow.history] == [h["lr"] for h in fast.history]
    assert slow.steps_done == fast.steps_done == 6 and _same(slow_w, fast_w)


def test_the_time_limit_is_a_safety_stop_that_marks_the_result(monkeypatch):
    capped, _, sched = _timed_run(monkeypatch, FakeClock(0.0, 500.0, 1.0), max_seconds=300.0)
    assert capped.capped and capped.steps_done == 1 and capped.epochs_done == 1
    assert capped.selection == "final" and capped.selected_epoch == 1
    assert capped.history[0]["lr"] == pytest.approx(sched.base_lrs[0] * sched.factor(1))  # steps alone set the lr


def test_the_limit_on_the_last_step_does_not_mark_a_complete_run(monkeypatch):
    # 3 epochs x 2 steps; an epoch reads the clock 4 times (start, 2 steps, end) at 10 s a call: 30 s an epoch
    done, _, _ = _timed_run(monkeypatch, FakeClock(10.0), max_seconds=80.0)  # reached by step 6 exactly
    assert done.steps_done == 6 and not done.capped


def test_time_track_advances_the_schedule_by_time(monkeypatch):
    fast, _, _ = _timed_run(monkeypatch, FakeClock(0.001), max_seconds=1000.0, time_budget=True)
    slow, _, _ = _timed_run(monkeypatch, FakeClock(0.0, 500.0, 1.0), max_seconds=1000.0, time_budget=True)
    assert slow.history[0]["lr"] < fast.history[0]["lr"]
    with pytest.raises(SegbenchError, match="max_seconds"):
        _timed_run(monkeypatch, FakeClock(0.001), time_budget=True)


# ---------------------------------------------------------------- evaluation

def test_evaluate_matches_manual_confusion_matrix():
    model, kw = _setup()
    metrics = evaluate(model, kw["select_loader"], info=kw["info"], device=torch.device("cpu"))
    cm = ConfusionMatrix(6)
    model.eval()
    with torch.no_grad():
        for images, masks in kw["select_loader"]:
            from segbench.data.transforms import normalize

            cm.update(model(normalize(images, kw["info"].mean, kw["info"].std))["out"].argmax(1), masks)
    assert abs(cm.compute()["miou"] - metrics["miou"]) < 1e-9


def test_training_reduces_loss():
    model, kw = _setup()
    result = train_with(model, epochs=3, **kw)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]


def test_semantic_models_train_in_channels_last_on_the_cpu_with_the_same_numbers():
    """channels_last is a speed choice (oneDNN runs NHWC natively), not a recipe change: the weights really are NHWC
    while training, and one step's loss and gradients equal NCHW's to float precision (Adam's first steps then
    amplify last-bit differences, as thread counts do)."""
    for channels_last in (True, False):
        model, kw = _setup()
        train_with(model, epochs=1, channels_last=channels_last, **kw)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert engine.uses_channels_last(model, channels_last) == channels_last
    model, kw = _setup()
    images, masks = next(iter(kw["train_loader"]))
    steps = {}
    for channels_last in (False, True):
        model.zero_grad()
        model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        x = engine.to_device_images(images, kw["info"], torch.device("cpu"), channels_last)
        out = model.train()(x)
        loss = kw["loss_fn"](out["out"] if isinstance(out, dict) else out, masks)
        loss.backward()
        steps[channels_last] = (loss.item(), [p.grad.clone() for p in model.parameters()])
    assert steps[True][0] == pytest.approx(steps[False][0], rel=1e-6)
    for a, b in zip(steps[True][1], steps[False][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert not engine.uses_channels_last(build_model("maskrcnn_small", num_classes=2, min_size=48, max_size=48,
                                                     fpn_channels=16), True)


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
        result = train_with(model, train_loader=loader,
                            select_loader=DataLoader(val, batch_size=4, collate_fn=collate_semantic),
                            info=ds.info, loss_fn=build_loss("ce", num_classes=6), optimizer=opt, scheduler=sched,
                            device=torch.device("cpu"), epochs=2, seed=3, progress=False, log=lambda s: None)
    finally:
        torch.set_num_threads(threads)
    for got, want in zip(result.history, BASE_HISTORY, strict=True):
        assert got["epoch"] == want["epoch"]
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert got["lr"] == pytest.approx(want["lr"], rel=1e-9, abs=1e-12)
        assert got["select_miou"] == pytest.approx(want["miou"], abs=2e-3)  # a pixel or two may flip on another CPU


class _RecordingMatrix(ConfusionMatrix):
    flags = []

    def __init__(self, num_classes, ignore_index=255, device=None, per_image=False, boundary=False):
        super().__init__(num_classes, ignore_index=ignore_index, device=device)
        _RecordingMatrix.flags.append((per_image, boundary))


def test_evaluate_passes_per_image_and_boundary_to_the_matrix(monkeypatch):
    monkeypatch.setattr(engine, "ConfusionMatrix", _RecordingMatrix)
    model, kw = _setup()
    evaluate(model, kw["select_loader"], info=kw["info"], device=torch.device("cpu"))
    evaluate(model, kw["select_loader"], info=kw["info"], device=torch.device("cpu"),
             settings=EvalSettings(per_image=False, boundary=True))
    assert _RecordingMatrix.flags == [(True, True), (False, True)]


def test_evaluate_reports_per_image_counts_and_boundary_iou():
    model, kw = _setup()
    metrics = evaluate(model, kw["select_loader"], info=kw["info"], device=torch.device("cpu"))
    assert len(metrics["per_image"]["intersection"]) == 4 and "mean_boundary_iou" in metrics


class _WithSemantic(Dataset):
    def __init__(self, instances, semantic):
        self.instances, self.semantic = instances, semantic

    def __len__(self):
        return len(self.instances)

    def __getitem__(self, i):
        image, target = self.instances[i]
        return image, {**target, "semantic": self.semantic[i][1]}


def test_instance_models_are_scored_with_the_matrix_and_coco_ap():
    from segbench.evaluation.coco import InstanceEvaluator

    torch.manual_seed(0)
    sem = build_dataset("synthetic", split="val", size=48, num_images=2)
    inst = build_dataset("synthetic", split="val", size=48, num_images=2, task="instance")
    loader = DataLoader(_WithSemantic(inst, sem), batch_size=2, collate_fn=collate_instance)
    model = build_model("maskrcnn_small", num_classes=sem.info.num_classes, min_size=48, max_size=48, fpn_channels=16)
    metrics = evaluate(model, loader, info=sem.info, device=torch.device("cpu"),
                       settings=EvalSettings(score_threshold=0.0),
                       instance_evaluator=InstanceEvaluator())
    assert 0.0 <= metrics["pixel_accuracy"] <= 1.0 and "mask_ap" in metrics and "box_ap" in metrics


def test_memory_format_bench_times_both_layouts_of_the_same_model(capsys):
    from segbench.bench.memory_format import bench_model, main

    row = bench_model("unet_small", {"base_channels": 4, "depth": 2}, batch=1, size=32, steps=1, rounds=1)
    assert row["model"] == "unet_small" and row["contiguous_s"] > 0 and row["channels_last_s"] > 0
    assert row["speedup"] > 0
    for argv, message in ((["--models", "unet_smal"], "unknown model(s) unet_smal"), (["--steps", "0"], ">= 1")):
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err
