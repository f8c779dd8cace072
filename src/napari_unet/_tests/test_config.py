import json

import pytest

from napari_unet.config import Config, load_config
from napari_unet.errors import InputError


def test_defaults_are_the_papers():
    config = Config()
    assert (config.model.depth, config.model.base_channels, config.model.padding) == (5, 64,
                                                                                      "valid")
    assert (config.train.optimizer, config.train.momentum, config.train.batch_size) == (
        "sgd", 0.99, 1)
    assert config.train.tile == 388
    assert (config.weights.w0, config.weights.sigma) == (10.0, 5.0)
    assert config.augment.elastic_grid == 3 and config.augment.elastic_std == 10.0


def test_round_trip_through_dict():
    config = Config().replace(train={"val_slices": (1, 2), "lr": 0.5}, weights={"w0": 3.0})
    again = Config.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.train.val_slices == (1, 2)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"trian": {}}, r"unknown config section\(s\) \['trian'\]"),
        ({"train": {"epoch": 3}}, r"unknown train setting\(s\) \['epoch'\]"),
        ({"train": {"optimizer": "rmsprop"}}, "optimizer must be one of"),
        ({"train": {"lr": 0}}, "lr must be positive"),
        ({"train": {"batch_size": 0}}, "batch_size must be at least 1"),
        ({"model": {"padding": "full"}}, "padding must be one of"),
        ([1, 2], "a config is a mapping"),
    ],
)
def test_bad_configs(data, message):
    with pytest.raises(InputError, match=message):
        Config.from_dict(data)


def test_load_json_and_yaml(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"train": {"epochs": 7}}))
    (tmp_path / "c.yaml").write_text("model:\n  depth: 3\ntrain:\n  val_slices: [4, 9]\n")
    assert load_config(tmp_path / "c.json").train.epochs == 7
    config = load_config(tmp_path / "c.yaml")
    assert config.model.depth == 3 and config.train.val_slices == (4, 9)
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(InputError, match="not valid JSON/YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(InputError, match="no such config file"):
        load_config(tmp_path / "missing.json")


def test_parse_slices():
    from napari_unet.config import parse_slices

    assert parse_slices("5, 15;25") == (5, 15, 25)
    assert parse_slices(" None ") == ()  # no validation: train on every annotated slice
    assert parse_slices("  ") is None
    with pytest.raises(InputError, match=r"--val-slices: comma-separated slice numbers"):
        parse_slices("5,x", what="--val-slices")


def test_presets():
    from napari_unet.config import PRESET_HELP, PRESETS, config_for_preset, resolve_preset

    assert config_for_preset("paper") == Config()  # the paper is the dataclass defaults
    cpu = config_for_preset("cpu")
    assert (cpu.model.padding, cpu.model.base_channels, cpu.model.batch_norm) == ("same", 16, True)
    assert (cpu.train.optimizer, cpu.train.tile, cpu.train.batch_size) == ("adam", 192, 4)
    assert (cpu.weights.w0, cpu.weights.balance, cpu.weights.membrane_weight) == (0.0, False, 2.0)
    assert (cpu.train.threshold, cpu.train.close_gaps) == (0.6, 0.2)
    assert Config().train.threshold is None and Config().train.close_gaps is None
    with pytest.raises(InputError, match="threshold must be between 0 and 1"):
        cpu.replace(train={"threshold": 1.0})
    with pytest.raises(InputError, match="close_gaps must be between 0 and 1, got 0"):
        cpu.replace(train={"close_gaps": 0})
    assert resolve_preset("auto", "cpu") == resolve_preset("auto", "mps") == "cpu"
    assert resolve_preset("auto", "cuda:1") == "paper"
    assert config_for_preset("auto", device="cpu") == cpu
    assert set(PRESET_HELP) == {"auto", *PRESETS}
    with pytest.raises(InputError, match="unknown preset 'fast'"):
        resolve_preset("fast")


def test_config_file_over_a_preset(tmp_path):
    from napari_unet.config import config_for_preset

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"train": {"lr": 0.5}}))
    config = load_config(path, base=config_for_preset("cpu"))
    assert config.train.lr == 0.5 and config.model.padding == "same"
    assert load_config(path).model.padding == "valid"
    path.write_text(json.dumps({"train": {"speed": 1}}))
    with pytest.raises(InputError, match="unknown train setting"):
        load_config(path, base=config_for_preset("cpu"))
