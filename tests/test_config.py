"""Configs: every shipped YAML validates; typos and wrong types are errors naming the key."""

from pathlib import Path

import pytest

from sfd.config import Config, ConfigError, load_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yml"))


def test_configs_are_shipped():
    names = {p.stem for p in CONFIGS}
    assert {
        "classic_rrdb_x4",
        "classic_swinir_x4",
        "lgan_rrdb_x4",
        "lgan_swinir_x4",
        "clipiqa_loss_rrdb_x4",
        "vit_b16_rrdb_x4",
        "quickstart",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_each_config_loads_and_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config) and cfg.name == path.stem


def test_classic_recipe_numbers_follow_the_supplement():
    cfg = load_config(Path(__file__).parents[1] / "configs" / "classic_rrdb_x4.yml")
    assert (cfg.loss.l1, cfg.loss.perceptual, cfg.loss.feat_d, cfg.loss.tg_d) == (0.01, 1.0, 0.01, 0.005)
    assert (cfg.data.patch_size, cfg.data.batch_size, cfg.tg_d.length, cfg.tg_d.n_pairs) == (128, 32, 32, 5)
    assert cfg.optim.lr_g == cfg.optim.lr_d == 1e-4 and cfg.generator.num_blocks == 23


def test_a_typo_names_the_key(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("loss:\n  l11: 0.01\n")
    with pytest.raises(ConfigError, match=r"loss\.l11.*did you mean 'loss\.l1'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="data.batchsize"):
        load_config(None, ["data.batchsize=3"])


def test_wrong_types_and_values_are_errors():
    with pytest.raises(ConfigError, match="data.batch_size"):
        load_config(None, ["data.batch_size=many"])
    with pytest.raises(ConfigError, match="loss.gan_type"):
        load_config(None, ["loss.gan_type=wgan"])
    with pytest.raises(ConfigError, match="multiple of 32"):
        load_config(None, ["data.patch_size=100"])
    with pytest.raises(ConfigError, match="one D family"):
        load_config(None, ["image_d.type=vgg"])


def test_set_overrides_nested_fields():
    cfg = load_config(None, ["optim.betas=[0.5, 0.9]", "tg_d.length=64", "data.train=[a, b]"])
    assert cfg.optim.betas == [0.5, 0.9] and cfg.tg_d.length == 64 and cfg.data.train == ["a", "b"]
