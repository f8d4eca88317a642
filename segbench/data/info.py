"""``DatasetInfo``: what a model, a metric, the app and a model card need to know about a dataset, in one place
(classes, palette, normalisation, ignore value, display name, licence)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """What a model, a metric and the app need to know about a dataset.

    ``mean``/``std`` are per channel on the 0..1 scale (``transforms.normalize``); ``palette`` has one RGB per class;
    ``background_index`` is the class that means "no object" when semantic masks become instances (None: every class
    is an object class, e.g. CamVid).
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    ignore_index: int = 255
    in_channels: int = 3
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    palette: tuple[tuple[int, int, int], ...] = ()
    background_index: int | None = 0
    license: str = ""  # the data's terms, printable (shown in the app, model cards, README)
    citation: str = ""
    display_name: str = ""  # how the app and cards name the dataset ("CamVid (street scenes)"); "" = name
    hub_license: str | None = None  # the Hub's licence id for model cards (cc-by-nc-4.0, mit, ...), None = no id

    @property
    def label(self) -> str:
        return self.display_name or self.name
