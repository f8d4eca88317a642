"""The Leaderboard tab: the records (local ``leaderboard/`` plus the Hub when configured) as a filterable table with
shared ranks and CIs, its CSV, its charts; and the tab's event handlers.

The frame has ``records.load_records``/``records_frame`` columns (schema 2: ``gmacs``, ``forward_ms``,
``end_to_end_ms``, ``miou_ci_low``/``high``, ``hardware_class``, ``capped``, ``track``, ``group``, ...). A column an
older ``records`` module does not flatten is read from the record itself, or left blank.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import numpy as np
import pandas as pd

from ..records import columns as table
from ..records.columns import CI_CONVENTION, END_TO_END_SCOPE, FORWARD_SCOPE, HEADLINE, MACS_CONVENTION
from ..records.io import board_scores, csv_text, load_records, records_frame
from .config import AppConfig, dataset_rank, one_line
from .details import ci_text, code, missing, record_details
from .ranking import aggregate_seeds, shared_ranks

if TYPE_CHECKING:  # the handlers take the running app's state; state.py imports this module
    from .state import AppState

# Schema-2 flat columns -> how to read one from a record when the frame lacks it (records.io not yet flattening it).
SCHEMA2_COLUMNS = {
    "gmacs": lambda r: r["efficiency"].get("gmacs"),
    "forward_ms": lambda r: (r["efficiency"].get("latency") or {}).get("forward_ms"),
    "end_to_end_ms": lambda r: (r["efficiency"].get("latency") or {}).get("end_to_end_ms"),
    "miou_ci_low": lambda r: (r["metrics"].get("miou_ci") or [None, None])[0],
    "miou_ci_high": lambda r: (r["metrics"].get("miou_ci") or [None, None])[1],
    "hardware_class": lambda r: r.get("hardware_class"),
    "capped": lambda r: bool(r["training"].get("capped", False)),
    "track": lambda r: r["training"].get("track", "steps"),
    "selection": lambda r: (r.get("selection") or {}).get("checkpoint"),
    "group": lambda r: r.get("group"),
    "seed": lambda r: r.get("seed"),
    "test_miou": lambda r: (r.get("test_metrics") or {}).get("miou"),
}


@dataclass(frozen=True)
class Column:
    """One display column: ``key`` (the stable name the API and the CSV filter use), ``label`` ("{split}" becomes the
    board's reported split), the frame column it shows and how (``scale`` for numbers, else as is)."""

    key: str
    label: str
    source: str | None = None  # frame column; None: same as key
    scale: float | None = None
    digits: int = 2


def _board_column(c: table.Column) -> Column:
    """The board's display column of a ``columns.COLUMNS`` entry: a score as a percentage on the board's split."""
    if c.unit == "%":
        return Column(c.key, c.header("{split}"), scale=100)
    if not c.fmt:  # whole numbers
        return Column(c.key, c.header())
    return Column(c.key, c.header(), scale=c.scale, digits=int(c.fmt[1:-1]))


_ON_BOARD = [c for c in table.COLUMNS if c.board]
COLUMNS = [
    Column("rank", "Rank"), Column("model", "Model"), Column("family", "Family"), Column("variant", "Backbone"),
    Column("dataset", "Dataset"), Column("split", "Split"),
    _board_column(table.BY_KEY[HEADLINE]), Column("miou_ci", "mIoU 95% CI ({split})"),
    Column("seeds", "Seeds"), Column("miou_std", "mIoU s.d. over seeds", scale=100),
    Column("val_miou", "mIoU % (val)", scale=100),
    *(_board_column(c) for c in _ON_BOARD if c.key != HEADLINE),  # the other scores, then efficiency
    Column("hardware_class", "Hardware"), Column("latency_device", "Latency device"),
    Column("train_seconds", "Train (min)", scale=1 / 60, digits=1), Column("run", "Run"), Column("date", "Date"),
    Column("id", "id"),
]
KEYS = [c.key for c in COLUMNS]
CHOOSABLE = [k for k in KEYS if k != "id"]  # id always shows: it names the record for details
HIDDEN_BY_DEFAULT = ("seeds", "miou_std", *(c.key for c in _ON_BOARD if not c.shown), "train_seconds", "date")
DEFAULT_COLUMNS = [k for k in CHOOSABLE if k not in HIDDEN_BY_DEFAULT]
SEED_COLUMNS = ("seeds", "miou_std")  # shown whenever seeds are aggregated
_NUMERIC = {c.key for c in COLUMNS if c.scale is not None} | {"rank", "seeds", "receptive_field"}
_SORT_SOURCE = {"miou_ci": "miou_ci_low", "run": "capped"}  # text columns sorted by a number behind them

TABLE_NOTES = (
    "**How to read the table.** Scores are on the split in *Split*: **test** where the record has a test score (the "
    "split published results are on; scored once, when the record was written, never used to choose a recipe or a "
    "checkpoint), else the record's reported split (val). *mIoU % (val)*: the validation score beside it, the split "
    f"recipes and checkpoints are chosen on. *mIoU 95% CI*: {CI_CONVENTION}. "
    "*Rank*: within a dataset and split (test rows and val rows are ranked apart), by mIoU; a model the paired "
    "bootstrap over the same images cannot separate from the one above (95% CI of the difference includes 0) shares its rank; runs without per-image scores get "
    f"their own. *GMACs*: {MACS_CONVENTION}, at the evaluation size. *Forward (ms)*: {FORWARD_SCOPE}, batch 1. "
    f"*End-to-end (ms)*: {END_TO_END_SCOPE}, batch 1. *Hardware*: the class the run trained and was timed on; runs "
    "on different hardware are separate rows. Capped runs (a wall-clock safety stop ended training) and the "
    "time-budget track are hidden unless ticked; their *Run* column says which."
)


def ensure_columns(frame: pd.DataFrame, records: list[dict[str, Any]]) -> pd.DataFrame:
    """``frame`` with every SCHEMA2_COLUMNS column (read from the records where the frame lacks it) and
    ``_members`` (the record ids of each row: one per run)."""
    by_key = {(r["dataset"], r["id"]): r for r in records}
    frame = frame.copy()
    for column, read in SCHEMA2_COLUMNS.items():
        if column not in frame:
            frame[column] = [_safe(read, by_key.get(key)) for key in zip(frame["dataset"], frame["id"])]
    frame["capped"] = frame["capped"].fillna(False).astype(bool)
    frame["track"] = frame["track"].fillna("steps")
    frame["_members"] = [(i,) for i in frame["id"]]
    frame["seeds"], frame["miou_std"] = 1, np.nan
    return frame


def _safe(read, record: dict[str, Any] | None) -> Any:
    try:
        return None if record is None else read(record)
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class BoardFilter:
    """What the board's filter widgets ask for, in the order the app passes their values: datasets, families,
    hardware classes and latency devices (an empty list or None: no restriction), a search text, whether capped
    and time-budget runs show, and whether seeds of one configuration merge into one row."""

    datasets: list[str] | None = None
    families: list[str] | None = None
    hardware: list[str] | None = None
    devices: list[str] | None = None
    search: str = ""
    show_capped: bool = False
    by_seed: bool = False

    def __post_init__(self) -> None:  # widget values arrive as None for an empty box or an unticked checkbox
        object.__setattr__(self, "search", self.search or "")
        object.__setattr__(self, "show_capped", bool(self.show_capped))
        object.__setattr__(self, "by_seed", bool(self.by_seed))


FILTER_WIDGETS = len(fields(BoardFilter))  # the first values of each Leaderboard handler's Gradio inputs


def with_filter(handler, state: AppState):
    """``handler(state, BoardFilter, *rest)`` as Gradio calls it: with the filter widgets' values first, positionally,
    then the handler's own inputs (the HTTP API keeps one positional parameter per widget)."""
    return lambda *values: handler(state, BoardFilter(*values[:FILTER_WIDGETS]), *values[FILTER_WIDGETS:])


@dataclass
class Leaderboard:
    """All valid records, their frame, the skipped files, and caches for the shared ranks."""

    records: list[dict[str, Any]]
    frame: pd.DataFrame
    problems: list[str]
    _by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    _counts: dict[str, Any] = field(default_factory=dict)
    _ranks: dict[tuple, list[int]] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: list[dict[str, Any]], problems: list[str] | None = None) -> Leaderboard:
        frame = ensure_columns(records_frame(records), records)
        by_id: dict[str, dict[str, Any]] = {}
        for record in records:
            by_id.setdefault(record["id"], record)
        return cls(records, frame, list(problems or []), by_id)

    # ------------------------------------------------------------ lookups

    @property
    def split_label(self) -> str:
        """The reported split(s) named in score headers: 'val' (or 'val/test' when records differ)."""
        splits = sorted(set(self.frame["split"].dropna().astype(str))) if not self.frame.empty else []
        return "/".join(splits) or "val"

    def label(self, key: str) -> str:
        column = next(c for c in COLUMNS if c.key == key)
        return column.label.format(split=self.split_label)

    def column_choices(self) -> list[tuple[str, str]]:
        """(label, key) of every choosable column."""
        return [(self.label(k), k) for k in CHOOSABLE]

    def record(self, record_id: str) -> dict[str, Any] | None:
        return self._by_id.get(str(record_id).strip())

    def seeds_of(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """Records of the same configuration (same group, dataset and latency device), best mIoU first."""
        if not record.get("group"):
            return [record]
        device = (record["efficiency"].get("latency") or {}).get("device")
        same = [r for r in self.records if r.get("group") == record["group"] and r["dataset"] == record["dataset"]
                and (r["efficiency"].get("latency") or {}).get("device") == device]
        return sorted(same, key=lambda r: -(r["metrics"].get("miou") or 0.0))

    def choices(self, column: str) -> list[str]:
        values = self.frame[column].dropna().astype(str).unique().tolist() if not self.frame.empty else []
        return sorted(values, key=dataset_rank) if column == "dataset" else sorted(values)

    def counts(self, record_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-image (intersection, union) int64 [N,K] of a record on the split its row shows
        (``records.board_scores``: test where it has it), None without them."""
        if record_id not in self._counts:
            record = self.record(record_id)
            per_image = (board_scores(record)[1].get("per_image") or {}) if record else {}
            try:
                pair = (np.asarray(per_image["intersection"], dtype=np.int64),
                        np.asarray(per_image["union"], dtype=np.int64))
                self._counts[record_id] = pair if pair[0].ndim == 2 and pair[0].shape == pair[1].shape else None
            except (KeyError, TypeError, ValueError):
                self._counts[record_id] = None
        return self._counts[record_id]

    # ------------------------------------------------------------ views

    def view(self, *, hardware: list[str] | None = None, devices: list[str] | None = None, show_capped: bool = False,
             by_seed: bool = False) -> pd.DataFrame:
        """The comparable population: rows on the chosen hardware classes and latency devices (empty list: all),
        capped and time-budget runs only when ``show_capped``, seeds merged when ``by_seed``; with shared ranks."""
        frame = self.frame
        keep = np.ones(len(frame), dtype=bool)
        for column, wanted in (("hardware_class", hardware), ("latency_device", devices)):
            if wanted:
                keep &= frame[column].astype(str).isin(list(wanted)).to_numpy()
        if not show_capped:
            keep &= ~(frame["capped"].to_numpy() | (frame["track"] == "time").to_numpy())
        frame = frame[keep]
        if by_seed:
            frame = aggregate_seeds(frame)
        frame = frame.reset_index(drop=True)
        return frame.assign(rank=shared_ranks(frame, self.counts, cache=self._ranks))

    def rows(self, frame: pd.DataFrame, *, datasets: list[str] | None = None, families: list[str] | None = None,
             search: str = "") -> np.ndarray:
        """bool [N]: rows of ``frame`` matching every filter (an empty list means no restriction); ``search`` matches a
        case-insensitive substring of model, backbone, family, dataset or id."""
        keep = np.ones(len(frame), dtype=bool)
        for column, wanted in (("dataset", datasets), ("family", families)):
            if wanted:
                keep &= frame[column].isin(list(wanted)).to_numpy()
        if search and search.strip() and len(frame):
            text = (frame["model"].astype(str) + " " + frame["variant"].astype(str) + " " + frame["family"].astype(str)
                    + " " + frame["dataset"].astype(str) + " " + frame["id"].astype(str)).str.lower()
            keep &= text.str.contains(search.strip().lower(), regex=False).to_numpy()
        return keep

    def shown(self, where: BoardFilter = BoardFilter()) -> pd.DataFrame:
        """The frame rows the table shows (ranked within the comparable population before the narrowing filters)."""
        frame = self.view(hardware=where.hardware, devices=where.devices, show_capped=where.show_capped,
                          by_seed=where.by_seed)
        return frame[self.rows(frame, datasets=where.datasets, families=where.families, search=where.search)]

    def filter(self, where: BoardFilter = BoardFilter(), *, sort_by: str | None = None, descending: bool = True,
               columns: list[str] | None = None) -> pd.DataFrame:
        """The display table of ``shown(where)``, sorted by column key ``sort_by`` (missing values last; empty: dataset
        then rank), showing ``columns`` (keys; default DEFAULT_COLUMNS) plus ``id``, under their labels."""
        frame = self.shown(where)
        if sort_by in KEYS:
            source = _SORT_SOURCE.get(sort_by, next(c.source or c.key for c in COLUMNS if c.key == sort_by))
            numeric = sort_by in _NUMERIC or sort_by in _SORT_SOURCE
            key = (lambda s: pd.to_numeric(s, errors="coerce")) if numeric else (lambda s: s.astype(str).str.lower())
            frame = frame.sort_values(source, ascending=not descending, na_position="last", kind="stable", key=key)
        else:
            order = frame["dataset"].map(lambda d: dataset_rank(d)[0])
            frame = frame.assign(_order=order).sort_values(["_order", "dataset", "split", "rank", "miou"],
                                                           ascending=[True, True, True, True, False], kind="stable")
        wanted = set(DEFAULT_COLUMNS if columns is None else columns) | {"id"}
        wanted |= set(SEED_COLUMNS) if where.by_seed else set()
        return display_table(frame, [k for k in KEYS if k in wanted], self.label)


def run_kind(capped: Any, track: Any) -> str:
    """The *Run* column: why a row is hidden by default ('' for a normal fixed-budget run)."""
    parts = []
    if not missing(capped) and bool(capped):
        parts.append("capped (safety stop)")
    if track == "time":
        parts.append("time budget")
    return ", ".join(parts)


def display_table(frame: pd.DataFrame, keys: list[str], label) -> pd.DataFrame:
    """Frame rows -> the labelled, rounded display columns ``keys`` (same row order). ``label(key)`` names them."""
    out = {}
    for key in keys:
        column = next(c for c in COLUMNS if c.key == key)
        if key == "miou_ci":
            values = [ci_text(lo, hi) for lo, hi in zip(frame["miou_ci_low"], frame["miou_ci_high"])]
        elif key == "run":
            values = [run_kind(c, t) for c, t in zip(frame["capped"], frame["track"])]
        elif column.scale is not None:
            values = (pd.to_numeric(frame[column.source or key], errors="coerce") * column.scale).round(column.digits)
        elif key in ("receptive_field", "rank", "seeds"):
            # whole numbers, blank when unknown (a float column would show 412.0)
            values = [None if missing(v) else int(v) for v in frame[key]]
        elif key == "date":
            values = frame[key].astype(str).str.slice(0, 10)
        else:
            values = frame[column.source or key]
        out[label(key)] = list(values)
    return pd.DataFrame(out, columns=[label(k) for k in keys])


def load_leaderboard(cfg: AppConfig) -> Leaderboard:
    """Local records plus the Hub's (when ``cfg.hub_results`` is set). Never raises: unreadable files and an
    unreachable Hub become lines in ``problems``. A record present locally wins over the Hub's copy."""
    records, problems = load_records(cfg.leaderboard)
    if cfg.hub_results:
        try:
            from ..hub import load_hub_records

            hub_records, hub_problems = load_hub_records(cfg.hub_results)
            records, problems = records + hub_records, problems + hub_problems
        except Exception as exc:  # noqa: BLE001 - the Hub being down must not stop the app
            problems.append(f"Hub results {cfg.hub_results}: not loaded ({one_line(exc)}); showing local records")
    seen: set[tuple[str, str]] = set()
    unique = []
    for record in records:
        key = (record["dataset"], record["id"])
        if key not in seen:
            seen.add(key)
            unique.append(record)
    return Leaderboard.from_records(unique, problems)


def write_csv(table: pd.DataFrame, folder: str | Path) -> Path:
    """Write ``table`` as CSV in ``folder``; the name depends on the content, so the same view reuses one file."""
    text = csv_text(table)
    path = Path(folder) / f"segbench-leaderboard-{hashlib.sha1(text.encode()).hexdigest()[:10]}.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return path


def problems_markdown(problems: list[str]) -> str:
    """The visible notice for skipped records ('' when there are none)."""
    if not problems:
        return ""
    lines = "\n".join(f"- {code(p)}" for p in problems[:20])  # problem lines quote record text: a code span each
    more = f"\n- ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    return f"**{len(problems)} record file(s) skipped** (malformed or unreadable; fix or delete them):\n{lines}{more}"


def count_text(board: Leaderboard, shown: int, *, show_capped: bool, by_seed: bool) -> str:
    """'3 of 4 records' (+ how many capped/time-budget runs are hidden; rows, not records, when seeds merge)."""
    text = f"{shown} {'rows from' if by_seed else 'of'} {len(board.frame)} records"
    hidden = int((board.frame["capped"] | (board.frame["track"] == "time")).sum()) if len(board.frame) else 0
    if hidden and not show_capped:
        text += f" · {hidden} capped / time-budget run{'s' * (hidden > 1)} hidden"
    return text


# ================================================================ handlers (Leaderboard tab)


def on_filter(state: AppState, where: BoardFilter, sort_by, descending, columns) -> tuple[pd.DataFrame, str, str]:
    """Filters changed: (table, CSV path, 'n of m records')."""
    board = state.board
    table = board.filter(where, sort_by=sort_by or None, descending=bool(descending), columns=columns)
    count = count_text(board, len(table), show_capped=where.show_capped, by_seed=where.by_seed)
    return table, str(write_csv(table, state.workdir / "csv")), count


def on_charts(state: AppState, where: BoardFilter, latency, heat_dataset) -> tuple:
    """The three charts of the filtered rows: (mIoU vs latency, mIoU vs params, per-class heat map, heat-map
    dataset). ``latency``: 'end_to_end_ms' or 'forward_ms'. The heat map follows the filter when its dataset is
    filtered out."""
    from ..viz import masks as viz

    board = state.board
    frame = board.shown(where)
    shown = [d for d in board.choices("dataset") if d in set(frame["dataset"])]
    if heat_dataset not in shown and shown:
        heat_dataset = shown[0]
    ids = {m for members in frame["_members"] for m in members}
    scope = "end_to_end_ms" if latency != "forward_ms" else "forward_ms"
    title = {"end_to_end_ms": "end-to-end latency (ms)", "forward_ms": "forward latency (ms)"}[scope]
    return (
        viz.scatter_figure(frame, x=scope, x_title=title, title=f"mIoU (95% CI) vs {title.split(' (')[0]}, "
                           "Pareto front ringed", pareto=True),
        viz.scatter_figure(frame, x="params", x_title="parameters", title="mIoU (95% CI) vs parameters"),
        viz.class_iou_heatmap([r for r in board.records if r["id"] in ids], heat_dataset or ""),
        gr.update(value=heat_dataset),
    )


def on_details(state: AppState, record_id: str | None) -> tuple[str, Any]:
    """(details markdown, training-curve figure) of a record id."""
    from ..viz import masks as viz

    record = state.board.record(record_id or "")
    if record is None:
        return (f"No record with id `{record_id}`." if record_id else "Select a row to see its details."), None
    details = record_details(record, seeds=state.board.seeds_of(record))
    return details, viz.training_curve_figure(record["training"].get("history") or [])


def on_select(state: AppState, row: list | None) -> tuple:
    """A table row was clicked (its values, id last): (record id, details, curve)."""
    record_id = str(row[-1]) if row else ""
    return (record_id, *on_details(state, record_id))


def on_label_efficiency(state: AppState, where: BoardFilter, latency, heat_dataset):
    """The 'mIoU vs labelled images' chart (pretrained vs scratch per family) of the filtered records on the heat
    map's dataset (the first shown one when that is filtered out). Same inputs as :func:`on_charts`."""
    from ..viz import masks as viz

    board = state.board
    frame = board.shown(where)
    shown = [d for d in board.choices("dataset") if d in set(frame["dataset"])]
    dataset = heat_dataset if heat_dataset in shown or not shown else shown[0]
    ids = {m for members in frame["_members"] for m in members}
    return viz.label_efficiency_figure([r for r in board.records if r["id"] in ids], dataset or "")
