"""Result records: one JSON per (model, dataset) run, their schema, atomic writing and loading into pandas.

A record lives at ``leaderboard/records/<dataset>/<model>--<id>.json`` (see leaderboard/README.md). Metric values are
fractions in [0, 1]; a NaN (absent class) is stored as ``null``. Loading never raises on a bad file: it is
reported by name and skipped, so the app and the README table survive a malformed record.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ..files import atomic_write_text
from .columns import HEADLINE, SCORE_KEYS, SCORES
from .schema import SCHEMA_VERSION, RecordError, upgrade, validate_record

__all__ = ["SCHEMA_VERSION", "RecordError", "validate_record", "write_record", "read_record", "load_records",
           "records_frame", "load_frame", "flatten", "record_path", "previous_record", "reproduction_report",
           "csv_text", "markdown_text", "markdown_code", "board_scores", "board_order",
           "COLUMNS", "DEFAULT_ROOT"]

DEFAULT_ROOT = Path("leaderboard")

# Flat columns of the leaderboard table, in display order: every score of columns.COLUMNS (the headline's CI after
# it) on the row's split (``board_scores``). ``latency_ms`` is an alias of ``end_to_end_ms``;
# ``gflops`` is 2 x ``gmacs`` (the schema-1 column, kept for readers of it).
COLUMNS = [
    "model", "family", "variant", "dataset", "split",
    *(k for key in SCORE_KEYS for k in ((key, "miou_ci_low", "miou_ci_high") if key == HEADLINE else (key,))),
    "test_miou", "val_miou", "val_miou_ci_low", "val_miou_ci_high", "reported_split",
    "params", "gmacs", "gflops", "receptive_field", "output_stride", "forward_ms", "end_to_end_ms", "latency_ms",
    "latency_device", "hardware_class", "train_seconds", "train_device", "epochs", "capped", "track", "selection",
    "seed", "group", "date", "id", "path",
]


def _clean(value: Any) -> Any:
    """NaN/inf -> None recursively, so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def record_path(root: str | Path, record: dict[str, Any]) -> Path:
    return Path(root) / "records" / record["dataset"] / f"{record['model']}--{record['id']}.json"


def write_record(record: dict[str, Any], root: str | Path = DEFAULT_ROOT) -> Path:
    """Validate and write ``record`` atomically (temporary file, fsync, rename; the user's umask), a schema-1 record
    migrated first; returns its path. A full disk or an unwritable folder is one SegbenchError line."""
    record = upgrade(_clean(record))
    validate_record(record)
    path = record_path(root, record)
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=False) + "\n")
    return path


def iter_record_files(root: str | Path = DEFAULT_ROOT) -> list[Path]:
    base = Path(root) / "records"
    return sorted(base.glob("*/*.json")) if base.is_dir() else []


def read_record(path: str | Path) -> dict[str, Any]:
    """Read, migrate (schema 1) and validate one record; RecordError names the file and the problem."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"{path}: not readable JSON ({exc})") from None
    try:
        record = upgrade(record)
        validate_record(record)
    except RecordError as exc:
        raise RecordError(f"{path}: {exc}") from None
    return record


def load_records(sources: str | Path | Iterable[str | Path] = DEFAULT_ROOT) -> tuple[list[dict[str, Any]], list[str]]:
    """Load every valid record under the given leaderboard roots (or record files).

    Returns (records, problems): each problem is one line naming a skipped file.
    """
    if isinstance(sources, (str, Path)):
        sources = [sources]
    files: list[Path] = []
    for source in sources:
        source = Path(source)
        files.extend([source] if source.is_file() else iter_record_files(source))
    records, problems = [], []
    for path in files:
        try:
            record = read_record(path)
        except RecordError as exc:
            problems.append(str(exc))
            continue
        record["_path"] = str(path)
        records.append(record)
    return _without_conflicts(records, problems)


def _without_conflicts(records: list[dict[str, Any]], problems: list[str]) -> tuple[list[dict], list[str]]:
    """One record per id: copies of one record (a pulled record beside its local original) count once; two
    different records under one id are both left out with a problem line naming their files, never a silent pick."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_id.setdefault(record["id"], []).append(record)
    kept = []
    for rid, group in by_id.items():
        contents = {json.dumps({k: v for k, v in r.items() if k != "_path"}, sort_keys=True) for r in group}
        if len(contents) == 1:
            kept.append(group[0])
            continue
        problems.append(f"{', '.join(r['_path'] for r in group)}: {len(group)} different records share the id "
                        f"{rid}; none is shown until only one remains")
    return kept, problems


def previous_record(root: str | Path, record: dict[str, Any]) -> dict[str, Any] | None:
    """The valid record that ``write_record(record, root)`` would replace (same dataset, model and id), else None."""
    path = record_path(root, record)
    try:
        return read_record(path) if path.is_file() else None
    except RecordError:
        return None  # a broken file is replaced; there is nothing to compare with


# (metrics key, label): the numbers a reproduction is judged on (the CLI table's scores, headline first), on the
# reported split and on test
REPRODUCED = sorted(((c.key, c.label) for c in SCORES if c.cli), key=lambda kv: kv[0] != HEADLINE)


def reproduction_report(previous: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Lines comparing a freshly written record with the one it replaced (same id, so same config and seed): each
    headline metric old -> new on every scored split, whether the new mIoU lies inside the previous record's
    bootstrap 95% CI (the only metric with a CI), what differs in where they ran, and a verdict:
    "bit-identical", "reproduced" (every mIoU inside its CI) or "outside the committed CI"."""
    lines, inside, same = [], [], True
    for part, split in (("metrics", new.get("split", "val")), ("test_metrics", "test")):
        old, cur = previous.get(part) or {}, new.get(part) or {}
        for key, label in REPRODUCED:
            a, b = old.get(key), cur.get(key)
            if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
                continue
            same = same and a == b
            text = f"  {split} {label}: {a:.4f} -> {b:.4f} ({b - a:+.4f})"
            ci = old.get("miou_ci") if key == "miou" else None
            if ci and all(isinstance(c, (int, float)) for c in ci):
                inside.append(ci[0] <= b <= ci[1])
                text += f", {'inside' if inside[-1] else 'OUTSIDE'} the committed 95% CI {ci[0]:.4f}-{ci[1]:.4f}"
            lines.append(text)
    where = [f"{what} {previous.get(k1, {}).get(k2)} -> {new.get(k1, {}).get(k2)}"
             for what, k1, k2 in (("CPU/GPU", "hardware", "device"), ("threads", "hardware", "cpu_count"),
                                  ("CPU kernels", "hardware", "cpu_capability"), ("torch", "versions", "torch"))
             if previous.get(k1, {}).get(k2) != new.get(k1, {}).get(k2)]
    if previous.get("git_commit") != new.get("git_commit"):
        where.append(f"code {str(previous.get('git_commit'))[:8]} -> {str(new.get('git_commit'))[:8]}")
    verdict = ("bit-identical" if same else "reproduced" if inside and all(inside)
               else "outside the committed CI" if inside else "changed (no CI to compare with)")
    head = f"reproduction of the committed record ({previous.get('date', '?')[:10]}): {verdict}"
    return [head + (f" ({'; '.join(where)})" if where else "")] + lines


def board_scores(record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(split, metrics)`` a board row shows for ``record``: its ``test_metrics`` where it has them (the split
    published results are on, scored once when the record was written), else its reported split's ``metrics``.
    The table, its ranks, the charts and the README's table all read scores through this one rule."""
    test = record.get("test_metrics")
    return ("test", test) if isinstance(test, dict) else (record["split"], record["metrics"])


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One leaderboard row (the COLUMNS) from a record (a schema-1 record in memory is migrated first): scores on
    the split ``board_scores`` picks (``split``), the reported split's mIoU beside it (``val_miou`` when that is
    val, with its CI) and ``test_miou`` (None without a test score)."""
    record = upgrade(record) | {"_path": record.get("_path")}
    split, m = board_scores(record)
    e, t = record["efficiency"], record["training"]
    latency = e.get("latency") or {}
    ci = m.get("miou_ci") or [None, None]
    reported = record["metrics"]
    val = reported if record["split"] == "val" else {}
    val_ci = val.get("miou_ci") or [None, None]
    gmacs = e.get("gmacs")
    return {
        "model": record["model"], "family": record["family"], "variant": record["variant"],
        "dataset": record["dataset"], "split": split, "reported_split": record["split"],
        **{key: m.get(key) for key in SCORE_KEYS}, "miou_ci_low": ci[0], "miou_ci_high": ci[1],
        "test_miou": (record.get("test_metrics") or {}).get("miou"),
        "val_miou": val.get("miou"), "val_miou_ci_low": val_ci[0], "val_miou_ci_high": val_ci[1],
        "params": e.get("params"), "gmacs": gmacs, "gflops": None if gmacs is None else 2 * gmacs,
        "receptive_field": e.get("receptive_field"), "output_stride": e.get("output_stride"),
        "forward_ms": latency.get("forward_ms"), "end_to_end_ms": latency.get("end_to_end_ms"),
        "latency_ms": latency.get("end_to_end_ms"), "latency_device": latency.get("device"),
        "hardware_class": record["hardware_class"],
        "train_seconds": t.get("seconds"), "train_device": t.get("device"), "epochs": t.get("epochs"),
        "capped": t.get("capped"), "track": t.get("track"), "selection": record["selection"].get("checkpoint"),
        "seed": record["seed"], "group": record["group"], "date": record["date"], "id": record["id"],
        "path": record.get("_path"),
    }


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """A DataFrame with the COLUMNS above, one row per record; within each dataset the rows scored on test first,
    then best mIoU first."""
    return pd.DataFrame(sorted((flatten(r) for r in records), key=board_order), columns=COLUMNS)


def board_order(row: dict[str, Any]) -> tuple:
    """Sort key of a flattened row: per dataset, rows scored on test first (``board_scores``), then best mIoU."""
    miou = row.get("miou")
    return row["dataset"], row["split"] != "test", -(miou if miou is not None and miou == miou else -1.0)


_MARKDOWN = re.compile(r"([\\`*_\[\]|~])")  # emphasis, links and images, code, table cells, strike


def markdown_text(value: Any) -> str:
    """A record's string as literal Markdown text: HTML tags and entities and Markdown syntax (links, emphasis,
    headings, table pipes) are shown as typed, never rendered; newlines become spaces."""
    text = html.escape(" ".join(str(value).split()), quote=False)
    return _MARKDOWN.sub(r"\\\1", text)


def markdown_code(value: Any) -> str:
    """A record's string as a Markdown code span (a backtick in it cannot end the span early)."""
    return "`" + " ".join(str(value).split()).replace("`", "'") + "`"


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?%?|[-–]")


def csv_text(frame: pd.DataFrame) -> str:
    """``frame`` as CSV for a spreadsheet: a text cell that starts like a formula (=, +, -, @, tab, CR) gets a
    leading apostrophe, so a record's strings are shown, never evaluated (numbers and the '-' placeholder stay)."""
    def cell(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
            return "'" + value
        return value

    return frame.map(cell).to_csv(index=False, lineterminator="\n")


def load_frame(sources: str | Path | Iterable[str | Path] = DEFAULT_ROOT) -> tuple[pd.DataFrame, list[str]]:
    """Convenience: load_records + records_frame."""
    records, problems = load_records(sources)
    return records_frame(records), problems
