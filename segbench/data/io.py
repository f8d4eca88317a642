"""Reading images and masks: the ONE image reader of segbench (datasets, ``predict`` and the app's uploads), and
the checks that turn bad input into one-line SegbenchErrors.

Every image goes through :func:`read_image`, so one file gives the same tensor everywhere:

1. the header is read first (PIL opens lazily, no pixel decoded): an empty (0x0) image or one above the pixel
   limit (:func:`max_pixels`, 64 MP unless ``$SEGBENCH_MAX_PIXELS`` or the caller says otherwise; a
   decompression bomb) is refused with one line before any memory is spent;
2. PNG, JPEG and WebP decode with ``torchvision.io.decode_image`` (as stored), BMP, TIFF and GIF with PIL;
3. alpha is dropped, palette images become RGB;
4. 16-bit images are scaled by the range of their bit depth, ``round(v * 255 / 65535)`` (= round(v / 257)),
   never by the image's own maximum, so one value means one brightness in every file (a 12-bit camera image
   stored in 16 bits reads dark: rescale it to the full 16-bit range first). 32-bit and float images are refused;
5. the EXIF orientation is applied (:func:`orient`, the 8 cases of the EXIF standard), as viewers show the image;
6. channels become what the caller asks (grey repeated to RGB; RGB to grey by ITU-R 601 luma).

Masks (:func:`read_mask`) are read with PIL as stored label values, never through float or 8-bit scaling: palette
PNGs give their indices, 16-bit label PNGs keep their values, 1-bit masks give 0/1; the same header checks and
the same EXIF orientation as their image apply, so image and labels stay aligned. Every error names the file.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image

from ..errors import SegbenchError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
_TORCHVISION_FORMATS = {"PNG", "JPEG", "MPO", "WEBP"}  # PIL's format names that torchvision.io decodes
DEFAULT_MAX_PIXELS = 64_000_000  # about 8000 x 8000: a bigger file is refused before decoding
MASK_SUFFIXES = {".png", ".bmp", ".tif", ".tiff", ".gif", ".jpg", ".jpeg", ".webp"}  # JPEG allowed but lossy

# ================================================================ folders


def require_dir(path: str | Path | None, *, what: str) -> Path:
    """Return ``path`` as a Path, or raise the 'folder not found' error that tells the user where data is looked for."""
    if path is None:
        raise SegbenchError(
            f"{what}: no data folder given and none found under $SEGBENCH_DATA or ../shared/data; "
            "pass --data-root <folder> or set SEGBENCH_DATA"
        )
    path = Path(path)
    if not path.is_dir():
        raise SegbenchError(f"{path}: {what} folder not found; pass --data-root <folder> or set SEGBENCH_DATA")
    return path


def list_files(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    """Files in ``folder`` with one of ``suffixes`` (case-insensitive), hidden files skipped, sorted by name."""
    suffixes = set(suffixes)
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes
    )


def pair_by_stem(image_dir: Path, mask_dir: Path) -> list[tuple[Path, Path]]:
    """Pair ``image_dir/<stem>.*`` with ``mask_dir/<stem>.*``; every image needs exactly one mask and vice versa.

    Checks only names (cheap); file contents are validated when a sample is loaded.
    """
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise SegbenchError(f"{folder}: folder not found; create it or point the dataset root at the right folder")
    images = list_files(image_dir, IMAGE_SUFFIXES)
    if not images:
        raise SegbenchError(
            f"{image_dir}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}); "
            "put the images there or point the dataset root at the right folder"
        )
    masks: dict[str, Path] = {}
    for mask in list_files(mask_dir, MASK_SUFFIXES):
        if mask.stem in masks:
            raise SegbenchError(f"{mask}: two masks share the stem '{mask.stem}' ({masks[mask.stem].name}); keep one")
        masks[mask.stem] = mask
    pairs = []
    for image in images:
        mask = masks.pop(image.stem, None)
        if mask is None:
            raise SegbenchError(
                f"{image}: image has no mask named '{image.stem}.png' (or another image type) in {mask_dir}; "
                "add the mask or remove the image"
            )
        pairs.append((image, mask))
    if masks:
        orphan = next(iter(masks.values()))
        raise SegbenchError(
            f"{orphan}: mask has no image named '{orphan.stem}.*' in {image_dir} ({len(masks)} such masks); "
            "add the image or remove the mask"
        )
    return pairs


# ================================================================ header


def max_pixels() -> int:
    """The pixel limit: ``$SEGBENCH_MAX_PIXELS`` if set, else :data:`DEFAULT_MAX_PIXELS`."""
    text = os.environ.get("SEGBENCH_MAX_PIXELS")
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        value = 0
    if value <= 0:
        raise SegbenchError(f"SEGBENCH_MAX_PIXELS={text!r}: must be a positive number of pixels, e.g. 64000000")
    return value


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, read before any pixel is decoded."""

    width: int  # as stored
    height: int
    orientation: int  # EXIF orientation 1..8 (1: show as stored)
    format: str  # PIL's name: "PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF", ...
    mode: str  # PIL's mode: "L", "RGB", "P", "I;16", ...

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as shown, after the EXIF orientation (5-8 swap the axes)."""
        return (self.height, self.width) if self.orientation >= 5 else (self.width, self.height)


def _exif_orientation(img: Image.Image) -> int:
    try:
        if img.format == "PNG":
            # Only an eXIf chunk before the pixels (PNG requires it there); PIL's getexif() would decode the image.
            raw = img.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = img.getexif()
        value = int(exif.get(0x0112, 1))
    except Exception:  # noqa: BLE001 - broken EXIF is common and harmless: show the pixels as stored
        return 1
    return value if 1 <= value <= 8 else 1


@functools.cache
def _pil_orients_tiff() -> bool:
    """Whether this Pillow applies a TIFF's orientation itself (newer ones do, in ``size`` and on load): then the
    file is decoded as shown already and must not be turned again."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.new("L", (2, 1)).save(buffer, format="TIFF", exif=exif.tobytes())
    with Image.open(buffer) as img:
        return img.size == (1, 2)


def _empty_png(data: bytes) -> bool:
    """True for a PNG whose IHDR says 0 pixels wide or high (PIL refuses to open it, libpng prints noise)."""
    return data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and (
        data[16:20] == b"\0\0\0\0" or data[20:24] == b"\0\0\0\0")


def _open(source: str | Path | bytes, label: str) -> Image.Image:
    """PIL's lazy open (header only) with its own bomb check quiet: ours, stricter, follows."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise SegbenchError(f"{label}: file not found (moved or deleted?); check the path") from None
    except Image.DecompressionBombError:
        raise SegbenchError(f"{label}: image is too large (over 179 MP, a possible decompression bomb; limit "
                            f"{max_pixels() / 1e6:.0f} MP); downscale it first") from None
    except IsADirectoryError:
        raise SegbenchError(f"{label}: is a folder, not an image file; give an image file") from None
    except PermissionError:
        raise SegbenchError(f"{label}: permission denied; make the file readable") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        head = source[:24] if isinstance(source, bytes) else _head(source)
        if _empty_png(head):
            raise SegbenchError(f"{label}: image is empty (0 pixels wide or high); re-export it or remove it") from None
        raise _decode_error(label, exc, source) from None


def _head(path: str | Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(24)
    except OSError:
        return b""


def _check_header(img: Image.Image, label: str, limit: int | None) -> ImageHeader:
    width, height = img.size
    applied = img.format == "TIFF" and _pil_orients_tiff()
    header = ImageHeader(width, height, 1 if applied else _exif_orientation(img), img.format or "", img.mode)
    if width == 0 or height == 0:
        raise SegbenchError(f"{label}: image is empty ({width}x{height} pixels); re-export it or remove it")
    limit = max_pixels() if limit is None else limit
    if width * height > limit:
        raise SegbenchError(f"{label}: {width}x{height} pixels ({width * height / 1e6:.0f} MP) is too large "
                            f"(limit {limit / 1e6:.0f} MP, set by SEGBENCH_MAX_PIXELS); downscale it first")
    return header


def read_header(source: str | Path | bytes, *, name: str | None = None, limit: int | None = None) -> ImageHeader:
    """The checked header of an image file (or its bytes); SegbenchError (naming ``name`` or the path) for a
    missing, empty, non-image or over-large (``limit`` pixels, default :func:`max_pixels`) file."""
    label = name or ("upload" if isinstance(source, bytes) else str(source))
    with _open(source, label) as img:
        return _check_header(img, label, limit)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image as shown (EXIF orientation applied), from its header only."""
    return read_header(path).size


# ================================================================ decoding


def _decode_error(label: str | Path, exc: Exception, source: Any = None) -> SegbenchError:
    if isinstance(exc, FileNotFoundError):
        return SegbenchError(f"{label}: file not found (moved or deleted after the dataset was built?); restore it")
    # torchvision's messages start with a C++ source location; keep only the last, human part.
    reason = str(exc).strip().splitlines()[-1].rsplit(", ", 1)[-1] if str(exc).strip() else type(exc).__name__
    if isinstance(source, (str, Path)):  # PIL quotes the path: the label already names the file (maybe otherwise)
        reason = reason.replace(f" '{source}'", "").replace(str(source), str(label))
    return SegbenchError(
        f"{label}: not an image, or a corrupt or truncated one ({reason}); re-save it as PNG/JPEG or remove it"
    )


def orient(tensor: Tensor, orientation: int) -> Tensor:
    """Apply an EXIF orientation (1..8) to ``tensor [..., H, W]``: the stored pixels as a viewer shows them."""
    if orientation in (5, 6, 7, 8):
        # 5: transpose, 6: rotate 90 clockwise, 7: transverse, 8: rotate 90 counter-clockwise
        tensor = tensor.transpose(-1, -2)
        flips = {5: (), 6: (-1,), 7: (-1, -2), 8: (-2,)}[orientation]
    else:
        # 2: mirror left-right, 3: rotate 180, 4: mirror top-bottom
        flips = {1: (), 2: (-1,), 3: (-1, -2), 4: (-2,)}[orientation]
    return tensor.flip(flips).contiguous() if flips else tensor.contiguous()


def to_uint8(tensor: Tensor) -> Tensor:
    """uint8 stays; uint16 -> uint8 by the bit depth's range, round(v * 255 / 65535) (0 -> 0, 65535 -> 255)."""
    if tensor.dtype == torch.uint8:
        return tensor
    return ((tensor.to(torch.int32) * 255 + 32767) // 65535).to(torch.uint8)


def to_channels(image: Tensor, channels: int) -> Tensor:
    """uint8 [C,H,W] (C 1 or 3) -> uint8 [channels,H,W]: grey repeated to RGB, RGB to grey by ITU-R 601 luma."""
    c = image.shape[0]
    if c == channels:
        return image
    if channels == 3 and c == 1:
        return image.expand(3, -1, -1).contiguous()
    if channels == 1 and c == 3:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        return (image.float() * weights).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise SegbenchError(f"image has {c} channels but {channels} are expected; use 1 (grey) or 3 (RGB)")


def _pil_pixels(img: Image.Image, label: str) -> np.ndarray:
    """A loaded PIL image -> uint8/uint16 [H,W] or [H,W,3], as stored (alpha dropped, palette to RGB)."""
    mode = img.mode
    if mode in ("I", "F"):
        kind = "32-bit integer" if mode == "I" else "floating-point"
        raise SegbenchError(f"{label}: {kind} image; images must be 8 or 16 bits per channel (re-save it as "
                            "8/16-bit PNG or TIFF)")
    if mode.startswith("I;16"):
        return np.array(img).astype(np.uint16)
    if mode in ("1", "L", "LA", "La"):
        return np.array(img.convert("L"))
    return np.array(img.convert("RGB"))


def _decode(data: np.ndarray, header: ImageHeader, label: str) -> Tensor:
    """File bytes -> uint8/uint16 [C,H,W] as stored (C 1..4)."""
    if header.format in _TORCHVISION_FORMATS:
        try:
            # palette and 1-bit files: torchvision's UNCHANGED would give palette indices / 0..1 values
            mode = ImageReadMode.RGB if header.mode in ("P", "PA") else (
                ImageReadMode.GRAY if header.mode == "1" else ImageReadMode.UNCHANGED)
            return decode_image(torch.from_numpy(data), mode=mode)
        except (RuntimeError, ValueError, OSError) as exc:
            raise _decode_error(label, exc) from None
    try:
        with _open(data.tobytes(), label) as img:
            img.load()
            array = _pil_pixels(img, label)
    except (OSError, SyntaxError, ValueError) as exc:
        raise _decode_error(label, exc) from None
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)


def _file_bytes(source: str | Path | bytes, label: str) -> np.ndarray:
    if isinstance(source, bytes):
        return np.frombuffer(source, dtype=np.uint8).copy()  # writable, for torch.from_numpy
    try:
        return np.fromfile(source, dtype=np.uint8)
    except OSError as exc:
        raise _decode_error(label, exc) from None


def read_image(source: str | Path | bytes, *, channels: int | None = None, limit: int | None = None,
               name: str | None = None) -> Tensor:
    """Decode an image file (or its bytes) to ``uint8 [C,H,W]`` (module docstring: header checks, 16-bit scaling,
    EXIF orientation). ``channels`` 1 or 3 converts; None keeps the file's (1 for grey, 3 otherwise).
    ``limit``: pixel limit (default :func:`max_pixels`); ``name``: what errors call the file (default its path)."""
    label = name or ("upload" if isinstance(source, bytes) else str(source))
    if channels not in (None, 1, 3):
        raise SegbenchError(f"{label}: in_channels={channels} is not supported; use 1 (grey) or 3 (RGB)")
    header = read_header(source, name=label, limit=limit)
    tensor = _decode(_file_bytes(source, label), header, label)
    if tensor.shape[0] in (2, 4):
        tensor = tensor[:-1]  # alpha: the models see colour only
    if tensor.ndim != 3 or tuple(tensor.shape[-2:]) != (header.height, header.width):
        raise SegbenchError(f"{label}: decoded size {tuple(tensor.shape)} differs from the header's "
                            f"{header.width}x{header.height} (an animated or corrupt file?); re-save it as PNG")
    image = orient(to_uint8(tensor), header.orientation)
    return image if channels is None else to_channels(image, channels)


def mask_pixels(source: str | Path | bytes, *, name: str | None = None,
                limit: int | None = None) -> tuple[np.ndarray, str]:
    """A mask file's values as stored, EXIF orientation applied as to images: (array [H,W] or [H,W,C], PIL mode).
    Palette PNGs give indices, 16-bit PNGs their values, 1-bit images 0/1. For callers that map colours."""
    label = name or ("upload" if isinstance(source, bytes) else str(source))
    try:
        with _open(source, label) as img:
            header = _check_header(img, label, limit)
            img.load()
            # colour spaces no label image uses: as RGB, for callers that map legend colours
            array = np.array(img.convert("RGB") if img.mode in ("CMYK", "YCbCr", "LAB", "HSV") else img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise _decode_error(label, exc) from None
    if array.dtype.byteorder not in ("=", "|"):
        array = array.astype(array.dtype.newbyteorder("="))  # big-endian 16-bit PNG values as native integers
    tensor = torch.from_numpy(array)
    oriented = orient(tensor if tensor.ndim == 2 else tensor.permute(2, 0, 1), header.orientation)
    return (oriented if oriented.ndim == 2 else oriented.permute(1, 2, 0)).numpy(), header.mode


def read_mask(path: str | Path, *, limit: int | None = None) -> Tensor:
    """Decode a class-index mask to ``int64 [H,W]`` without any float step (module docstring).

    A colour (RGB/RGBA) or grey+alpha mask is rejected: its colours would have to be mapped to class indices first.
    """
    path = Path(path)
    array, mode = mask_pixels(path, limit=limit)
    if array.ndim == 3:
        kind = {"LA": "grey+alpha", "PA": "palette+alpha", "RGB": "RGB", "RGBA": "RGBA"}.get(mode, mode)
        raise SegbenchError(
            f"{path}: mask is a {kind} image but class indices are expected; save it as a single-channel "
            "(mode 'L') or palette PNG whose pixel values are the class indices (map each colour to its index)"
        )
    if array.dtype.kind == "f":
        raise SegbenchError(f"{path}: mask holds floating-point values; save integer class indices (PNG)")
    return torch.from_numpy(array.astype(np.int64))


# ================================================================ checks


def check_same_size(image: Tensor, mask: Tensor, *, image_path: Path, mask_path: Path) -> None:
    """Raise unless ``mask [H,W]`` has the spatial size of ``image [C,H,W]``."""
    if tuple(image.shape[-2:]) != tuple(mask.shape[-2:]):
        ih, iw = image.shape[-2:]
        mh, mw = mask.shape[-2:]
        raise SegbenchError(
            f"{mask_path}: mask is {mw}x{mh} (WxH) but its image {image_path.name} is {iw}x{ih}; "
            "resize the mask with nearest-neighbour interpolation or fix the pairing"
        )


def check_mask_values(mask: Tensor, *, path: Path, num_classes: int, ignore_index: int) -> None:
    """Raise unless every value of ``mask`` is in ``[0, num_classes)`` or equals ``ignore_index``.

    The common trap, a binary mask stored as {0, 255}, gets its own hint (``value_map {255: 1}``).
    """
    bad = ((mask < 0) | (mask >= num_classes)) & (mask != ignore_index)
    if not bool(bad.any()):
        return
    values = mask.unique()
    shown = ", ".join(str(v) for v in values[:12].tolist()) + (", ..." if len(values) > 12 else "")
    if set(values.tolist()) == {0, 255}:
        fix = "the mask is binary {0, 255}: pass value_map {255: 1} (255 = foreground) to map it to classes {0, 1}"
    else:
        fix = f"remap the values to 0..{num_classes - 1} (value_map) or raise num_classes"
    if path.suffix.lower() in {".jpg", ".jpeg"}:
        fix += "; JPEG is lossy, save masks as PNG"
    raise SegbenchError(
        f"{path}: mask values {{{shown}}} fall outside 0..{num_classes - 1} and are not the ignore value "
        f"{ignore_index}; {fix}"
    )
