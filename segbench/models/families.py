"""The family table: one row per model family (its file under ``segbench/models/``), in display order.

Every place that lists the families reads this table: the model registry (``models.MODELS`` gathers each family
file's ``BUILDERS``), the app (the default picks one model per family in this order; a builder's family), the
label-efficiency chart's colours and the app's heading. A model's ``family`` attribute is its row's ``key``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """``key``: the family name records and models carry, also its file (``segbench/models/<key>.py``);
    ``label``: how people name it; ``paper``: where it comes from; ``colour``: its line in the app's charts."""

    key: str
    label: str
    paper: str
    colour: str


FAMILIES: dict[str, Family] = {f.key: f for f in (
    Family("unet", "U-Net", "Ronneberger, Fischer & Brox, MICCAI 2015", "#1f77b4"),
    Family("fcn", "FCN", "Long, Shelhamer & Darrell, CVPR 2015", "#ff7f0e"),
    Family("deeplab", "DeepLab", "Chen et al. 2015, 2017, 2017, 2018 (v1, v2, v3, v3+)", "#2ca02c"),
    Family("maskrcnn", "Mask R-CNN", "He, Gkioxari, Dollár & Girshick, ICCV 2017", "#d62728"),
)}
