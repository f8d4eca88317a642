"""`segbench models`: GMACs in the torchvision/fvcore convention, with and without the auxiliary head."""

from __future__ import annotations

import json

from segbench.cli import main
from segbench.evaluation.speed import MACS_CONVENTION


def test_fcn_resnet50_matches_torchvision_table(capsys):
    """torchvision lists fcn_resnet50 (21 classes, 520 x 520) at 152.7 "GFLOPS" with its aux head: MACs."""
    assert main(["models", "fcn_resnet50", "--size", "520", "--json", "-"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert round(row["gmacs"], 1) == 142.7 and round(row["gmacs_aux"], 1) == 152.7
    assert row["macs_convention"] == MACS_CONVENTION and row["macs_input"] == [3, 520, 520]
    assert round(row["params_aux"] / 1e6, 1) == 35.3 and row["params"] < row["params_aux"]  # torchvision: 35.3M
    assert "gflops" not in row


def test_table_names_gmacs_and_the_aux_column(capsys):
    assert main(["models", "unet_small", "--size", "64"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "GMACs@64" in header and "+aux" in header and "GFLOPs" not in header
