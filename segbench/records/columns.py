"""The metrics and measured columns, one entry each, and how each number is measured: the one table that the record
(``records.build``), its schema, the flat frame and CSV (``records.io``), the CLI tables, the app's board and record
details, and the Hub model cards read.

Adding a metric: compute it in ``metrics.ConfusionMatrix.summary`` (a fraction in [0, 1], NaN where undefined),
add a ``Column`` with ``score=True`` to ``COLUMNS`` and a hand-computed test. Records written before a metric existed
lack its key: readers show it blank (``-``), validation accepts it absent.

Plain data only (no torch, pandas or gradio): every layer may import it.
"""

from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------- how each number is measured
# Always segbench's own words: records store MACS_CONVENTION and the latency scopes, and readers show these
# constants, never a record's text (records from elsewhere could claim anything).

MACS_CONVENTION = "1 multiply-add = 1 MAC (torchvision/fvcore 'GFLOPS'); aux head not counted"
FORWARD_SCOPE = "model forward only, input already normalised on the device"
END_TO_END_SCOPE = "resize + normalise + forward + argmax/paste + copy back to host; decode excluded"
FOLDED = "; BatchNorm folded into the convolutions"  # the predict path's fast mode (models.fold), since 2026-12
CI_METHOD = "bootstrap over images, percentile"
CI_CONVENTION = f"{CI_METHOD}, 1,000 resamples"  # metrics.ConfusionMatrix.CI_RESAMPLES
BOUNDARY_CONVENTION = ("IoU of the pixels near each class's boundary (Boundary IoU, Cheng et al. 2021), "
                       "mean over classes")
AP_CONVENTION = "COCO AP@[.50:.95], 101 recall points"


@dataclass(frozen=True)
class Column:
    """One metric or measured column.

    ``key``: the flat frame / CSV column; for a score also its key in a record's ``metrics`` / ``test_metrics``.
    ``label``: short header ("mIoU"); ``name``: long name (model cards; default ``label``). ``unit``: "%" marks a
    fraction shown as a percentage, else the unit of the value ("ms", "M", "px"). ``fmt``: format spec of the raw
    value in text tables. ``better``: "higher", "lower" or "" (not an ordering). ``convention``: how it is
    measured (shown beside the number). ``scale``: raw value -> shown value for non-% units (params -> M).
    """

    key: str
    label: str
    name: str = ""
    unit: str = ""
    fmt: str = ".4f"
    better: str = "higher"
    convention: str = ""
    scale: float = 1.0
    score: bool = False  # a fraction in [0, 1] in a record's metrics dict: recorded, validated, averaged over seeds
    task: str = "semantic"  # "instance": only instance models have it (mask/box AP)
    card: str = ""  # Hub model-index metric type; "" = not on model cards
    board: bool = True  # a column of the app's board
    shown: bool = True  # shown on the board by default (else ticked in "Columns")
    cli: bool = False  # in ``segbench leaderboard`` (text and Markdown)
    details: bool = True  # in the app's record details

    @property
    def long_name(self) -> str:
        return self.name or self.label

    def header(self, split: str = "") -> str:
        """The app's header: 'mIoU % (val)' for a score on ``split``, 'Forward (ms)' for a unit."""
        if self.unit == "%":
            return f"{self.label} %" + (f" ({split})" if split else "")
        return f"{self.label} ({self.unit})" if self.unit else self.label


COLUMNS: tuple[Column, ...] = (
    # scores: fractions in [0, 1] on the row's split, in the order of the CSV (boards put HEADLINE first)
    Column("pixel_accuracy", "PA", name="pixel accuracy", unit="%", score=True, card="accuracy", cli=True,
           convention="correct pixels / labelled pixels"),
    Column("mean_pixel_accuracy", "mPA", name="mean pixel accuracy", unit="%", score=True, card="mean_accuracy",
           shown=False, cli=True, convention="mean over classes of TP / (TP + FN)"),
    Column("miou", "mIoU", unit="%", score=True, card="mean_iou", cli=True,
           convention="mean over classes of TP / (TP + FP + FN); classes absent from both sides left out"),
    Column("fwiou", "FWIoU", unit="%", score=True, card="frequency_weighted_iou", shown=False,
           convention="each class's IoU weighted by its ground-truth pixel frequency"),
    Column("mean_dice", "mean Dice", unit="%", score=True, card="dice", board=False, details=False,
           convention="mean over classes of 2TP / (2TP + FP + FN)"),
    Column("fw_dice", "FW Dice", name="frequency-weighted Dice", unit="%", score=True,
           card="frequency_weighted_dice", shown=False,
           convention="each class's Dice weighted by its ground-truth pixel frequency"),
    Column("mean_boundary_iou", "Boundary IoU", name="Boundary IoU (mean)", unit="%", score=True,
           card="boundary_iou", convention=BOUNDARY_CONVENTION),
    Column("mask_ap", "mask AP", unit="%", score=True, task="instance", card="mask_ap", cli=True,
           convention=AP_CONVENTION),
    Column("box_ap", "box AP", unit="%", score=True, task="instance", card="box_ap", board=False, details=False,
           convention=AP_CONVENTION),
    # efficiency: measured once per record, on its latency device
    Column("params", "Params", unit="M", fmt=".2f", scale=1e-6, better="lower", cli=True),
    Column("gmacs", "GMACs", fmt=".2f", better="lower", cli=True, convention=MACS_CONVENTION),
    Column("receptive_field", "RF", unit="px", fmt="", better="", shown=False),
    Column("forward_ms", "Forward", unit="ms", fmt=".1f", better="lower", cli=True, convention=FORWARD_SCOPE),
    Column("end_to_end_ms", "End-to-end", unit="ms", fmt=".1f", better="lower", cli=True,
           convention=END_TO_END_SCOPE),
)

BY_KEY: dict[str, Column] = {c.key: c for c in COLUMNS}
SCORES: tuple[Column, ...] = tuple(c for c in COLUMNS if c.score)
SCORE_KEYS: tuple[str, ...] = tuple(c.key for c in SCORES)
HEADLINE = "miou"  # the score boards rank by, with a bootstrap CI (``miou_ci``)


def column(key: str) -> Column:
    """The column ``key``; a wrong key lists the known ones."""
    try:
        return BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown column {key!r}; known: {', '.join(BY_KEY)}") from None


def text(value: object, col: Column) -> str:
    """``value`` as a text-table cell: '-' when unknown (None/NaN), else formatted with ``col.fmt``."""
    if value is None or value != value:
        return "-"
    return format(value, col.fmt) if col.fmt else str(value)
