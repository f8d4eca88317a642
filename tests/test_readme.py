"""The README's first screen tells the truth: its CamVid rows are the records' numbers, and its best row is the
board's best test mIoU."""

from __future__ import annotations

import re
from pathlib import Path

from segbench.records.io import load_frame

REPO = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| `(?P<model>[\w.-]+)` \| (?P<family>\w+) \| \**(?P<test>[\d.]+)\** \((?P<low>[\d.]+)–(?P<high>[\d.]+)\)"
                 r"(?:, mask AP (?P<ap>[\d.]+))? \| (?P<val>[\d.]+) \| (?P<params>[\d.]+) \| (?P<gmacs>[\d.]+) \| "
                 r"(?P<minutes>[\d.]+) min \|$")


def first_screen_rows() -> list[dict[str, str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- camvid-top")[1].split("<!-- /camvid-top -->")[0]
    lines = [line for line in block.splitlines() if line.startswith("| `")]
    rows = [ROW.match(line) for line in lines]
    assert all(rows), [line for line, row in zip(lines, rows) if not row]
    return [row.groupdict() for row in rows]


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def test_first_screen_camvid_rows_are_the_records():
    frame, problems = load_frame(REPO / "leaderboard")
    assert problems == []
    camvid = frame[(frame.dataset == "camvid") & (frame.split == "test")].set_index("model")
    rows = first_screen_rows()
    assert len(rows) >= 4
    assert rows[0]["model"] == camvid.miou.idxmax(), "the first row is the board's best test mIoU"
    for row in rows:
        record = camvid.loc[row["model"]]
        assert row["family"] == record.family
        assert (row["test"], row["low"], row["high"]) == (pct(record.miou), pct(record.miou_ci_low),
                                                           pct(record.miou_ci_high)), row["model"]
        assert row["val"] == pct(record.val_miou), row["model"]
        assert row["params"] == f"{record.params / 1e6:.2f}" and row["gmacs"] == f"{record.gmacs:.1f}", row["model"]
        assert row["minutes"] == f"{record.train_seconds / 60:.1f}", row["model"]
        if row["ap"] is not None:
            assert row["ap"] == pct(record.mask_ap), row["model"]
