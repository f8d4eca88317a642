"""The label-format conversions of ``segbench data convert``: kind -> what it converts. Torch-free, so the
command line lists them (``--help``, a misspelt kind) without loading the converters; ``convert.py`` implements
exactly these kinds (a test checks both ways)."""

from __future__ import annotations

CONVERSIONS: dict[str, str] = {
    "voc-palette-to-index": "VOC palette PNG -> grey class-index PNG (pixel values unchanged)",
    "index-to-voc-palette": "grey class-index PNG -> VOC palette PNG",
    "cityscapes-trainids": "Cityscapes *_labelIds.png -> *_labelTrainIds.png (19 train ids, 255 ignore)",
    "cityscapes-labelids": "Cityscapes *_labelTrainIds.png -> *_labelIds.png",
    "coco-to-png": "COCO instance JSON -> instances/ + labels/ PNGs (the instance_png layout)",
    "png-to-coco": "instances/ + labels/ PNGs -> COCO JSON with RLE masks",
    "via-to-coco": "VGG Image Annotator JSON -> COCO polygons (one category)",
}
