import pytest
import torch
import yaml
from segbench.config.run import RunConfig, apply_overrides, load_config, load_suite, make_config

from segbench.errors import SegbenchError


def test_unknown_key_suggests_nearest(tiny_config):
    tiny_config["epoch"] = 3
    with pytest.raises(SegbenchError, match="unknown config key 'epoch'.*did you mean 'epochs'"):
        make_config(tiny_config)


def test_wrong_type_is_one_line(tiny_config):
    tiny_config["epochs"] = "ten"
    with pytest.raises(SegbenchError, match=r"epochs='ten' is invalid; valid: an integer"):
        make_config(tiny_config)


def test_unknown_model_and_option(tiny_config):
    with pytest.raises(SegbenchError, match="unknown model 'unett'"):
        make_config({**tiny_config, "model": "unett"})
    with pytest.raises(SegbenchError, match="has no option 'base_channel'.*base_channels"):
        make_config({**tiny_config, "model_args": {"base_channel": 8}})
    with pytest.raises(SegbenchError, match="dataset 'synthetic' has no option 'sise'"):
        make_config({**tiny_config, "dataset_args": {"sise": 8}})


def test_choices_checked(tiny_config):
    with pytest.raises(SegbenchError, match="optimizer='adam' is invalid; valid: one of adamw, sgd"):
        make_config({**tiny_config, "optimizer": "adam"})


def test_overrides_and_dotted_args(tiny_config):
    data = apply_overrides(tiny_config, ["epochs=3", "lr=0.01", "model_args.depth=3", "eval_size=[32, 48]"])
    cfg = make_config(data)
    assert cfg.epochs == 3 and cfg.lr == 0.01 and cfg.model_args == {"base_channels": 4, "depth": 3}
    assert cfg.eval_size == [32, 48]
    with pytest.raises(SegbenchError, match="unknown config key 'lrr'"):
        apply_overrides(tiny_config, ["lrr=1"])
    with pytest.raises(SegbenchError, match="must look like key=value"):
        apply_overrides(tiny_config, ["epochs"])


def test_run_id_ignores_cosmetic_fields(tiny_config):
    a = make_config(tiny_config)
    b = make_config({**tiny_config, "num_workers": 2, "device": "cpu"})
    c = make_config({**tiny_config, "lr": 0.5})
    assert a.run_id() == b.run_id() != c.run_id()
    assert len(a.run_id()) == 12


def test_recipe_note_is_checked_before_training_and_changes_no_id(tiny_config):
    """``recipe`` says how a recipe was chosen; it goes into the record (selection.recipe), so the record's text
    limit is enforced here, before any training, and it names no other weights."""
    from segbench.records import schema as record_schema

    plain = make_config(tiny_config)
    noted = make_config({**tiny_config, "recipe": "chosen on val:\n  one candidate"})
    assert noted.recipe == "chosen on val: one candidate" and noted.run_id() == plain.run_id()
    for bad in ("x" * (record_schema.MAX_TEXT + 1), "   ", "bell\x07", 3):
        with pytest.raises(SegbenchError, match="recipe=.* is invalid; valid: one line of at most 200 characters"):
            make_config({**tiny_config, "recipe": bad})


def test_yaml_files(tmp_path, tiny_config):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    assert load_config(path, ["epochs=2"]).epochs == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(SegbenchError, match="invalid YAML"):
        load_config(bad)
    with pytest.raises(SegbenchError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_suites(tmp_path, tiny_config):
    configs = load_suite("default")
    assert configs and all(isinstance(c, RunConfig) for c in configs)
    assert {c.dataset for c in configs} == {"synthetic"}
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"common": tiny_config, "runs": [{}, {"lr": 0.1}]}))
    runs = load_suite(str(suite), ["epochs=2"])
    assert [r.lr for r in runs] == [1e-3, 0.1] and all(r.epochs == 2 for r in runs)
    with pytest.raises(SegbenchError, match="unknown suite 'defualt'.*default"):
        load_suite("defualt")
    suite.write_text(yaml.safe_dump({"run": []}))
    with pytest.raises(SegbenchError, match="unknown suite key 'run'"):
        load_suite(str(suite))


@pytest.mark.parametrize("suite", sorted(p.stem for p in __import__("segbench.config.run", fromlist=["SUITES_DIR"]).SUITES_DIR.glob("*.yaml")))
def test_every_shipped_suite_validates(suite):
    configs = load_suite(suite)
    assert configs and len({c.run_id() for c in configs}) == len(configs)


def test_run_id_names_the_hardware_loader_and_name(tiny_config):
    """Records from different hardware, loaders or names never share an id (and so never overwrite each other)."""
    cpu = make_config({**tiny_config, "device": "cpu"})
    cuda = make_config({**tiny_config, "device": "cuda"})
    assert cpu.run_id() != cuda.run_id() and cpu.hardware_class() == "cpu" and cuda.hardware_class() == "cuda"
    assert make_config({**tiny_config, "device": "cuda:1"}).run_id() == cuda.run_id()
    auto = make_config(tiny_config)  # auto resolves to what it will be on this machine
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert auto.hardware_class() == expected
    assert auto.run_id() == make_config({**tiny_config, "device": expected}).run_id()
    # loader auto: device-resident on a GPU, the host loader on a CPU
    assert cuda.resolved_loader() == "device" and cpu.resolved_loader() == "host"
    assert make_config({**tiny_config, "device": "cpu", "loader": "host"}).run_id() == cpu.run_id()
    assert make_config({**tiny_config, "device": "cpu", "loader": "device"}).run_id() != cpu.run_id()
    assert make_config({**tiny_config, "device": "cuda", "model": "maskrcnn_small", "model_args": {}}).resolved_loader() == "host"
    named = make_config({**tiny_config, "device": "cpu", "name": "other"})
    assert named.run_id() != cpu.run_id()


def test_group_id_is_the_run_id_without_the_seed(tiny_config):
    a, b = make_config({**tiny_config, "seed": 0}), make_config({**tiny_config, "seed": 1})
    assert a.group_id() == b.group_id() and a.run_id() != b.run_id()
    assert make_config({**tiny_config, "lr": 0.5}).group_id() != a.group_id() and len(a.group_id()) == 12


@pytest.mark.parametrize("over, message", [
    ({"track": "time"}, "track=time needs max_train_seconds"),
    ({"track": "wall"}, "track='wall' is invalid; valid: one of steps, time"),
    ({"holdout_images": 2}, "need select_on=holdout"),
    ({"select_on": "holdout", "holdout_fraction": 1.5}, r"holdout_fraction=1.5 is invalid; valid: a finite number in \(0, 1\)"),
    ({"select_on": "best"}, "select_on='best' is invalid; valid: one of final, holdout"),
    ({"max_train_seconds": -1}, "max_train_seconds=-1 is invalid"),
])
def test_budget_and_selection_checked(tiny_config, over, message):
    with pytest.raises(SegbenchError, match=message):
        make_config({**tiny_config, **over})


@pytest.mark.parametrize("suite", sorted(p.stem for p in __import__("segbench.config.run", fromlist=["SUITES_DIR"]).SUITES_DIR.glob("*.yaml")))
def test_shipped_suites_fix_epochs_not_wall_time(suite):
    """Budgets are epochs; a wall-clock cap is only a safety stop (several times the expected training time)."""
    for cfg in load_suite(suite):
        assert cfg.track == "steps" and cfg.epochs <= 300, (suite, cfg.model, cfg.epochs)
        assert cfg.select_on == "final"
