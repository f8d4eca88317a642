"""``segbench predict`` on folders: no result overwrites another, a bad image is one line and the rest go on (exit
status 2 when any failed), a full disk or an unwritable output folder is one line."""

from __future__ import annotations

import errno
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segbench import files
from segbench.cli import main
from segbench.models import build_model
from segbench.weights.store import save_weights
from segbench.weights.meta import WeightsMeta


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("w")
    model = build_model("unet_small", num_classes=3, base_channels=4, depth=2)
    save_weights(model, WeightsMeta.from_dict({
        "model": "unet_small", "model_args": {"base_channels": 4, "depth": 2}, "num_classes": 3, "mean": [0.5] * 3,
        "std": [0.25] * 3, "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]], "in_channels": 3,
        "class_names": ["a", "b", "c"]}), folder)
    return folder


def _image(path: Path, value: int = 100) -> Path:
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


def _empty_png(path: Path) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 0, 8, 0, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


def _run(weights: Path, folder: Path, out: Path, capsys) -> tuple[int, list[str], list[str]]:
    code = main(["predict", str(weights), str(folder), "--out", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


def test_same_stem_images_keep_their_extension_in_the_output_names(weights, tmp_path, capsys):
    """Before: x.png and x.jpg both wrote x_mask.png, the second silently replacing the first."""
    folder = tmp_path / "in"
    folder.mkdir()
    _image(folder / "x.png", 10)
    _image(folder / "x.jpg", 240)
    _image(folder / "y.png")
    code, _, err = _run(weights, folder, tmp_path / "out", capsys)
    assert code == 0 and err == []
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["x.jpg_mask.png", "x.jpg_overlay.png", "x.png_mask.png", "x.png_overlay.png",
                     "y_mask.png", "y_overlay.png"]


def test_stems_differing_only_in_case_do_not_clash(weights, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _image(folder / "X.png")
    _image(folder / "x.jpg")
    code, _, _ = _run(weights, folder, tmp_path / "out", capsys)
    assert code == 0 and {"X.png_mask.png", "x.jpg_mask.png"} <= {p.name for p in (tmp_path / "out").iterdir()}


def test_a_clash_that_remains_is_refused_before_anything_is_written(weights, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("x.png", "x.jpg", "x.png.jpg"):
        _image(folder / name)
    code, _, err = _run(weights, folder, tmp_path / "out", capsys)
    assert code == 2 and len(err) == 1 and "x.png" in err[0] and "rename one" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", ["corrupt", "empty", "text", "bomb"])
def test_a_bad_image_is_one_line_and_the_others_are_predicted(weights, tmp_path, capsys, bad):
    """Before: the first bad image stopped the whole folder."""
    folder = tmp_path / "in"
    folder.mkdir()
    _image(folder / "a.png")
    path = folder / "b.png"
    if bad == "corrupt":
        path.write_bytes(_image(path).read_bytes()[:60])
    elif bad == "empty":
        _empty_png(path)
    elif bad == "text":
        path.write_text("hello")
    else:
        Image.new("L", (9000, 9000)).save(path, optimize=False, compress_level=1)
    _image(folder / "c.png")
    code, out, err = _run(weights, folder, tmp_path / "out", capsys)
    assert code == 2 and len(err) == 2
    assert err[0].startswith("error: ") and "b.png" in err[0] and "1 of 3 image(s) failed" in err[1]
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["a_mask.png", "a_overlay.png", "c_mask.png", "c_overlay.png"]
    assert any("a.png" in line for line in out) and any("c.png" in line for line in out)


def test_hidden_files_are_not_images(weights, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _image(folder / "a.png")
    (folder / "._a.png").write_bytes(b"\0\5\26\7resource fork")  # macOS metadata beside copied files
    code, _, err = _run(weights, folder, tmp_path / "out", capsys)
    assert code == 0 and err == []


@pytest.mark.parametrize("exc,words", [(OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
                                       (PermissionError(errno.EACCES, "Permission denied"), "not writable")],
                         ids=["enospc", "eacces"])
def test_a_write_fault_is_one_line_and_leaves_no_half_file(weights, tmp_path, capsys, monkeypatch, exc, words):
    folder = tmp_path / "in"
    folder.mkdir()
    _image(folder / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(files.os, "fsync", lambda fd: (_ for _ in ()).throw(exc))
    code, _, err = _run(weights, folder, out, capsys)
    assert code == 2 and len(err) == 1 and words in err[0] and str(out) in err[0]
    assert list(out.iterdir()) == []
