"""The GPU suites of the new datasets: every family, the literature's iteration budgets turned into epochs (checked
here against the split sizes), and --data-root reaching every run (on the written fixtures)."""

import pytest

from dataset_layouts import make_ade20k, make_cityscapes, make_voc
from segbench.cli import build_parser
from segbench.config.run import load_suite
from segbench.train.data import split_builder

# suite -> (dataset, maker, train images of the real set, semantic iterations)
SUITES = {
    "gpu-voc": ("voc", make_voc, 10_582, 20_000),
    "gpu-cityscapes": ("cityscapes", make_cityscapes, 2_975, 80_000),
    "gpu-ade20k": ("ade20k", make_ade20k, 20_210, 80_000),
}


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_suite_schedules_and_data_root(tmp_path, suite):
    name, make, train_images, iterations = SUITES[suite]
    root = make(tmp_path / name)
    configs = load_suite(suite, [f"data_root={root}"])
    assert {c.model for c in configs} == {"fcn8s", "deeplabv3", "deeplabv3plus", "unet_same", "maskrcnn"}
    for cfg in configs:
        assert cfg.dataset == name and cfg.data_root == str(root) and cfg.select_on == "final"
        if cfg.model != "maskrcnn":  # the published schedule, to within one epoch
            steps = cfg.epochs * (train_images // cfg.batch_size)
            assert abs(steps - iterations) <= train_images // cfg.batch_size, (cfg.model, steps)
        assert len(split_builder(cfg)("val")) == 2
    args = build_parser().parse_args(["run", suite, "--data-root", str(root)])
    assert args.data_root == str(root)
