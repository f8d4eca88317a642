"""The one image reader: every format the README lists gives the same tensor through a dataset folder,
``predict`` and an app upload; 16-bit images are scaled by their bit depth; EXIF orientation is applied to images
and masks alike; empty files and decompression bombs are one line before anything is decoded."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from segbench.app import uploads
from segbench.data import folder
from segbench.data.io import image_size, read_image, read_mask, to_channels
from segbench.errors import SegbenchError
from segbench.inference.predict import load_image

RNG = np.random.RandomState(0)
RGB = RNG.randint(0, 256, (6, 10, 3), dtype=np.uint8)
GREY = RNG.randint(0, 256, (6, 10), dtype=np.uint8)


def _folder(root, **options):
    """``ImageMaskFolder`` through the folder builder (split "all": root/images and root/masks)."""
    return folder.build(split="all", root=root, **options)


def _png_raw(path: Path, width: int, height: int, *, depth: int = 8, colour: int = 0, rows: bytes | None = None):
    """A PNG written by hand (16-bit RGB, 0x0, bombs: things PIL will not write)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    data = zlib.compress(rows if rows is not None else b"\0" * 100)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def _rgb16(path: Path, values: np.ndarray) -> Path:
    h, w, _ = values.shape
    rows = b"".join(b"\0" + values[y].astype(">u2").tobytes() for y in range(h))
    return _png_raw(path, w, h, depth=16, colour=2, rows=rows)


def _write(path: Path, kind: str) -> tuple[Path, np.ndarray]:
    """(file, the uint8 [H,W,C] a correct reader returns) for one format of the README's list."""
    if kind == "png-grey":
        Image.fromarray(GREY).save(path)
        return path, GREY[..., None]
    if kind == "png-rgb":
        Image.fromarray(RGB).save(path)
        return path, RGB
    if kind == "png-rgba":
        Image.fromarray(np.dstack([RGB, np.full((6, 10), 7, np.uint8)])).save(path)
        return path, RGB
    if kind == "png-palette":
        img = Image.fromarray(RGB).quantize(colors=16)
        img.save(path)
        return path, np.array(img.convert("RGB"))
    if kind == "png-palette-alpha":
        img = Image.fromarray(RGB).quantize(colors=8)
        img.save(path, transparency=0)
        return path, np.array(img.convert("RGB"))
    if kind == "png-1bit":
        Image.fromarray(GREY > 127).convert("1").save(path)
        return path, ((GREY > 127) * 255).astype(np.uint8)[..., None]
    if kind == "png-grey-alpha":
        Image.fromarray(np.dstack([GREY, GREY]), mode="LA").save(path)
        return path, GREY[..., None]
    if kind == "png-16-grey":
        values = GREY.astype(np.uint16) * 257  # an 8-bit image expanded to 16 bits reads back exactly
        Image.fromarray(values).save(path)
        return path, GREY[..., None]
    if kind == "png-16-rgb":
        return _rgb16(path, RGB.astype(np.uint16) * 257), RGB
    if kind == "tiff-rgb":
        Image.fromarray(RGB).save(path)
        return path, RGB
    if kind == "tiff-16-grey":
        Image.fromarray(GREY.astype(np.uint16) * 257).save(path)
        return path, GREY[..., None]
    if kind == "bmp-rgb":
        Image.fromarray(RGB).save(path)
        return path, RGB
    if kind == "bmp-grey":
        Image.fromarray(GREY).save(path)
        return path, GREY[..., None]
    if kind == "webp-lossless":
        Image.fromarray(RGB).save(path, lossless=True)
        return path, RGB
    if kind == "jpeg-rgb":
        Image.fromarray(RGB).save(path, quality=95)
        return path, np.array(Image.open(path).convert("RGB"))
    if kind == "jpeg-grey":
        Image.fromarray(GREY).save(path, quality=95)
        return path, np.array(Image.open(path))[..., None]
    raise AssertionError(kind)


FORMATS = {"png-grey": "png", "png-rgb": "png", "png-rgba": "png", "png-palette": "png", "png-palette-alpha": "png",
           "png-1bit": "png", "png-grey-alpha": "png",
           "png-16-grey": "png", "png-16-rgb": "png", "tiff-rgb": "tif", "tiff-16-grey": "tif", "bmp-rgb": "bmp",
           "bmp-grey": "bmp", "webp-lossless": "webp", "jpeg-rgb": "jpg", "jpeg-grey": "jpg"}


@pytest.mark.parametrize("kind", list(FORMATS))
def test_every_listed_format_reads_the_same_everywhere(tmp_path, kind):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    path, expected = _write(tmp_path / "images" / f"a.{FORMATS[kind]}", kind)
    Image.fromarray(np.zeros((6, 10), np.uint8)).save(tmp_path / "masks" / "a.png")
    tolerance = 2 if kind.startswith("jpeg") else 0  # two JPEG decoders may round an IDCT differently
    direct = read_image(path)
    assert direct.dtype == torch.uint8 and direct.shape == (expected.shape[2], 6, 10)
    assert (direct.permute(1, 2, 0).int() - torch.from_numpy(expected).int()).abs().max() <= tolerance
    assert torch.equal(load_image(path), direct)  # predict
    assert torch.equal(uploads.read_upload(path)[0], direct)  # the app
    dataset_image, _ = _folder(tmp_path, num_classes=2).load(0)  # a dataset folder (in_channels 3)
    assert torch.equal(dataset_image, to_channels(direct, 3))


@pytest.mark.parametrize("values,expected", [((300, 1100), (1, 4)), ((0, 65535), (0, 255)), ((257, 32896), (1, 128))],
                         ids=["12-bit-range", "full-range", "8-bit-expanded"])
def test_16_bit_is_scaled_by_its_bit_depth_in_datasets_and_predict(tmp_path, values, expected):
    """Before: a dataset fed 300..1100 to the network as if 8-bit while predict scaled by the image's maximum."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    array = np.array([[values[0], values[1]]], dtype=np.uint16)
    Image.fromarray(array).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((1, 2), np.uint8)).save(tmp_path / "masks" / "a.png")
    image, _ = _folder(tmp_path, num_classes=2, in_channels=1).load(0)
    assert image.dtype == torch.uint8 and image.flatten().tolist() == list(expected)
    assert load_image(tmp_path / "images" / "a.png").flatten().tolist() == list(expected)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_exif_orientation_is_applied_as_viewers_do(tmp_path, orientation, suffix):
    path = tmp_path / f"o.{suffix}"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(RGB).save(path, exif=exif.tobytes(), **({"quality": 100} if suffix == "jpg" else {}))
    shown = np.array(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    image = read_image(path)
    assert image.shape[1:] == shown.shape[:2] and image_size(path) == (shown.shape[1], shown.shape[0])
    assert (image.permute(1, 2, 0).int() - torch.from_numpy(shown).int()).abs().max() <= (2 if suffix == "jpg" else 0)


def _oriented_pair(tmp_path: Path, orientation: int) -> tuple[np.ndarray, np.ndarray]:
    """A phone photo stored sideways/upside down with its EXIF tag, and labels drawn on the photo as shown."""
    shown = np.zeros((8, 12, 3), np.uint8)
    shown[:3, :4] = 255  # a bright object top-left, as the annotator saw it
    labels = (shown[..., 0] > 0).astype(np.uint8)
    inverse = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90}[orientation]
    stored = Image.fromarray(shown).transpose(inverse)
    exif = Image.Exif()
    exif[0x0112] = orientation
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    stored.save(tmp_path / "images" / "a.jpg", exif=exif.tobytes(), quality=100)
    Image.fromarray(labels).save(tmp_path / "masks" / "a.png")
    return shown, labels


@pytest.mark.parametrize("orientation", [3, 6])
def test_dataset_labels_line_up_with_an_exif_rotated_photo(tmp_path, orientation):
    """Before: orientation 3 was accepted with labels 180 degrees off; 6 was refused as a size mismatch."""
    _, labels = _oriented_pair(tmp_path, orientation)
    image, mask = _folder(tmp_path, num_classes=2).load(0)
    assert mask.tolist() == labels.tolist()
    bright = image.float().mean(0) > 127
    assert torch.equal(bright, mask.bool())


def test_a_mask_with_exif_orientation_turns_like_its_image(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(RGB).save(tmp_path / "i.png", exif=exif.tobytes())
    Image.fromarray((GREY > 127).astype(np.uint8)).save(tmp_path / "m.png", exif=exif.tobytes())
    image, mask = read_image(tmp_path / "i.png"), read_mask(tmp_path / "m.png")
    assert image.shape[1:] == mask.shape == (10, 6)
    assert mask.tolist() == np.array(ImageOps.exif_transpose(Image.open(tmp_path / "m.png"))).tolist()


# ---------------------------------------------------------------- masks: label values exactly


def test_palette_mask_gives_its_indices(tmp_path):
    labels = RNG.randint(0, 5, (6, 10)).astype(np.uint8)
    img = Image.new("P", (10, 6))
    img.putpalette(sum(([i * 50, 0, 255 - i * 50] for i in range(5)), []))  # colours unlike the indices
    img.putdata(labels.flatten().tolist())
    img.save(tmp_path / "p.png")
    assert read_mask(tmp_path / "p.png").tolist() == labels.tolist()


def test_16_bit_label_png_keeps_its_values(tmp_path):
    labels = np.array([[0, 1, 300], [1000, 65535, 7]], dtype=np.uint16)
    Image.fromarray(labels).save(tmp_path / "l.png")
    mask = read_mask(tmp_path / "l.png")
    assert mask.dtype == torch.int64 and mask.tolist() == labels.astype(np.int64).tolist()


def test_1_bit_mask_gives_0_and_1(tmp_path):
    Image.fromarray(GREY > 127).convert("1").save(tmp_path / "b.png")
    assert read_mask(tmp_path / "b.png").tolist() == (GREY > 127).astype(int).tolist()


# ---------------------------------------------------------------- one line before decoding


def _one_line(exc: pytest.ExceptionInfo, *words: str) -> str:
    message = str(exc.value)
    assert "\n" not in message and all(w in message for w in words), message
    return message


@pytest.mark.parametrize("reader", ["dataset-image", "dataset-mask", "predict", "upload"])
def test_empty_png_is_one_line_without_libpng_noise(tmp_path, capfd, reader):
    """Before: 'Internal error.' plus libpng warnings on stderr."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    image, mask = tmp_path / "images" / "a.png", tmp_path / "masks" / "a.png"
    Image.fromarray(GREY).save(image)
    Image.fromarray(np.zeros((6, 10), np.uint8)).save(mask)
    _png_raw(mask if reader == "dataset-mask" else image, 0, 0)
    call = {"dataset-image": lambda: _folder(tmp_path, num_classes=2).load(0),
            "dataset-mask": lambda: _folder(tmp_path, num_classes=2).load(0),
            "predict": lambda: load_image(image), "upload": lambda: uploads.read_upload(image, name="mine.png")}[reader]
    with pytest.raises(SegbenchError) as info:
        call()
    _one_line(info, "empty", "mine.png" if reader == "upload" else "a.png")
    assert "libpng" not in capfd.readouterr().err


@pytest.mark.parametrize("reader", ["dataset", "predict", "upload", "mask"])
def test_decompression_bomb_is_refused_from_the_header(tmp_path, reader):
    """Before: a 56-frame C++ stack (or a segfault) from a dataset folder."""
    path = _png_raw(tmp_path / "bomb.png", 9000, 9000)  # 81 MP: over 64 MP, under PIL's own guard
    call = {"dataset": lambda: read_image(path, channels=3), "predict": lambda: load_image(path),
            "upload": lambda: uploads.read_upload(path, name="bomb.png"), "mask": lambda: read_mask(path)}[reader]
    with pytest.raises(SegbenchError) as info:
        call()
    _one_line(info, "bomb.png", "too large", "9000x9000")


def test_a_huge_bomb_is_one_line_in_a_fresh_process(tmp_path):
    path = _png_raw(tmp_path / "huge.png", 20000, 20000)  # 400 MP: segfaulted torchvision before
    code = f"from segbench.data.io import read_image; read_image({str(path)!r})"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith("segbench.errors.SegbenchError")
    assert "too large" in result.stderr and "libpng" not in result.stderr


def test_the_pixel_limit_can_be_configured(tmp_path, monkeypatch):
    Image.fromarray(GREY).save(tmp_path / "a.png")
    monkeypatch.setenv("SEGBENCH_MAX_PIXELS", "50")
    with pytest.raises(SegbenchError) as info:
        read_image(tmp_path / "a.png")
    _one_line(info, "10x6", "SEGBENCH_MAX_PIXELS")
    assert read_image(tmp_path / "a.png", limit=60).shape == (1, 6, 10)


def test_a_bad_pixel_limit_setting_is_one_line(tmp_path, monkeypatch):
    Image.fromarray(GREY).save(tmp_path / "a.png")
    monkeypatch.setenv("SEGBENCH_MAX_PIXELS", "lots")
    with pytest.raises(SegbenchError) as info:
        read_image(tmp_path / "a.png")
    _one_line(info, "SEGBENCH_MAX_PIXELS", "positive")


def test_a_float_tiff_is_refused_not_guessed(tmp_path):
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(SegbenchError) as info:
        read_image(tmp_path / "f.tif")
    _one_line(info, "f.tif", "floating-point", "8 or 16 bits")


def test_upload_errors_name_the_users_file_not_the_server_path(tmp_path):
    path = tmp_path / "gradio-tmp-123" / "x"
    path.parent.mkdir()
    path.write_bytes(b"not an image at all")
    with pytest.raises(SegbenchError) as info:
        uploads.read_upload(path, name="holiday.jpg")
    assert "holiday.jpg" in _one_line(info, "not an image") and str(path) not in str(info.value)


def test_bytes_and_files_read_the_same(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(RGB).save(buffer, format="PNG")
    (tmp_path / "a.png").write_bytes(buffer.getvalue())
    assert torch.equal(load_image(buffer.getvalue()), load_image(tmp_path / "a.png"))
