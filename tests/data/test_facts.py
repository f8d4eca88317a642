"""The dataset table (``segbench.data.facts``): every dataset of the registry has its row, the doctor and the About
tab read it, and About lists every dataset."""

import pytest

from segbench.app import about
from segbench.data import DATASETS
from segbench.data.doctor import _splits
from segbench.data.facts import DATASET_FACTS, dataset_rank


def test_every_registered_dataset_has_its_facts():
    missing = sorted(set(DATASETS) - set(DATASET_FACTS))
    assert not missing, f"add a row for {missing} to segbench/data/facts.py DATASET_FACTS"
    assert not set(DATASET_FACTS) - set(DATASETS), "a row of DATASET_FACTS names no dataset of the registry"


@pytest.mark.parametrize("name", sorted(DATASET_FACTS))
def test_each_row_is_filled_in(name):
    facts = DATASET_FACTS[name]
    assert facts.name == name and facts.task and facts.protocol and facts.classes
    assert facts.splits and all(isinstance(s, str) and s for s in facts.splits)
    assert "|" not in facts.task + facts.protocol + facts.classes  # the About table is markdown


def test_doctor_checks_the_table_splits_unless_the_builder_lists_its_own():
    assert _splits("camvid", {}) == DATASET_FACTS["camvid"].splits
    assert _splits("voc", {}) == DATASET_FACTS["voc"].splits
    assert _splits("cityscapes", {"mode": "coarse"}) == ("train", "train_extra", "val")  # depends on the option


def test_about_lists_every_dataset_with_its_protocol():
    table = about.datasets_table([])
    rows = table.splitlines()[2:]
    assert len(rows) == len(DATASETS)
    for name, facts in DATASET_FACTS.items():
        assert any(facts.protocol in row and facts.task in row for row in rows), name
    assert "my_data" in about.datasets_table(["my_data"])  # a dataset only the records know still gets a row


def test_display_order_is_the_table_order():
    names = sorted(["voc", "synthetic", "unknown", "camvid", "ade20k"], key=dataset_rank)
    assert names == ["camvid", "synthetic", "ade20k", "voc", "unknown"]
