"""Read back from the Hub: the results repo's records, one run's weights (sha256-checked against its record before
anything uses them), and ``pull`` into the local leaderboard and store. Everything goes through huggingface_hub's
cache, so a repo read once keeps working offline."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download

from ..errors import SegbenchError
from ..records import io as rec
from ..weights.store import CONFIG_FILE, WEIGHTS_FILE, LocalStore, install_dir, read_meta, sha256_file
from .http import short_error
from .names import RECORDS_GLOB, check_part, endpoint_url, hub_weights_uri, parse_hf_uri, validate_repo


def load_hub_records(
    results_repo: str, *, revision: str | None = None, endpoint: str | None = None, cache_dir: str | Path | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every valid record of the results repo, through huggingface_hub's cache (works offline once cached).

    Returns (records, problems) like records.load_records; raises SegbenchError when the repo cannot be read.
    """
    validate_repo(results_repo, "results repo id")
    try:
        folder = snapshot_download(results_repo, repo_type="dataset", revision=revision, allow_patterns=[RECORDS_GLOB],
                                   endpoint=endpoint_url(endpoint), cache_dir=cache_dir)
    except Exception as exc:
        raise SegbenchError(
            f"hf://datasets/{results_repo}: cannot read the results ({short_error(exc)}); "
            "check the repo id and the connection"
        ) from None
    return rec.load_records(Path(folder))


# ---------------------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------------------

_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, so the app hashes once


def _verified_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_file(path)
    return _VERIFIED[key]


def _discard(path: Path) -> None:
    """Remove a cached file and the blob its snapshot link points to, so the cache cannot serve it again."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    if blob != path:
        blob.unlink(missing_ok=True)


def fetch_weights(
    uri: str, expected_sha256: str, *, revision: str | None = None, endpoint: str | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Download ``model.safetensors`` + ``model.json`` of ``hf://<repo_id>[/subdir]`` into the HF cache and return
    their folder (for store.load_model). A file whose sha256 differs from ``expected_sha256`` is deleted from
    the cache and SegbenchError is raised: a corrupted or tampered download is never used."""
    repo_id, subdir = parse_hf_uri(uri)
    prefix = f"{subdir}/" if subdir else ""
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, endpoint=endpoint_url(endpoint),
                                        cache_dir=cache_dir,
                                        allow_patterns=[prefix + WEIGHTS_FILE, prefix + CONFIG_FILE])) / subdir
    except Exception as exc:
        raise SegbenchError(
            f"{uri}: cannot download the weights ({short_error(exc)}); check the connection and try again"
        ) from None
    weights = folder / WEIGHTS_FILE
    if not weights.is_file() or not (folder / CONFIG_FILE).is_file():
        raise SegbenchError(
            f"{uri}: {WEIGHTS_FILE} or {CONFIG_FILE} missing (not on the Hub, or not cached while offline); "
            "check the connection, else re-push the run"
        )
    actual = _verified_sha256(weights)
    if actual != expected_sha256:
        _discard(weights)
        raise SegbenchError(
            f"{uri}/{WEIGHTS_FILE}: downloaded sha256 {actual[:12]}… does not match the record's "
            f"{expected_sha256[:12]}…; "
            "the download was discarded: pull again, or re-push if the Hub copy is wrong"
        )
    read_meta(folder)  # the config is checked too (WeightsMeta): a bad one is refused before it is installed
    return folder


def _install_weights(folder: Path, target: Path, expected_sha256: str) -> None:
    """Copy verified weights into the store layout crash- and concurrency-safely (store.install_dir: a complete
    hidden folder, sha256 checked, swapped in under the run's lock; never deletes the old folder first)."""

    def copy(tmp: Path) -> None:
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            shutil.copyfile(folder / name, tmp / name)  # follows the cache's symlinks

    install_dir(target, copy, expected_sha256=expected_sha256)


# ---------------------------------------------------------------------------------------------------------------
# Pull
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RecordFilter:
    """The records of these datasets and these models; an empty set does not filter."""

    datasets: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()

    @classmethod
    def of(cls, datasets: Iterable[str] | None = None, models: Iterable[str] | None = None) -> RecordFilter:
        return cls(frozenset(datasets or ()), frozenset(models or ()))

    def matches(self, record: dict[str, Any]) -> bool:
        return ((not self.datasets or record["dataset"] in self.datasets)
                and (not self.models or record["model"] in self.models))


@dataclass
class PullReport:
    """The record files written, the weight folders installed, and one line per problem."""

    records: list[Path] = field(default_factory=list)
    weights: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def pull(
    *,
    results_repo: str,
    leaderboard: str | Path = rec.DEFAULT_ROOT,
    store: LocalStore | None = None,
    weights: bool = False,
    only: RecordFilter = RecordFilter(),
    revision: str | None = None,
    endpoint: str | None = None,
    log: Callable[[str], None] = print,
) -> PullReport:
    """Fetch the results repo's records into ``leaderboard`` and, with ``weights=True``, their weights into the
    local store (sha256 checked against each record; a mismatch is reported and nothing is written for it).

    A record whose weights are in the local store (pulled now or before, same sha256) points at ``local:...``;
    otherwise it keeps its ``hf://`` URI, which the app resolves through the HF cache. ``only``: which records
    (default all).
    """
    store = store or LocalStore()
    hub_records, problems = load_hub_records(results_repo, revision=revision, endpoint=endpoint)
    report = PullReport(problems=list(problems))
    for p in problems:
        log(f"skipped    {p}")
    for record in hub_records:
        if not only.matches(record):
            continue
        try:
            path = _pull_one(record, leaderboard=leaderboard, store=store, weights=weights, endpoint=endpoint,
                             report=report, log=log)
        except SegbenchError as exc:
            report.problems.append(str(exc))
            log(f"FAILED     {exc}")
            continue
        report.records.append(path)
    problems_note = f"; {len(report.problems)} problem(s)" if report.problems else ""
    log(f"pulled {len(report.records)} record(s) into {leaderboard}, "
        f"{len(report.weights)} weight folder(s) into {store.root}{problems_note}")
    return report


def _local_clash(record: dict[str, Any], existing: Path, target: Path) -> tuple[bool, str | None]:
    """(whether a local run with other weights holds this id, sha256 of the store's weights for it or None)."""
    sha = record["weights"]["sha256"]
    target_sha = sha256_file(target / WEIGHTS_FILE) if (target / WEIGHTS_FILE).is_file() else None
    clash = target_sha is not None and target_sha != sha
    if existing.is_file():
        try:
            old = rec.read_record(existing)
            clash = clash or (old["weights"]["sha256"] != sha and not old["weights"]["uri"].startswith("hf://"))
        except rec.RecordError:
            pass
    return clash, target_sha


def _pull_one(
    record: dict[str, Any], *, leaderboard: str | Path, store: LocalStore, weights: bool, endpoint: str | None,
    report: PullReport, log: Callable[[str], None],
) -> Path:
    """Write one Hub record locally (and its weights with ``weights=True``); never overwrites a local run that
    has other weights under the same id (SegbenchError instead)."""
    record = {k: v for k, v in record.items() if not k.startswith("_")}
    sha = record["weights"]["sha256"]
    for part, what in ((record["dataset"], "dataset"), (record["model"], "model"), (record["id"], "id")):
        check_part(part, what)
    existing = rec.record_path(leaderboard, record)
    target = store.run_dir(record["dataset"], record["model"], record["id"])
    clash, target_sha = _local_clash(record, existing, target)
    if clash:
        raise SegbenchError(
            f"{existing}: a local run with other weights has this id; kept it "
            "(pull into another --leaderboard and --store to compare)"
        )
    local = target_sha == sha and (target / CONFIG_FILE).is_file()
    if weights and not local:
        hub_uri = hub_weights_uri(record)
        if hub_uri is None:
            raise SegbenchError(
                f"{existing}: the record has no Hub weights URI; re-push it with 'python -m segbench push'"
            )
        try:
            _install_weights(fetch_weights(hub_uri, sha, endpoint=endpoint), target, sha)
            report.weights.append(target)
            log(f"weights    {target}")
            local = True
        except SegbenchError as exc:  # keep the scores; the weights stay on the Hub
            report.problems.append(str(exc))
            log(f"FAILED     {exc}")
    if local:
        uri = store.uri(record["dataset"], record["model"], record["id"])
        record["weights"] = {**record["weights"], "uri": uri, "config_uri": f"{uri}/{CONFIG_FILE}"}
    path = rec.write_record(record, leaderboard)
    log(f"record     {path}")
    return path
