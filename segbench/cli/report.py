"""``segbench leaderboard`` and the text tables every command prints (the records table, the README's Markdown
table, mean +- std over seeds, a suite's missing pairs)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..records.columns import BY_KEY, COLUMNS, HEADLINE, SCORES
from .args import int_in


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> None:
    """Plain aligned text table: columns = (key, header, format)."""
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        line = []
        for key, _, fmt in columns:
            value = row.get(key)
            line.append("-" if value is None or value != value else format(value, fmt) if fmt else str(value))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for j, r in enumerate(cells):
        print("  ".join(c.rjust(w) if j and i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def _table_columns() -> list[tuple[str, str, str]]:
    """(key, header, format) of the table's CLI columns (``columns.COLUMNS`` with ``cli``), the headline's 95% CI
    and val score after it."""
    out = []
    for c in COLUMNS:
        if c.cli:
            out.append((c.key, c.label if c.unit == "%" else c.header(), c.fmt))
        if c.cli and c.key == HEADLINE:
            out += [("miou_ci", "95% CI", ""), ("val_miou", "val mIoU", BY_KEY[HEADLINE].fmt)]
    return out


LEADERBOARD_COLUMNS = [
    ("model", "model", ""), ("dataset", "dataset", ""), ("split", "split", ""), ("hardware_class", "hw", ""),
    *_table_columns(), ("epochs", "epochs", ""), ("train_seconds", "train(s)", ".1f"), ("capped", "capped", ""),
]


def print_leaderboard(records: list[dict[str, Any]]) -> None:
    from ..records.io import board_order, flatten

    rows = []
    for r in records:
        row = flatten(r)
        row.update({c.key: row[c.key] * c.scale for c in COLUMNS if c.scale != 1 and row.get(c.key) is not None})
        row["miou_ci"] = _ci_text(row)
        row["capped"] = "yes" if row["capped"] else ""
        rows.append(row)
    rows.sort(key=board_order)
    print()
    print_table(rows, LEADERBOARD_COLUMNS)


def _ci_text(row: dict[str, Any], scale: float = 1.0, digits: int = 4, prefix: str = "") -> str | None:
    """"low-high" of the bootstrap 95% CI of mIoU (``prefix`` "val_": of val mIoU), or None when it has none."""
    low, high = row.get(prefix + "miou_ci_low"), row.get(prefix + "miou_ci_high")
    if low is None or high is None or low != low:
        return None
    return f"{scale * low:.{digits}f}-{scale * high:.{digits}f}"


def print_groups(records: list[dict[str, Any]]) -> None:
    """Mean +- std of mIoU over the seeds of each config (records sharing a group)."""
    from ..train.runner import group_summary

    print("\nmIoU over seeds (mean +- sample std):")
    for row in group_summary(records):
        print(f"  {row['model']} / {row['dataset']}: {row['miou_mean']:.4f} +- {row['miou_std']:.4f} "
              f"({row['runs']} seeds: {', '.join(map(str, row['seeds']))}; group {row['group']})")


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from ..records.io import load_records

    records, problems = load_records(args.leaderboard)
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if args.dataset:
        records = [r for r in records if r["dataset"] == args.dataset]
    status = None
    if args.suite:
        from ..config.run import load_suite
        from ..train.runner import expand_seeds, suite_status

        status = suite_status(expand_seeds(load_suite(args.suite, args.overrides), args.seeds), records)
        ids = {i for row in status for i in row["ids"]}
        records = [r for r in records if r["id"] in ids]
    if args.markdown:
        print(markdown_table(records))
    else:
        print_leaderboard(records)
    if status is not None:
        print_suite_status(args.suite, status)
    return 0


def print_suite_status(suite: str, status: list[dict[str, Any]]) -> None:
    """Which pairs of a suite have a record (and on which hardware class) and which are still missing."""
    missing = [row for row in status if not row["done"]]
    print(f"\nsuite {suite}: {len(status) - len(missing)} of {len(status)} pair(s) recorded, {len(missing)} missing")
    for row in missing:
        print(f"  missing: position {row['position']}: {row['model']} on {row['dataset']} (seed {row['seed']})")


def markdown_table(records: list[dict[str, Any]]) -> str:
    """The README's table: one row per record; per dataset the rows scored on test first, then best mIoU first.
    PA, mPA, mIoU and mask AP are on the row's split (``records.board_scores``), val mIoU beside them."""
    from ..records.io import board_order, flatten

    rows = sorted((flatten(r) | {"_r": r} for r in records), key=board_order)
    scores = [c for c in SCORES if c.cli]
    head = [f"{c.label} (95% CI) | val {c.label} (95% CI)" if c.key == HEADLINE else c.label for c in scores]
    lines = [f"| dataset | model | family | split | {' | '.join(head)} | params (M) "
             "| GMACs | forward (ms) | end-to-end (ms) | epochs | train (s) | device |",
             "|---|---|---|---|" + "---|" * (len(scores) + 1) + "---|---|---|---|---|---|---|"]
    pct = lambda v: "–" if v is None or v != v else f"{100 * v:.1f}"  # noqa: E731
    num = lambda v, d: "–" if v is None or v != v else f"{v:.{d}f}"  # noqa: E731
    for r in rows:
        lat = r["_r"]["efficiency"]["latency"]
        precision = lat.get("precision", "fp32") + (", BN folded" if lat.get("batchnorm_folded") else "")
        ci = _ci_text(r, scale=100, digits=1)
        val_ci = _ci_text(r, scale=100, digits=1, prefix="val_")
        capped = " (capped)" if r["capped"] else ""
        cells = [f"{pct(r[c.key])}{f' ({ci})' if ci else ''} | {pct(r['val_miou'])}{f' ({val_ci})' if val_ci else ''}"
                 if c.key == HEADLINE else pct(r[c.key]) for c in scores]
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['family']} | {r['split']} | {' | '.join(cells)} "
            f"| {r['params'] / 1e6:.2f} | {num(r['gmacs'], 1)} "
            f"| {num(r['forward_ms'], 1)} ({precision}) | {num(r['end_to_end_ms'], 1)} "
            f"| {r['epochs']}{capped} | {num(r['train_seconds'], 0)} | {r['train_device']} |"
        )
    return "\n".join(lines)


def register(sub: Any) -> None:
    """The ``leaderboard`` subcommand."""
    p = sub.add_parser("leaderboard", help="print the table of result records")
    p.add_argument("--leaderboard", default="leaderboard", help="records folder (default: leaderboard)")
    p.add_argument("--dataset", help="only this dataset")
    p.add_argument("--markdown", action="store_true", help="Markdown (as in the README)")
    p.add_argument("--suite", help="only this suite's records, and list its pairs that have none yet")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="with --suite: the overrides the suite ran with")
    p.add_argument("--seeds", type=int_in(1, 1000), default=1, metavar="N", help="with --suite: the --seeds it ran with")
    p.set_defaults(func=cmd_leaderboard)
