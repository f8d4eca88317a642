"""Reading images and masks, and the checks that turn bad input into one-line SegbenchErrors.

Images decode once with ``torchvision.io.decode_image`` to ``uint8 [C,H,W]`` (PIL for BMP/TIFF); masks decode with
PIL, values unchanged (palette PNGs give their indices), to ``int64 [H,W]``, never through float. Every error names
the file and the fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image

from ..errors import SegbenchError

# decode_image reads these; anything else PIL-readable goes through PIL.
_TORCHVISION_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp"}
IMAGE_SUFFIXES = _TORCHVISION_SUFFIXES | {".bmp", ".tif", ".tiff"}
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


# ================================================================ decoding


def _decode_error(path: Path, exc: Exception) -> SegbenchError:
    if isinstance(exc, FileNotFoundError):
        return SegbenchError(f"{path}: file not found (moved or deleted after the dataset was built?); restore it")
    # torchvision's messages start with a C++ source location; keep only the last, human part.
    reason = str(exc).strip().splitlines()[-1].rsplit(", ", 1)[-1] if str(exc).strip() else type(exc).__name__
    return SegbenchError(
        f"{path}: cannot decode the file, it is corrupt, truncated or not an image ({reason}); "
        "re-save it as PNG/JPEG or remove it"
    )


def _pil_array(path: Path) -> tuple[np.ndarray, str]:
    try:
        with Image.open(path) as img:
            img.load()
            return np.array(img), img.mode
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise _decode_error(path, exc) from None


def read_image(path: str | Path, *, channels: int = 3) -> Tensor:
    """Decode ``path`` to ``uint8 [channels,H,W]``; ``channels`` 1 reads grey, 3 reads RGB (colour is converted)."""
    path = Path(path)
    if channels not in (1, 3):
        raise SegbenchError(f"{path}: in_channels={channels} is not supported; use 1 (grey) or 3 (RGB)")
    if path.suffix.lower() in _TORCHVISION_SUFFIXES:
        try:
            data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
            mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
            return decode_image(data, mode=mode)
        except (RuntimeError, ValueError, OSError) as exc:
            raise _decode_error(path, exc) from None
    array, _ = _pil_array(path)
    with Image.fromarray(array) as img:  # bmp/tiff: convert the way decode_image would
        array = np.array(img.convert("L" if channels == 1 else "RGB"))
    tensor = torch.from_numpy(array)
    return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def read_mask(path: str | Path) -> Tensor:
    """Decode a class-index mask to ``int64 [H,W]`` without any float step.

    Read with PIL, which keeps stored values as they are: 8/16-bit single-channel masks, palette PNGs (their indices
    are the classes) and 1-bit masks (0/1; libpng would expand them to 0/255). A colour (RGB/RGBA) or grey+alpha
    mask is rejected: its colours would have to be mapped to class indices first.
    """
    path = Path(path)
    array, mode = _pil_array(path)
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
