import pytest
import yaml

from segbench.config import RunConfig, apply_overrides, load_config, load_suite, make_config
from segbench.errors import SegbenchError


def test_unknown_key_suggests_nearest(tiny_config):
    tiny_config["epoch"] = 3
    with pytest.raises(SegbenchError, match="unknown config key 'epoch'.*did you mean 'epochs'"):
        make_config(tiny_config)


def test_wrong_type_is_one_line(tiny_config):
    tiny_config["epochs"] = "ten"
    with pytest.raises(SegbenchError, match="epochs must be an integer"):
        make_config(tiny_config)


def test_unknown_model_and_option(tiny_config):
    with pytest.raises(SegbenchError, match="unknown model 'unett'"):
        make_config({**tiny_config, "model": "unett"})
    with pytest.raises(SegbenchError, match="has no option 'base_channel'.*base_channels"):
        make_config({**tiny_config, "model_args": {"base_channel": 8}})
    with pytest.raises(SegbenchError, match="dataset 'synthetic' has no option 'sise'"):
        make_config({**tiny_config, "dataset_args": {"sise": 8}})


def test_choices_checked(tiny_config):
    with pytest.raises(SegbenchError, match="optimizer='adam' is not one of"):
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


@pytest.mark.parametrize("suite", sorted(p.stem for p in __import__("segbench.config", fromlist=["SUITES_DIR"]).SUITES_DIR.glob("*.yaml")))
def test_every_shipped_suite_validates(suite):
    configs = load_suite(suite)
    assert configs and len({c.run_id() for c in configs}) == len(configs)
