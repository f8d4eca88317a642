"""Leaderboard rows that need more than one record: shared ranks (tie groups) and seed aggregation.

Both work on a leaderboard frame (``records.load_records`` columns plus ``_members``: the ids of the records a row
stands for, one id for a single run) and read per-image counts through a ``counts`` callable
(record id -> ``(intersection [N,K], union [N,K])`` int64 arrays, or None when the record has none).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ..records.columns import SCORE_KEYS

Counts = Callable[[str], "tuple[np.ndarray, np.ndarray] | None"]

# Columns averaged over the seeds of one configuration (every score of columns.COLUMNS, the test and val mIoU, the
# timings); the rest are the same for every seed (or describe the first seed's run: id, date, path).
SEED_MEAN_COLUMNS = (
    *SCORE_KEYS, "test_miou", "val_miou", "forward_ms", "end_to_end_ms", "latency_ms", "train_seconds",
)


def pooled_counts(members: tuple[str, ...], counts: Counts) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-image counts of a row: a single run's, or the sum over its seeds (the same images, so the paired test
    compares configurations); None if a member has none or the members were scored on different image sets."""
    arrays = [counts(m) for m in members]
    if not arrays or any(a is None for a in arrays) or len({a[0].shape for a in arrays}) > 1:
        return None
    return sum(a[0] for a in arrays), sum(a[1] for a in arrays)


def shared_ranks(frame: pd.DataFrame, counts: Counts, *, cache: dict | None = None) -> pd.Series:
    """int ranks aligned with ``frame``: within each (dataset, split), by mIoU best first; a row the paired bootstrap
    cannot separate from the row above (95% CI of the mIoU difference includes 0) shares its rank, and ties chain
    (``metrics.tie_groups``, competition style 1, 1, 3). Rows without per-image counts get their own rank.
    ``cache`` (optional) keeps each adjacent pair's verdict, so refiltering costs nothing for pairs seen before."""
    cache = {} if cache is None else cache
    ranks = pd.Series(np.zeros(len(frame), dtype=np.int64), index=frame.index)
    for _, group in frame.groupby(["dataset", "split"], sort=False):
        ordered = group.sort_values("miou", ascending=False, kind="stable")
        previous, rank = None, 0
        for position, (index, miou, members) in enumerate(zip(ordered.index, ordered["miou"], ordered["_members"])):
            row = (tuple(members), float(miou))
            rank = rank if previous is not None and _tied(previous, row, counts, cache) else position + 1
            ranks.loc[index] = rank
            previous = row
    return ranks


def _tied(above: tuple, below: tuple, counts: Counts, cache: dict) -> bool:
    """Whether ``metrics.tie_groups`` puts the row ``below`` in the rank of ``above`` (rows: (members, mIoU))."""
    key = (above[0], below[0])
    if key not in cache:
        from ..evaluation.metrics import tie_groups

        rows = []
        for members, miou in (above, below):
            pooled = pooled_counts(members, counts)
            rows.append({"miou": miou} if pooled is None else {"miou": miou, "intersection": pooled[0],
                                                                 "union": pooled[1]})
        cache[key] = tie_groups(rows) == [1, 1]
    return cache[key]


def seed_groups(frame: pd.DataFrame) -> pd.Series:
    """The key that joins seeds of one configuration: the record's ``group`` (the run id without the seed) on the
    same dataset, split and latency device; a record without a group stands alone."""
    group = frame["group"].where(frame["group"].notna(), frame["id"]).astype(str)
    device = frame["latency_device"].fillna("?").astype(str)
    return frame["dataset"].astype(str) + "|" + frame["split"].astype(str) + "|" + device + "|" + group


def aggregate_seeds(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: ``SEED_MEAN_COLUMNS`` averaged over its seeds, ``miou_std`` their sample standard
    deviation (NaN for one seed), ``seeds`` the count, ``capped`` if any seed was, ``_members`` every seed's record
    id. The row's other values (id, date, ...) are those of its best seed; the per-run CI is dropped (it describes
    one seed, not the configuration)."""
    if frame.empty:
        return frame.assign(seeds=pd.Series(dtype="int64"), miou_std=pd.Series(dtype="float64"))
    ordered = frame.assign(_key=seed_groups(frame)).sort_values("miou", ascending=False, kind="stable")
    groups = ordered.groupby("_key", sort=False)
    best = ordered.drop_duplicates("_key").set_index("_key")  # the first row of each key is its best seed
    columns = [c for c in SEED_MEAN_COLUMNS if c in ordered]
    means = ordered[columns].apply(pd.to_numeric, errors="coerce").groupby(ordered["_key"], sort=False).mean()
    best[columns] = means.loc[best.index, columns]
    best["miou_std"] = groups["miou"].std(ddof=1).loc[best.index]  # NaN for one seed
    best["seeds"] = groups.size().loc[best.index]
    best["capped"] = groups["capped"].any().loc[best.index]
    best["_members"] = groups["_members"].agg(lambda s: tuple(m for members in s for m in members)).loc[best.index]
    best["miou_ci_low"] = best["miou_ci_high"] = np.nan
    return best.reset_index(drop=True)
