"""One record in words (the leaderboard's "Record details"): scores with their split and CI, how the checkpoint was
selected, efficiency with each number's convention and scope, training budget, hardware, weights, the command that
reproduces it. Also the number formats the leaderboard table shares."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

# How each number was measured, next to the number (record values win when a record states its own).
GMACS_CONVENTION = "multiply-adds / 1e9, torchvision/fvcore convention (1 MAC = 1 multiply-add); aux heads not counted"
FORWARD_SCOPE = "model forward only, input already normalised on the device"
END_TO_END_SCOPE = "resize + normalise + forward + argmax/paste + copy back to host; decode excluded"


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
    """The rule that picked the reported checkpoint, in words."""
    if not isinstance(selection, dict) or not selection.get("checkpoint"):
        return "not recorded"
    rule, epoch = selection["checkpoint"], selection.get("selected_epoch")
    at = f" (epoch {epoch})" if epoch is not None else ""
    if rule == "final":
        return f"final checkpoint{at}; no model selection"
    if rule == "holdout":
        return (f"best mIoU on a holdout of {selection.get('holdout_images', '?')} training images (seed "
                f"{selection.get('holdout_seed', '?')}), never on the reported split{at}")
    return f"{rule}{at}"


def scores_line(metrics: dict[str, Any], split: str) -> str:
    """'mIoU **62.34%** [60.5, 64.1] (95% CI), PA ..., on val'."""
    ci = metrics.get("miou_ci") or [None, None]
    ci_part = f" {ci_text(*ci)} (95% CI)" if ci_text(*ci) else ""
    text = (f"mIoU **{pct(metrics.get('miou'))}**{ci_part}, PA {pct(metrics.get('pixel_accuracy'))}, "
            f"mPA {pct(metrics.get('mean_pixel_accuracy'))}, FWIoU {pct(metrics.get('fwiou'))}")
    if not missing(metrics.get("mean_boundary_iou")):
        text += f", Boundary IoU {pct(metrics['mean_boundary_iou'])}"
    if metrics.get("mask_ap") is not None:
        text += f", mask AP {pct(metrics.get('mask_ap'))}"
        if metrics.get("max_dets"):
            text += f" (max detections {metrics['max_dets']})"
    if metrics.get("score_threshold") is not None:
        text += f" (instances kept at score >= {metrics['score_threshold']})"
    return f"{text} — on `{split}`"


def efficiency_lines(e: dict[str, Any]) -> list[str]:
    latency = e.get("latency") or {}
    forward = latency.get("forward_ms", latency.get("ms"))
    forward_std = latency.get("forward_ms_std", latency.get("ms_std"))
    aux = f" ({num(e['gmacs_aux'], 2)} with the aux head)" if not missing(e.get("gmacs_aux")) else ""
    where = (f"batch {latency.get('batch_size', 1)}, {latency.get('image_size')}, "
             f"{latency.get('precision') or 'fp32'}, on {latency.get('device', '?')}")
    inputs = f"; inputs: {latency['inputs']}" if latency.get("inputs") else ""
    if not missing(latency.get("mean_detections")):
        inputs += f", {num(latency['mean_detections'], 1)} detections per image"
    return [
        f"- **Size**: {num(e.get('params'), 0)} parameters; **{num(e.get('gmacs'), 2)} GMACs**{aux} at "
        f"{e.get('macs_input', e.get('flops_input'))} ({e.get('macs_convention') or GMACS_CONVENTION}); receptive "
        f"field {e.get('receptive_field') or '-'} px, output stride {e.get('output_stride') or '-'}",
        f"- **Forward**: {num(forward, 1)} ± {num(forward_std, 1)} ms ({latency.get('forward_scope') or FORWARD_SCOPE})",
        f"- **End-to-end**: {num(latency.get('end_to_end_ms'), 1)} ± {num(latency.get('end_to_end_ms_std'), 1)} ms "
        f"({latency.get('end_to_end_scope') or END_TO_END_SCOPE})",
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
            f"{t.get('device', '?')}{speed}; seed {record.get('seed')}{track}{capped}")


def record_details(record: dict[str, Any], *, seeds: list[dict[str, Any]] | None = None) -> str:
    """Markdown: scores (split, CI), selection rule, efficiency with conventions and scopes, training, hardware,
    versions, weights, the reproducing command and the config. ``seeds``: the records of the same configuration
    (other seeds), listed when there are several."""
    m, e, t, w = record["metrics"], record["efficiency"], record["training"], record["weights"]
    hw, versions = record.get("hardware") or {}, record.get("versions") or {}
    lines = [f"### {record['model']} ({record['variant']}) on {record['dataset']} / {record['split']}",
             scores_line(m, record["split"])]
    test = record.get("test_metrics")
    if isinstance(test, dict) and test.get("miou") is not None:
        lines.append("- **Test**: " + scores_line(test, "test"))
    ci = m.get("ci") or {}
    if ci:
        lines.append(f"- **CI**: {ci.get('method', 'bootstrap')}, level {ci.get('level', 0.95)}, "
                     f"{ci.get('resamples', '?')} resamples, seed {ci.get('seed', '?')}")
    lines.append(f"- **Selection**: {selection_text(record.get('selection'))}")
    lines += efficiency_lines(e)
    lines.append(training_line(t, record))
    lines += [
        f"- **Hardware**: class `{record.get('hardware_class', '?')}`; {hw.get('device', '?')}; CPU {hw.get('cpu', '?')} "
        f"({hw.get('cpu_count', '?')} threads)" + (f"; {hw['platform']}" if hw.get("platform") else ""),
        "- **Versions**: " + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; git commit `{record.get('git_commit') or 'unknown'}`; date {record.get('date')}",
        f"- **Weights**: `{w.get('uri')}`  \n  sha256 `{w.get('sha256')}`",
        f"- **Record file**: `{record.get('_path', '?')}`",
    ]
    if seeds and len(seeds) > 1:
        scores = ", ".join(f"seed {r.get('seed')}: {pct(r['metrics'].get('miou'))} (`{r['id']}`)" for r in seeds)
        lines.append(f"- **Seeds of this configuration** (group `{record.get('group')}`): {scores}")
    absent = m.get("absent") or []
    if absent:
        lines.append(f"- **Classes absent from the split** (left out of the means): {', '.join(map(str, absent))}")
    lines += ["", "**Reproduce**", "```bash", reproduce_command(record), "```",
              "<details><summary>Full config</summary>", "", "```json",
              json.dumps(record.get("config"), indent=2, sort_keys=True), "```", "</details>"]
    return "\n".join(lines)


def reproduce_command(record: dict[str, Any]) -> str:
    """Shell lines that retrain and re-score this record: the record's own ``command`` when it has one, else the
    config keys that differ from the defaults (plus model and dataset) written as YAML, then ``segbench train``."""
    import yaml

    from ..config import RunConfig

    if isinstance(record.get("command"), str):
        return record["command"]
    defaults = dataclasses.asdict(RunConfig())
    config = {k: v for k, v in (record.get("config") or {}).items()
              if k in ("model", "dataset") or (k != "device" and (k not in defaults or defaults[k] != v))}
    name = f"{record['model']}-{record['dataset']}.yaml"
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=False).rstrip()
    return f"cat > {name} <<'EOF'\n{body}\nEOF\npython -m segbench train {name}"
