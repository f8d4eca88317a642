"""The family table (``segbench.models.families``): each row has its file and every model belongs to one row."""

from segbench.app import about
from segbench.app.catalog import family_of
from segbench.models import _FILES, FAMILIES, FAMILY_OF, MODELS
from segbench.viz import masks as viz


def test_every_family_file_has_a_row_and_every_row_a_file():
    assert set(_FILES) == set(FAMILIES)
    assert all(key == family.key and family.label and family.paper and family.colour.startswith("#")
               for key, family in FAMILIES.items())


def test_every_model_belongs_to_a_family_of_the_table():
    assert set(FAMILY_OF) == set(MODELS)
    assert set(FAMILY_OF.values()) == set(FAMILIES)
    assert all(family_of(name) == FAMILY_OF[name] for name in MODELS)
    assert family_of("unet_from_an_older_version") == "unet" and family_of("segformer") == "other"


def test_the_app_reads_the_table():
    text = about.families_lines()
    assert all(f.label in text and f.paper in text for f in FAMILIES.values())
    records = [{"dataset": "camvid", "family": "fcn", "model": "fcn8s", "metrics": {"miou": 0.5},
                "config": {"model": "fcn8s", "train_fraction": f}, "training": {"labelled_images": n}}
               for f, n in ((0.5, 100), (1.0, 200))]
    figure = viz.label_efficiency_figure(records, "camvid")
    assert figure.data and all(trace.line.color == FAMILIES["fcn"].colour for trace in figure.data)
