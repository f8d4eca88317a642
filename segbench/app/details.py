"""One record in words (the leaderboard's "Record details"): scores with their split and CI, how the checkpoint was
selected, efficiency with each number's convention and scope, training budget, hardware, weights, the command that
reproduces it. Also the number formats the leaderboard table shares."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ..errors import SegbenchError
from ..records.columns import END_TO_END_SCOPE, FOLDED, FORWARD_SCOPE, HEADLINE, MACS_CONVENTION, SCORES
from ..records.io import markdown_code, markdown_text

# How each number was measured, next to the number: columns.py's words, never a record's text (records from
# elsewhere could claim anything).
PRECISIONS = ("fp32", "bf16", "fp16")
esc, code = markdown_text, markdown_code
def missing(value: Any) -> bool:
    return value is None or value != value  # None or NaN


def pct(value: Any, digits: int = 2) -> str:
    return "-" if missing(value) else f"{100 * float(value):.{digits}f}%"


def num(value: Any, digits: int) -> str:
    return "-" if missing(value) else f"{float(value):,.{digits}f}"


def ci_text(low: Any, high: Any, *, digits: int = 1) -> str:
    """A 95% CI of a fraction as percentages, '[60.5, 64.1]'; '' when either end is unknown."""
    if missing(low) or missing(high):
        return ""
    return f"[{100 * float(low):.{digits}f}, {100 * float(high):.{digits}f}]"


def duration(seconds: Any) -> str:
    if missing(seconds):
        return "?"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def selection_text(selection: Any) -> str:
    """The rule that picked the reported checkpoint, in words, and how the recipe was chosen where recorded."""
    if not isinstance(selection, dict) or not selection.get("checkpoint"):
        return "not recorded"
    rule, epoch = esc(selection["checkpoint"]), selection.get("selected_epoch")
    at = f" (epoch {epoch})" if epoch is not None else ""
    recipe = f"; recipe: {esc(selection['recipe'])}" if isinstance(selection.get("recipe"), str) else ""
    if rule == "final":
        return f"final checkpoint{at}; no model selection{recipe}"
    if rule == "holdout":
        return (f"best mIoU on a holdout of {selection.get('holdout_images', '?')} training images (seed "
                f"{selection.get('holdout_seed', '?')}), never on the reported split{at}{recipe}")
    return f"{rule}{at}{recipe}"


def scores_line(metrics: dict[str, Any], split: str) -> str:
    """'mIoU **62.34%** [60.5, 64.1] (95% CI), PA ..., on val': the headline, then every other score of
    ``columns.COLUMNS`` shown in details that the record has."""
    ci = metrics.get("miou_ci") or [None, None]
    ci_part = f" {ci_text(*ci)} (95% CI)" if ci_text(*ci) else ""
    headline = next(c for c in SCORES if c.key == HEADLINE)
    text = f"{headline.label} **{pct(metrics.get(HEADLINE))}**{ci_part}"
    for column in SCORES:
        if column.details and column.key != HEADLINE and not missing(metrics.get(column.key)):
            text += f", {column.label} {pct(metrics[column.key])}"
            if column.task == "instance" and metrics.get("max_dets"):
                text += f" (max detections {metrics['max_dets']})"
    if metrics.get("score_threshold") is not None:
        text += f" (instances kept at score >= {metrics['score_threshold']})"
    return f"{text} — on {code(split)}"


def efficiency_lines(e: dict[str, Any]) -> list[str]:
    latency = e.get("latency") or {}
    forward = latency.get("forward_ms", latency.get("ms"))
    forward_std = latency.get("forward_ms_std", latency.get("ms_std"))
    aux = f" ({num(e['gmacs_aux'], 2)} with the aux head)" if not missing(e.get("gmacs_aux")) else ""
    precision = latency.get("precision") if latency.get("precision") in PRECISIONS else "fp32"
    where = (f"batch {latency.get('batch_size', 1)}, {latency.get('image_size')}, "
             f"{precision}, on {esc(latency.get('device', '?'))}")
    inputs = f"; inputs: {esc(latency['inputs'])}" if latency.get("inputs") else ""
    if not missing(latency.get("mean_detections")):
        inputs += f", {num(latency['mean_detections'], 1)} detections per image"
    return [
        f"- **Size**: {num(e.get('params'), 0)} parameters; **{num(e.get('gmacs'), 2)} GMACs**{aux} at "
        f"{e.get('macs_input', e.get('flops_input'))} ({MACS_CONVENTION}); receptive "
        f"field {e.get('receptive_field') or '-'} px, output stride {e.get('output_stride') or '-'}",
        f"- **Forward**: {num(forward, 1)} ± {num(forward_std, 1)} ms "
        f"({FORWARD_SCOPE}{FOLDED if latency.get('batchnorm_folded') else ''})",
        f"- **End-to-end**: {num(latency.get('end_to_end_ms'), 1)} ± {num(latency.get('end_to_end_ms_std'), 1)} ms "
        f"({END_TO_END_SCOPE})",
        f"- **Latency setting**: {where}{inputs}",
    ]


def training_line(t: dict[str, Any], record: dict[str, Any]) -> str:
    budget = t.get("budget") or {}
    planned = f" of {budget.get('epochs')} planned" if budget.get("epochs") is not None else ""
    steps = f", {t['steps']:,} optimizer steps" if isinstance(t.get("steps"), int) else ""
    track = " — **time-budget track** (the schedule follows wall time)" if t.get("track") == "time" else ""
    capped = (f" — **capped**: the {duration(t.get('max_train_seconds'))} safety stop ended it early"
              if t.get("capped") else "")
    speed = f", {num(t.get('images_per_s'), 1)} images/s" if t.get("images_per_s") is not None else ""
    return (f"- **Training**: {t.get('epochs', '?')} epochs{planned}{steps} in {duration(t.get('seconds'))} on "
            f"{esc(t.get('device', '?'))}{speed}; seed {record.get('seed')}{track}{capped}")


def record_details(record: dict[str, Any], *, seeds: list[dict[str, Any]] | None = None) -> str:
    """Markdown: scores (split, CI), selection rule, efficiency with conventions and scopes, training, hardware,
    versions, weights, the reproducing command and the config. ``seeds``: the records of the same configuration
    (other seeds), listed when there are several."""
    m, e, t, w = record["metrics"], record["efficiency"], record["training"], record["weights"]
    hw, versions = record.get("hardware") or {}, record.get("versions") or {}
    lines = [f"### {esc(record['model'])} ({esc(record['variant'])}) on {esc(record['dataset'])} / "
             f"{esc(record['split'])}", scores_line(m, record["split"])]
    test = record.get("test_metrics")
    if isinstance(test, dict) and test.get("miou") is not None:
        lines.append("- **Test**: " + scores_line(test, "test"))
    ci = m.get("ci") or {}
    if ci:
        lines.append(f"- **CI**: {esc(ci.get('method', 'bootstrap'))}, level {esc(ci.get('level', 0.95))}, "
                     f"{esc(ci.get('resamples', '?'))} resamples, seed {esc(ci.get('seed', '?'))}")
    lines.append(f"- **Selection**: {selection_text(record.get('selection'))}")
    lines += efficiency_lines(e)
    lines.append(training_line(t, record))
    lines += [
        f"- **Hardware**: class {code(record.get('hardware_class', '?'))}; {esc(hw.get('device', '?'))}; CPU "
        f"{esc(hw.get('cpu', '?'))} ({esc(hw.get('cpu_count', '?'))} threads"
        + (f", {esc(hw['cpu_capability'])} kernels" if hw.get("cpu_capability") else "") + ")"
        + (f"; {esc(hw['platform'])}" if hw.get("platform") else ""),
        "- **Versions**: " + ", ".join(f"{esc(k)} {esc(v)}" for k, v in versions.items())
        + f"; git commit {code(record.get('git_commit') or 'unknown')}; date {esc(record.get('date'))}",
        f"- **Weights**: {code(w.get('uri'))}  \n  sha256 {code(w.get('sha256'))}",
        f"- **Record file**: {code(record.get('_path', '?'))}",
    ]
    if seeds and len(seeds) > 1:
        scores = ", ".join(f"seed {r.get('seed')}: {pct(r['metrics'].get('miou'))} ({code(r['id'])})" for r in seeds)
        lines.append(f"- **Seeds of this configuration** (group {code(record.get('group'))}): {scores}")
    absent = m.get("absent") or []
    if absent:
        lines.append(f"- **Classes absent from the split** (left out of the means): {', '.join(map(esc, absent))}")
    config = json.dumps(record.get("config"), indent=2, sort_keys=True).replace("`", "'")  # cannot close the fence
    lines += ["", "**Reproduce**", "```bash", reproduce_command(record), "```",
              "<details><summary>Full config</summary>", "", "```json", config, "```", "</details>"]
    return "\n".join(lines)


def reproduce_command(record: dict[str, Any]) -> str:
    """Shell lines that retrain and re-score this record, rebuilt by segbench (a record's own ``command`` text is
    never shown): the record's config is read back through ``RunConfig`` (unknown keys and out-of-range values
    refused), its keys that differ from the defaults (plus model and dataset) are written as YAML, then
    ``segbench train``. A config that does not validate gets a comment saying so instead of a command."""
    import yaml

    from ..config.run import RunConfig, make_config

    raw = {k: v for k, v in (record.get("config") or {}).items() if k != "device"}
    try:
        cfg = make_config(raw, source="the record's config")
    except SegbenchError as exc:
        return f"# no command: {' '.join(str(exc).split())[:300]}".replace("`", "'")
    defaults, values = dataclasses.asdict(RunConfig()), dataclasses.asdict(cfg)
    config = {k: v for k, v in values.items()
              if k in ("model", "dataset") or (k in raw and k != "device" and defaults.get(k) != v)}
    name = f"{cfg.display_name()}-{cfg.dataset}.yaml"  # names obey the name rule (checked by RunConfig)
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=False).rstrip()
    if any(line.strip() == "EOF" for line in body.splitlines()) or "`" in body:
        return "# no command: the config holds text that cannot be written into a shell here-document"
    return f"cat > {name} <<'EOF'\n{body}\nEOF\npython -m segbench train {name}"
