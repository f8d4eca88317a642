"""DDP on CPUs (gloo, loopback): sharded loaders, reduced metrics, 2-process training under torchrun, suite
shards, a rank that dies, and resuming. Multi-process tests launch real processes with a timeout."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from segbench.evaluation.metrics import ConfusionMatrix
from segbench.records.io import load_records
from segbench.train import distributed
from segbench.train.runner import parse_shard, shard
from torch.utils.data import DataLoader

from segbench.cli import main
from segbench.data.resident import DeviceAugment, ResidentLoader
from segbench.data.sharding import EvalShard, Shard, ShardedBatches
from segbench.data.synthetic import SyntheticShapes
from segbench.errors import SegbenchError

REPO = Path(__file__).resolve().parents[1]
TRAIN = {"model": "unet_small", "model_args": {"base_channels": 8, "depth": 2}, "dataset": "synthetic",
         "dataset_args": {"size": 48, "num_images": 32}, "epochs": 4, "batch_size": 8, "lr": 0.005,
         "crop_size": 48, "latency_runs": 1, "device": "cpu", "eval_every": 4}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), **extra}


def torchrun(args: list[str], *, nproc: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           f"--master_port={free_port()}", "-m", "segbench", *args]
    return subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)


def write_config(path: Path, **over) -> Path:
    path.write_text(yaml.safe_dump({**TRAIN, **over}))
    return path


# ---------------------------------------------------------------- sharding without processes

@pytest.mark.parametrize("n, batch, drop_last", [(10, 4, True), (10, 4, False), (8, 8, False)])
def test_rank_batches_together_are_the_one_process_batches(n, batch, drop_last):
    single = DataLoader(range(n), batch_size=batch, shuffle=True, drop_last=drop_last,
                        generator=torch.Generator().manual_seed(3))

    def rank_loader(rank: int) -> DataLoader:  # the batch sampler draws from the loader's generator, as RandomSampler
        generator = torch.Generator().manual_seed(3)
        batches = ShardedBatches(n, batch_size=batch, rank=rank, world_size=2, generator=generator,
                                 drop_last=drop_last)
        return DataLoader(range(n), batch_sampler=batches, generator=generator)

    ranks = [rank_loader(0), rank_loader(1)]
    expected = [b.tolist() for b in single]
    got = [a.tolist() + b.tolist() for a, b in zip(*ranks)]
    assert got == expected and len(ranks[0]) == len(single)


def test_eval_shards_are_contiguous_cover_everything_once():
    shards = [list(EvalShard(7, rank=r, world_size=3)) for r in range(3)]
    assert shards == [[0, 1], [2, 3], [4, 5, 6]]


def test_a_batch_that_cannot_feed_every_rank_is_refused():
    with pytest.raises(SegbenchError, match="cannot feed 4 processes"):
        ShardedBatches(3, batch_size=8, rank=0, world_size=4, generator=torch.Generator(), drop_last=False)


def test_resident_loader_shards_give_the_one_process_batches_and_augmentation():
    data = SyntheticShapes(split="train", num_images=10, size=24)
    augment = DeviceAugment(16, (0.75, 1.25), hflip=True, color_jitter=0.2)
    single = ResidentLoader(data, batch_size=4, device=torch.device("cpu"), augment=augment, seed=5)
    parts = [ResidentLoader(data, batch_size=4, device=torch.device("cpu"), augment=augment, seed=5,
                            shard=Shard(rank=r, world_size=2)) for r in range(2)]
    assert len(parts[0]) == len(single) == 2
    for (img, mask), (img0, mask0), (img1, mask1) in zip(single, *parts):
        assert torch.equal(img, torch.cat([img0, img1])) and torch.equal(mask, torch.cat([mask0, mask1]))


def test_global_batch_must_divide_over_the_processes(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    assert distributed.per_device_batch(9) == 3
    with pytest.raises(SegbenchError, match="batch_size 8 .* does not divide over 3 processes"):
        distributed.per_device_batch(8)


def test_sync_bn_default_and_cpu_refusal(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert distributed.resolve_sync_bn(None, device=gpu, per_device=4) is False  # one process: nothing to sync
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    assert distributed.resolve_sync_bn(None, device=gpu, per_device=4) is True
    assert distributed.resolve_sync_bn(None, device=gpu, per_device=8) is False
    assert distributed.resolve_sync_bn(False, device=gpu, per_device=2) is False
    assert distributed.resolve_sync_bn(None, device=cpu, per_device=2) is False
    with pytest.raises(SegbenchError, match="sync_bn: true needs GPUs"):
        distributed.resolve_sync_bn(True, device=cpu, per_device=2)


def test_sync_bn_round_trip_keeps_the_tensors():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    weight = model[1].weight
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(synced[1], torch.nn.SyncBatchNorm) and synced[1].weight is weight
    plain = distributed.unwrap_sync_bn(synced)
    assert type(plain[1]) is torch.nn.BatchNorm2d and plain[1].weight is weight
    assert list(plain.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                        "1.running_var", "1.num_batches_tracked"]


def test_shard_spec_and_positions():
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(SegbenchError, match="--shard"):
            parse_shard(bad)
    items = list(range(7))
    assert [shard(items, i, 3) for i in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]


def test_without_a_launcher_everything_is_one_process(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with distributed.session(cuda=False):
        assert not distributed.is_initialized() and distributed.world_size() == 1
        assert distributed.on_main(lambda: 41 + 1) == 42 and distributed.from_main(1.5) == 1.5


# ---------------------------------------------------------------- two processes (gloo on loopback)

class TinySegmenter(torch.nn.Module):
    """One convolution with the semantic model's output contract."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.conv(x)}


def _reduce_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        from segbench.train.data import eval_loader
        from segbench.train.engine import EvalSettings, evaluate

        torch.manual_seed(0)
        model = TinySegmenter()  # untrained: predicts most classes somewhere
        data = SyntheticShapes(split="val", num_images=7, size=24)
        metrics = evaluate(model, eval_loader(data, task="semantic", batch_size=2), info=data.info,
                           device=torch.device("cpu"), settings=EvalSettings(amp=False))
        preds = torch.randint(0, 4, (5, 6, 6), generator=torch.Generator().manual_seed(1))
        target = torch.randint(0, 4, (5, 6, 6), generator=torch.Generator().manual_seed(2))
        start, stop = EvalShard(5, rank=rank, world_size=2).start, EvalShard(5, rank=rank, world_size=2).stop
        cm = ConfusionMatrix(4, per_image=True)
        cm.update(preds[start:stop], target[start:stop])
        cm.all_reduce()
        if rank == 0:
            inter, union = cm.image_counts()
            torch.save({"metrics": metrics, "matrix": cm.matrix, "inter": inter, "union": union}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_metrics_reduced_over_two_processes_equal_one_process(tmp_path):
    out = tmp_path / "reduced.pt"
    mp.spawn(_reduce_worker, args=(free_port(), str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=False)
    from segbench.train.data import eval_loader
    from segbench.train.engine import EvalSettings, evaluate

    torch.manual_seed(0)
    model = TinySegmenter()
    data = SyntheticShapes(split="val", num_images=7, size=24)
    single = evaluate(model, eval_loader(data, task="semantic", batch_size=2), info=data.info,
                      device=torch.device("cpu"), settings=EvalSettings(amp=False))
    for key in ("pixel_accuracy", "iou", "per_image", "miou_ci", "boundary_iou"):
        assert got["metrics"][key] == single[key], key
    preds = torch.randint(0, 4, (5, 6, 6), generator=torch.Generator().manual_seed(1))
    target = torch.randint(0, 4, (5, 6, 6), generator=torch.Generator().manual_seed(2))
    cm = ConfusionMatrix(4, per_image=True)
    cm.update(preds, target)
    assert torch.equal(got["matrix"], cm.matrix)
    inter, union = cm.image_counts()
    assert torch.equal(got["inter"], inter) and torch.equal(got["union"], union)


@pytest.mark.slow
def test_two_process_training_matches_one_process(tmp_path):
    config = write_config(tmp_path / "tiny.yaml")
    assert main(["train", str(config), "--store", str(tmp_path / "s1"), "--leaderboard", str(tmp_path / "lb1"),
                 "--no-progress"]) == 0
    done = torchrun(["train", str(config), "--store", str(tmp_path / "s2"), "--leaderboard", str(tmp_path / "lb2"),
                     "--no-progress"])
    assert done.returncode == 0, done.stderr[-3000:]
    (one,), _ = load_records(tmp_path / "lb1")
    records, problems = load_records(tmp_path / "lb2")
    assert len(records) == 1 and not problems
    two = records[0]
    assert two["training"]["world_size"] == 2 and two["training"]["per_device_batch"] == 4
    assert two["training"]["sync_bn"] is False and one["training"]["world_size"] == 1
    assert two["training"]["steps"] == one["training"]["steps"]  # the same global batches
    assert abs(two["metrics"]["miou"] - one["metrics"]["miou"]) < 0.02
    # one log line and one table header (mIoU, val mIoU): rank 1 prints nothing
    header = [line for line in done.stdout.splitlines() if line.startswith("model ") and "val mIoU" in line]
    assert done.stdout.count("] mIoU ") == 1 and len(header) == 1


@pytest.mark.slow
def test_batch_that_does_not_divide_is_one_line_before_training(tmp_path):
    config = write_config(tmp_path / "odd.yaml", batch_size=7)
    done = torchrun(["train", str(config), "--store", str(tmp_path / "s"), "--leaderboard", str(tmp_path / "lb")])
    assert done.returncode != 0
    assert "error: batch_size 7 (the global batch) does not divide over 2 processes" in done.stderr
    # torchrun prints its own summary, whose frames may lie under the repository too (a venv inside it): none
    # of segbench's frames may be there
    assert f'File "{REPO / "segbench"}' not in done.stderr
    assert "training on" not in done.stdout


@pytest.mark.slow
def test_suite_shards_write_exactly_the_unsharded_records(tmp_path):
    suite = tmp_path / "suite.yaml"
    runs = [{"model": "unet_small"}, {"model": "unet_small", "name": "unet_b", "lr": 0.002},
            {"model": "unet_small", "name": "unet_c", "epochs": 1}]
    common = {k: v for k, v in TRAIN.items() if k != "model"} | {"epochs": 2, "eval_every": 2,
                                                                 "dataset_args": {"size": 32, "num_images": 16}}
    suite.write_text(yaml.safe_dump({"common": common, "runs": runs}))
    base = ["--no-progress", "--seeds", "2"]
    assert main(["run", str(suite), "--store", str(tmp_path / "s"), "--leaderboard", str(tmp_path / "all"), *base]) == 0
    for i in range(2):  # separate stores: the shards train, they do not reuse the unsharded weights
        assert main(["run", str(suite), "--shard", f"{i}/2", "--store", str(tmp_path / f"s{i}"),
                     "--leaderboard", str(tmp_path / "sharded"), *base]) == 0
    full, _ = load_records(tmp_path / "all")
    split, _ = load_records(tmp_path / "sharded")
    assert len(full) == 6
    assert {r["id"]: r["metrics"]["miou"] for r in split} == {r["id"]: r["metrics"]["miou"] for r in full}


def test_leaderboard_lists_the_missing_pairs_of_a_suite(tmp_path, capsys):
    suite = tmp_path / "suite.yaml"
    common = {k: v for k, v in TRAIN.items() if k != "model"} | {"epochs": 1, "eval_every": 1,
                                                                 "dataset_args": {"size": 32, "num_images": 8}}
    suite.write_text(yaml.safe_dump({"common": common, "runs": [{"model": "unet_small"},
                                                                 {"model": "unet_small", "name": "other"}]}))
    assert main(["run", str(suite), "--shard", "0/2", "--no-progress", "--store", str(tmp_path / "s"),
                 "--leaderboard", str(tmp_path / "lb")]) == 0
    capsys.readouterr()
    assert main(["leaderboard", "--leaderboard", str(tmp_path / "lb"), "--suite", str(suite)]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 pair(s) recorded, 1 missing" in out and "missing: position 1: other on synthetic" in out


# ---------------------------------------------------------------- a rank that dies, then --resume

def _launch_rank(rank: int, port: int, args: list[str]) -> subprocess.Popen:
    ranks = env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return subprocess.Popen([sys.executable, "-m", "segbench", *args], cwd=REPO, env=ranks, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_a_killed_rank_ends_the_other_with_one_line_and_resume_completes(tmp_path):
    config = write_config(tmp_path / "long.yaml", epochs=30, eval_every=30)
    args = ["train", str(config), "--store", str(tmp_path / "s"), "--leaderboard", str(tmp_path / "lb"),
            "--no-progress", "--dist-timeout", "1"]
    port = free_port()
    procs = [_launch_rank(r, port, args) for r in range(2)]
    try:
        for line in procs[0].stdout:  # rank 0 logs; its checkpoint of epoch 1 is on disk before this line
            if line.startswith("epoch 2/30"):
                break
        procs[1].send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        _, err = procs[0].communicate(timeout=90)
        waited = time.monotonic() - t0
    finally:
        for p in procs:
            p.kill()
    lines = [line for line in err.splitlines() if line.strip()]
    assert procs[0].returncode == 2 and waited < 90
    assert lines[-1].startswith("error: rank 0/2: the process group failed"), err[-2000:]
    assert "Traceback" not in err
    done = torchrun([*args, "--resume"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stdout
    (record,), _ = load_records(tmp_path / "lb")
    assert record["training"]["epochs"] == 30 and record["training"]["world_size"] == 2


@pytest.mark.slow
def test_slurm_array_script_runs_its_shard(tmp_path):
    suite = tmp_path / "suite.yaml"
    common = {k: v for k, v in TRAIN.items() if k != "model"} | {"epochs": 1, "eval_every": 1,
                                                                 "dataset_args": {"size": 32, "num_images": 8}}
    suite.write_text(yaml.safe_dump({"common": common, "runs": [{"model": "unet_small", "name": "first"},
                                                                 {"model": "unet_small", "name": "second"}]}))
    script = REPO / "segbench" / "scripts" / "slurm_suite.sh"
    slurm = env(SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="2", SUITE=str(suite),
                LEADERBOARD=str(tmp_path / "lb"), SEGBENCH_STORE=str(tmp_path / "s"),
                PYTHON=sys.executable)  # this interpreter, wherever its venv is and whether or not it is active
    done = subprocess.run(["bash", str(script)], cwd=tmp_path, env=slurm, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "shard 1/2" in done.stdout
    records, _ = load_records(tmp_path / "lb")
    assert [r["model"] for r in records] == ["second"]
