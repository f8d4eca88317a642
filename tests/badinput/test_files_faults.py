"""Files that must never be lost: weights folders, records, checkpoints, predict outputs.

Every case interrupts or breaks one write (a simulated Ctrl-C or OS error at one step, a second writer, a full or
read-only disk) and checks three things: one clear line (or the original interrupt), and that the target holds
the old or the new complete content, never none and never half, with no temporary files left behind.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from segbench.records.io import load_records, write_record
from segbench.train.checkpoints import load_checkpoint, save_checkpoint
from segbench.weights import store as store_module
from segbench.weights.meta import WeightsMeta
from segbench.weights.store import CONFIG_FILE, WEIGHTS_FILE, LocalStore
from torch import nn

from segbench import files
from segbench.errors import SegbenchError
from segbench.hub.pull import _install_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_records import make_record  # noqa: E402

RUN = ("synthetic", "tiny", "abcdef123456")


def _model(value: float) -> nn.Module:
    model = nn.Linear(3, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


def _meta(value: float) -> WeightsMeta:
    """A config whose one mean is ``value``: which write a folder's model.json came from."""
    return WeightsMeta(model="tiny", num_classes=1, in_channels=1, mean=(value,), std=(1.0,))


def _saved(store: LocalStore, value: float) -> str:
    return store.save(_model(value), _meta(value), *RUN)["sha256"]


def _state(store: LocalStore) -> str:
    """'old', 'new' (by model.json's mean) for a complete folder; fails the test otherwise."""
    folder = store.run_dir(*RUN)
    assert (folder / WEIGHTS_FILE).is_file() and (folder / CONFIG_FILE).is_file(), f"{folder} incomplete or missing"
    value = json.loads((folder / CONFIG_FILE).read_text())["mean"][0]
    tensors = load_file(str(folder / WEIGHTS_FILE))
    assert all(bool((t == value).all()) for t in tensors.values()), "weights and config come from different writes"
    return {1.0: "old", 2.0: "new"}[value]


_SHAS: dict[float, str] = {}


@pytest.fixture
def store(tmp_path):
    store = LocalStore(tmp_path / "store")
    _SHAS[2.0] = _saved(LocalStore(tmp_path / "probe"), 2.0)
    _SHAS[1.0] = _saved(store, 1.0)
    return store


def _leftovers(store: LocalStore) -> list[str]:
    return sorted(p.name for p in store.run_dir(*RUN).parent.iterdir() if p.name.startswith("."))


class Interrupt(BaseException):
    """Stands in for Ctrl-C / a crash at one step (not an Exception: nothing may swallow it)."""


def _fail_once(monkeypatch, module, name: str, *, call: int = 1, exc: BaseException | None = None):
    real, count = getattr(module, name), {"n": 0}

    def wrapper(*args, **kwargs):
        count["n"] += 1
        if count["n"] == call:
            raise exc or Interrupt()
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


# ---------------------------------------------------------------- a simulated interrupt at each step of a save

STEPS = [
    ("writing the weights", store_module, "save_file", 1, "old"),
    ("fsync of the new files", files.os, "fsync", 1, "old"),
    ("renaming the old folder aside", files.os, "rename", 1, "old"),
    ("renaming the new folder in", files.os, "rename", 2, "old"),
    ("fsync of the parent folder", files, "fsync_dir", 2, "new"),
]


@pytest.mark.parametrize("step,module,name,call,expected", STEPS, ids=[s[0] for s in STEPS])
def test_store_save_interrupted_at_each_step_keeps_a_complete_folder(store, monkeypatch, step, module, name, call,
                                                                     expected):
    _fail_once(monkeypatch, module, name, call=call)
    with pytest.raises(Interrupt):
        _saved(store, 2.0)
    monkeypatch.undo()
    assert _state(store) == expected
    assert _leftovers(store) in ([], [f".{store.run_dir(*RUN).name}.old"])
    _saved(store, 2.0)  # the next save completes and cleans up
    assert _state(store) == "new" and _leftovers(store) == []


def test_store_interrupt_while_deleting_the_old_folder_leaves_the_new_one(store, monkeypatch):
    _fail_once(monkeypatch, files.shutil, "rmtree")
    with pytest.raises(Interrupt):
        _saved(store, 2.0)
    monkeypatch.undo()
    assert _state(store) == "new"
    _saved(store, 2.0)
    assert _leftovers(store) == []


def test_store_killed_between_the_two_renames_is_recovered_on_read(store):
    final = store.run_dir(*RUN)
    os.rename(final, files.aside_path(final))  # the state a SIGKILL between the renames leaves
    assert store.has(*RUN) and _state(store) == "old" and _leftovers(store) == []


def test_store_killed_between_the_renames_is_recovered_by_load(store):
    final = store.run_dir(*RUN)
    os.rename(final, files.aside_path(final))
    assert store.resolve(store.uri(*RUN)) == final and _state(store) == "old"


def test_store_killed_after_the_swap_leftover_is_cleaned_by_the_next_save(store):
    final = store.run_dir(*RUN)
    shutil.copytree(final, files.aside_path(final))  # killed before the old folder was deleted
    _saved(store, 2.0)
    assert _state(store) == "new" and _leftovers(store) == []


def test_store_first_save_interrupted_leaves_nothing_half_written(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "s")
    _fail_once(monkeypatch, files.os, "rename")
    with pytest.raises(Interrupt):
        _saved(store, 1.0)
    monkeypatch.undo()
    assert not store.has(*RUN) and _leftovers(store) == []


# ---------------------------------------------------------------- the Hub pull's install step


@pytest.mark.parametrize("call,expected", [(1, "old"), (2, "old")], ids=["aside", "rename-in"])
def test_pull_install_interrupted_keeps_the_old_weights(store, tmp_path, monkeypatch, call, expected):
    source = tmp_path / "download"
    shutil.copytree(tmp_path / "probe" / "weights" / "synthetic" / "tiny--abcdef123456", source)
    _fail_once(monkeypatch, files.os, "rename", call=call)
    with pytest.raises(Interrupt):
        _install_weights(source, store.run_dir(*RUN), _SHAS[2.0])
    monkeypatch.undo()
    assert _state(store) == expected and _leftovers(store) in ([], [".tiny--abcdef123456.old"])
    _install_weights(source, store.run_dir(*RUN), _SHAS[2.0])
    assert _state(store) == "new" and _leftovers(store) == []


def test_pull_install_of_changed_bytes_keeps_the_old_weights(store, tmp_path):
    source = tmp_path / "download"
    shutil.copytree(tmp_path / "probe" / "weights" / "synthetic" / "tiny--abcdef123456", source)
    with pytest.raises(SegbenchError, match="changed on disk") as info:
        _install_weights(source, store.run_dir(*RUN), "0" * 64)
    assert "\n" not in str(info.value) and _state(store) == "old" and _leftovers(store) == []


# ---------------------------------------------------------------- two writers of one run


def test_two_threads_saving_one_run_both_finish_with_one_complete_folder(store):
    barrier, results, errors = threading.Barrier(4), [], []

    def write(value: float) -> None:
        barrier.wait()
        try:
            results.append(store.save(_model(value), _meta(value), *RUN, log=lambda _: None))
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(v,)) for v in (1.0, 2.0, 1.0, 2.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(results) == 4
    assert _state(store) in ("old", "new") and _leftovers(store) == []


def test_two_processes_saving_one_run_both_finish(store, tmp_path):
    script = (
        "import sys, torch; from torch import nn; from segbench.weights.store import LocalStore\n"
        "from segbench.weights.meta import WeightsMeta\n"
        "m = nn.Linear(3, 2); v = float(sys.argv[2])\n"
        "[p.data.fill_(v) for p in m.parameters()]\n"
        "for _ in range(5): LocalStore(sys.argv[1]).save(m, WeightsMeta(model='tiny', num_classes=1, in_channels=1, "
        "mean=(v,), std=(1.0,)), "
        "'synthetic', 'tiny', 'abcdef123456', log=lambda _: None)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(store.root), v], env=env, stderr=subprocess.PIPE,
                              text=True) for v in ("1.0", "2.0")]
    outcomes = [(p.wait(120), p.stderr.read()) for p in procs]
    assert outcomes == [(0, ""), (0, "")]
    assert _state(store) in ("old", "new") and _leftovers(store) == []


def test_a_second_writer_says_whom_it_waits_for(store):
    messages, done = [], threading.Event()
    final = store.run_dir(*RUN)
    with files.path_lock(final):
        thread = threading.Thread(target=lambda: (store.save(_model(2.0), _meta(2.0), *RUN,
                                                             log=messages.append), done.set()))
        thread.start()
        thread.join(1.0)
        assert not done.is_set() and _state(store) == "old"  # it waits, it does not write
    thread.join(30)
    assert done.is_set() and _state(store) == "new"
    assert len(messages) == 1 and f"pid {os.getpid()} on " in messages[0] and str(final) in messages[0]


def test_a_writer_that_waits_too_long_names_the_holder(store):
    final = store.run_dir(*RUN)
    with files.path_lock(final):
        with pytest.raises(SegbenchError, match=rf"still locked by pid {os.getpid()} on .* wait for") as info:
            with files.path_lock(final, timeout=0.2, log=lambda _: None):
                pass
    assert "\n" not in str(info.value) and _state(store) == "old"


# ---------------------------------------------------------------- permissions follow the umask


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=["umask022", "umask077", "umask002"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_weights_folder_and_files_follow_the_umask(tmp_path, umask):
    store = LocalStore(tmp_path / "s")
    store.save(_model(1.0), _meta(1.0), *RUN)
    folder = store.run_dir(*RUN)
    assert _mode(folder) == 0o777 & ~umask
    assert _mode(folder / WEIGHTS_FILE) == _mode(folder / CONFIG_FILE) == 0o666 & ~umask


def test_records_follow_the_umask(tmp_path, umask):
    path = write_record(make_record(), tmp_path)
    assert _mode(path) == 0o666 & ~umask and _mode(path.parent) == 0o777 & ~umask


def test_checkpoints_follow_the_umask(tmp_path, umask):
    path = tmp_path / "ck" / "last.pt"
    save_checkpoint(path, {"format": 2, "x": torch.ones(2)})
    assert _mode(path) == 0o666 & ~umask and torch.equal(load_checkpoint(path)["x"], torch.ones(2))


# ---------------------------------------------------------------- full disk, unwritable folder (patched writers)

ENOSPC = OSError(errno.ENOSPC, "No space left on device")
EACCES = PermissionError(errno.EACCES, "Permission denied")
EROFS = OSError(errno.EROFS, "Read-only file system")
FAULTS = [(ENOSPC, "no space left on device"), (EACCES, "folder is not writable (permission denied)"),
          (EROFS, "read-only file system")]


@pytest.mark.parametrize("exc,words", FAULTS, ids=["enospc", "eacces", "erofs"])
def test_store_save_fault_is_one_line_and_keeps_the_old_weights(store, monkeypatch, exc, words):
    _fail_once(monkeypatch, store_module, "save_file", exc=exc)
    with pytest.raises(SegbenchError) as info:
        _saved(store, 2.0)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert "tiny--abcdef123456" in str(info.value)
    assert _state(store) == "old" and _leftovers(store) == []


@pytest.mark.parametrize("exc,words", FAULTS, ids=["enospc", "eacces", "erofs"])
def test_record_write_fault_is_one_line_and_keeps_the_old_record(tmp_path, monkeypatch, exc, words):
    path = write_record(make_record(), tmp_path)
    before = path.read_bytes()
    _fail_once(monkeypatch, files.os, "fsync", exc=exc)
    with pytest.raises(SegbenchError) as info:
        write_record(make_record(seed=5), tmp_path)
    message = str(info.value)
    assert words in message and "\n" not in message and str(path.parent) in message
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == [path.name]


@pytest.mark.parametrize("exc,words", FAULTS[:2], ids=["enospc", "eacces"])
def test_checkpoint_write_fault_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, exc, words):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})
    monkeypatch.setattr("segbench.train.checkpoints.torch.save", lambda *a, **k: (_ for _ in ()).throw(exc))
    with pytest.raises(SegbenchError, match=re.escape(words)) as info:
        save_checkpoint(path, {"epoch": 2})
    assert "\n" not in str(info.value) and load_checkpoint(path) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_an_unrelated_os_error_is_not_disguised(tmp_path, monkeypatch):
    _fail_once(monkeypatch, files.os, "fsync", exc=OSError(errno.EIO, "Input/output error"))
    with pytest.raises(OSError, match="Input/output error"):
        write_record(make_record(), tmp_path)


def test_an_interrupted_record_write_leaves_no_half_record(tmp_path, monkeypatch):
    path = write_record(make_record(), tmp_path)
    before = path.read_bytes()
    _fail_once(monkeypatch, files.os, "replace")
    with pytest.raises(Interrupt):
        write_record(make_record(seed=9), tmp_path)
    assert path.read_bytes() == before and load_records(tmp_path)[1] == []
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


# ---------------------------------------------------------------- a real tiny disk (tmpfs; root only)


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a tmpfs (run the tests as root, e.g. in a container)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_tiny_disk_full_weights_save_is_one_line_and_keeps_the_old(tiny_disk):
    store = LocalStore(tiny_disk)
    store.save(_model(1.0), _meta(1.0), *RUN)
    big = nn.Linear(200, 100)  # 80 kB of weights: more than the disk holds
    with pytest.raises(SegbenchError, match="no space left on device") as info:
        store.save(big, _meta(2.0), *RUN)
    assert "\n" not in str(info.value) and str(tiny_disk) in str(info.value)
    assert json.loads((store.run_dir(*RUN) / CONFIG_FILE).read_text())["mean"] == [1.0]
    assert _leftovers(store) == []


def test_tiny_disk_full_record_write_is_one_line(tiny_disk):
    (tiny_disk / "filler").write_bytes(b"\0" * (60 << 10))
    record = make_record()
    record["training"]["history"] = [{"epoch": i, "loss": 0.5, "lr": 0.1, "seconds": float(i)} for i in range(400)]
    with pytest.raises(SegbenchError, match="no space left on device") as info:
        write_record(record, tiny_disk)
    assert "\n" not in str(info.value)
    assert not [p for p in (tiny_disk / "records" / "synthetic").iterdir()]


def test_read_only_disk_is_one_line_naming_the_folder(tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a tmpfs (run the tests as root, e.g. in a container)")
    try:
        with pytest.raises(SegbenchError, match="read-only file system") as info:
            write_record(make_record(), mount)
        assert "\n" not in str(info.value) and str(mount) in str(info.value)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("uri", ["local:../../etc", "local:../weights2/x--1", "local:/etc/passwd", "local:"])
def test_local_uri_cannot_leave_the_store(tmp_path, uri):
    from segbench.weights.store import LocalStore

    with pytest.raises(SegbenchError, match="must name a run inside the store"):
        LocalStore(tmp_path / "store").resolve(uri)
