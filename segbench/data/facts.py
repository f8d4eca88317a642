"""The dataset table: one row of facts per dataset in ``registry.DATASETS`` (task, default splits, the evaluation
protocol in words, the classes in words), in the order the app shows datasets. Torch-free, so the About tab, the
data doctor and the command line read it without loading a dataset.

What a model, a metric or a card needs (classes, palette, ignore value, display name, licence) is the dataset's
``DatasetInfo`` (``info.py``), read with ``registry.dataset_info``; the valid split names are each dataset file's
``SPLITS``. ``tests/data/test_facts.py`` fails when a dataset of the registry has no row here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetFacts:
    """One dataset's protocol. ``splits``: the labelled, disjoint splits a run trains and scores on (what
    ``segbench data check`` reads by default; a union split such as VOC's ``trainval`` is left out). ``task``,
    ``protocol`` and ``classes`` are the About tab's words (markdown)."""

    name: str
    task: str
    splits: tuple[str, ...]
    protocol: str  # train / evaluation split
    classes: str


# Display order (the app's dataset dropdowns, the About table, the leaderboard's dataset order; first = the default
# Compare domain): street scenes first, where the pretrained models are; the built-in synthetic data after the
# shipped ones (it exists so a fresh clone has models, not to be looked at); then the datasets you download or bring.
DATASET_FACTS: dict[str, DatasetFacts] = {f.name: f for f in (
    DatasetFacts("camvid", "11-class street scenes", ("train", "val"),
                 "`train` (367) / `val` (101) and `test` (233, the split published results use; the board's CamVid "
                 "column where a record has it)", "11 classes; *Unlabelled* is ignored"),
    DatasetFacts("balloon", "instances, one class", ("train", "val"), "`train` (61) / `val` (13), VIA polygons",
                 "background, balloon"),
    DatasetFacts("isbi2012", "binary semantic (EM)", ("train", "val"),
                 "slices 0-24 / slices 25-29 (`val`) of the 30 labelled slices",
                 "membrane (label 0), cell (label 255)"),
    DatasetFacts("synthetic", "semantic + instances", ("train", "val"),
                 "generated train set / generated `val` set (disjoint seeds)",
                 "background, disc, rectangle, triangle, line, blob"),
    DatasetFacts("ade20k", "150-class scene parsing", ("train", "val"),
                 "`train` (20,210) / `val` (2,000); test labels are not public",
                 "150 classes; stored 0 (*other*) is ignored"),
    DatasetFacts("cityscapes", "19-class urban street scenes", ("train", "val"),
                 "`train` (2,975) / `val` (500), `gtFine`; test labels are withheld",
                 "19 train ids; every other label id is ignored"),
    DatasetFacts("coco", "instances, your COCO-format JSON", ("train", "val"),
                 "`annotations/instances_<split>.json` with the images in `<split>/`",
                 "the JSON's categories, sorted by id"),
    DatasetFacts("folder", "semantic, your image/mask folders", ("train", "val"),
                 "`<split>/images` / `<split>/masks`, paired by file stem", "`num_classes` you pass"),
    DatasetFacts("instance_png", "instances, your instance-id PNGs", ("train", "val"),
                 "`<split>/images` / `<split>/instances` (and optional `<split>/labels`)",
                 "from `labels/`, else one class"),
    DatasetFacts("voc", "21-class objects (PASCAL VOC 2012)", ("train", "val"),
                 "`train` (1,464; 10,582 with SBD) / `val` (1,449); test labels are not public",
                 "20 object classes + background; object borders are ignored"),
)}


def dataset_facts(name: str) -> DatasetFacts | None:
    """The row of dataset ``name``; None for a name not in the table (a record of a dataset this code lacks)."""
    return DATASET_FACTS.get(name)


def dataset_rank(name: str) -> tuple[int, str]:
    """Sort key: the datasets in table order, then any other name alphabetically."""
    order = list(DATASET_FACTS)
    return (order.index(name) if name in DATASET_FACTS else len(order), name)
