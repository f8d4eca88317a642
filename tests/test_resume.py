"""Resume is exact: a run stopped by a crash and resumed ends where an uninterrupted run ends, and a finished run
resumed returns its result without training."""

import random

import pytest
import torch
from segbench.train import engine
from segbench.train.checkpoints import NoCheckpoint, has_checkpoint, save_checkpoint
from segbench.train.engine import make_optimizer, make_scheduler
from segbench.train.losses import build_loss
from test_engine import train_with
from torch.utils.data import DataLoader

from segbench.data import build_dataset
from segbench.data.transforms import TrainTransform, collate_semantic
from segbench.errors import SegbenchError
from segbench.models import build_model

EPOCHS = 5
TIMING = ("seconds", "images_per_s")  # wall-clock readings: the only history values allowed to differ


class Crash(Exception):
    pass


class CountingLoss:
    """Cross-entropy that raises ``Crash`` on call number ``crash_at`` (never if None)."""

    def __init__(self, crash_at=None):
        self.calls, self.crash_at, self.ce = 0, crash_at, build_loss("ce", num_classes=6)

    def __call__(self, *args):
        self.calls += 1
        if self.calls == self.crash_at:
            raise Crash(f"loss call {self.calls}")
        return self.ce(*args)


def _run(checkpoint_dir, *, init_seed=0, resume=False, loss_fn=None, log=lambda s: None, **kwargs):
    """5 epochs x 2 steps of a tiny U-Net, choosing on a holdout, monitoring val every 2 epochs."""
    torch.manual_seed(init_seed)
    ds = build_dataset("synthetic", split="train", size=32, num_images=8,
                       transform=TrainTransform(crop_size=32, scale=(0.75, 1.25), hflip=True, color_jitter=0.1))
    holdout = build_dataset("synthetic", split="train", size=32, num_images=4, seed=7)
    val = build_dataset("synthetic", split="val", size=32, num_images=4)
    loader = DataLoader(ds, batch_size=4, shuffle=True, collate_fn=collate_semantic, generator=torch.Generator())
    model = build_model("unet_small", num_classes=6, base_channels=4, depth=2)
    opt = make_optimizer(model, "sgd", lr=0.05, momentum=0.9, weight_decay=1e-4)
    sched = make_scheduler(opt, "poly", total_steps=EPOCHS * len(loader), warmup_steps=1)
    result = train_with(model, train_loader=loader,
                        select_loader=DataLoader(holdout, batch_size=4, collate_fn=collate_semantic),
                        monitor_loader=DataLoader(val, batch_size=4, collate_fn=collate_semantic), eval_every=2,
                        info=ds.info, loss_fn=loss_fn or CountingLoss(), optimizer=opt, scheduler=sched,
                        device=torch.device("cpu"), epochs=EPOCHS, checkpoint_dir=checkpoint_dir, resume=resume,
                        seed=1, progress=False, log=log, **kwargs)
    rng = (random.getstate(), torch.get_rng_state(), loader.generator.get_state())
    return result, {k: v.clone() for k, v in model.state_dict().items()}, rng


def _assert_same_run(a, b, *, timing=False):
    (res_a, w_a, rng_a), (res_b, w_b, rng_b) = a, b
    assert w_a.keys() == w_b.keys() and all(torch.equal(w_a[k], w_b[k]) for k in w_a)

    def strip(history):
        return [{k: v for k, v in h.items() if timing or k not in TIMING} for h in history]

    assert strip(res_a.history) == strip(res_b.history)
    fields = ["selection", "selected_epoch", "select_metrics", "images", "epochs_done", "steps_done", "capped"]
    assert [getattr(res_a, f) for f in fields] == [getattr(res_b, f) for f in fields]
    if timing:
        assert res_a.seconds == res_b.seconds
    assert rng_a[0] == rng_b[0] and torch.equal(rng_a[1], rng_b[1]) and torch.equal(rng_a[2], rng_b[2])


def _raise_after_epoch(n):
    def log(line):
        if line.startswith(f"epoch {n}/"):
            raise Crash(line)
    return log


@pytest.mark.parametrize("crash", ["after epoch 3", "inside epoch 4"])
def test_resume_after_a_crash_ends_like_an_uninterrupted_run(tmp_path, crash):
    uninterrupted = _run(tmp_path / "a")
    assert uninterrupted[0].selection == "holdout" and uninterrupted[0].steps_done == 2 * EPOCHS

    with pytest.raises(Crash):
        if crash == "after epoch 3":  # last.pt of epoch 3 is written before the epoch is logged
            _run(tmp_path / "b", log=_raise_after_epoch(3))
        else:  # 3 epochs x 2 steps done, the crash hits epoch 4's second step
            _run(tmp_path / "b", loss_fn=CountingLoss(crash_at=8))
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["result"]["epochs_done"] == 3
    random.seed(99)
    torch.manual_seed(99)  # a new process: other RNG states, other initial weights
    resumed = _run(tmp_path / "b", init_seed=123, resume=True)
    _assert_same_run(uninterrupted, resumed)


def test_a_finished_run_resumed_returns_its_result_without_training(tmp_path):
    first = _run(tmp_path)
    written = (tmp_path / "last.pt").read_bytes()
    random.seed(99)
    again = _run(tmp_path, init_seed=123, resume=True, loss_fn=CountingLoss(crash_at=1))  # any step would raise
    _assert_same_run(first, again, timing=True)  # the selected weights, seconds, RNG states: all as they were
    assert (tmp_path / "last.pt").read_bytes() == written  # never rewritten


def test_a_capped_run_resumed_stays_capped_without_training(tmp_path, monkeypatch):
    ticks = iter(range(0, 10_000, 10))
    monkeypatch.setattr(engine, "clock", lambda: float(next(ticks)))
    capped = _run(tmp_path, max_seconds=45.0)
    assert capped[0].capped and capped[0].steps_done < 2 * EPOCHS
    again = _run(tmp_path, resume=True, loss_fn=CountingLoss(crash_at=1), max_seconds=45.0)
    _assert_same_run(capped, again, timing=True)


def test_the_checkpoint_holds_every_piece_of_state(tmp_path):
    _run(tmp_path)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epochs", "finished", "result", "best", "rng"} <= state.keys()
    assert set(state["rng"]) == {"python", "torch", "cuda", "loader"} and state["rng"]["loader"] is not None
    assert {"score", "epoch", "metrics", "weights"} == state["best"].keys() and state["best"]["weights"] is not None
    assert {"history", "seconds", "images", "epochs_done", "steps_done", "capped"} <= state["result"].keys()
    assert state["result"]["steps_done"] == state["scheduler"]["last_epoch"] == 2 * EPOCHS


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    assert not has_checkpoint(tmp_path) and not has_checkpoint(None)
    with pytest.raises(NoCheckpoint, match="run without --resume"):
        _run(tmp_path, resume=True)
    with pytest.raises(NoCheckpoint, match="checkpoint_dir"):
        _run(None, resume=True)
    assert isinstance(NoCheckpoint("x"), SegbenchError)  # the CLI prints it as one line


def test_resume_refuses_another_budget_or_an_old_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "old" / "last.pt", {"model": {}, "epoch": 1, "best_miou": 0.1})  # base-commit layout
    assert has_checkpoint(tmp_path / "old")
    with pytest.raises(SegbenchError, match="older segbench"):
        _run(tmp_path / "old", resume=True)
    _run(tmp_path / "new")
    state = torch.load(tmp_path / "new" / "last.pt", weights_only=True)
    state["epochs"] = 3
    save_checkpoint(tmp_path / "new" / "last.pt", state)
    with pytest.raises(SegbenchError, match="3-epoch run"):
        _run(tmp_path / "new", resume=True)
