"""augkd.config: YAML + overrides into dataclasses, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from augkd.config import ConfigError, build_config, config_to_dict, field_docs, load_config
from augkd.train.config import OptimConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]


def test_defaults_and_overrides_typed():
    overrides = ["optim.lr=0.2", "epochs=3", "model.kwargs.width=32", "optim.milestones=[1,2]"]
    cfg = load_config(TrainConfig, None, overrides)
    assert cfg.optim.lr == 0.2 and isinstance(cfg.optim.lr, float)
    assert cfg.epochs == 3
    assert cfg.model.kwargs == {"width": 32}
    assert cfg.optim.milestones == [1.0, 2.0]


def test_yaml_then_override_wins(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 5\noptim:\n  lr: 0.3\n")
    cfg = load_config(TrainConfig, path, ["optim.lr=0.05"])
    assert cfg.epochs == 5 and cfg.optim.lr == 0.05


def test_round_trip_through_dict():
    cfg = load_config(TrainConfig, None, ["data.subset_per_class=7", "augment.policy=ra-n2-m9"])
    again = build_config(TrainConfig, config_to_dict(cfg))
    assert again == cfg


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        (["optim.lrr=1"], "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
        (["optimm.lr=1"], "unknown config key 'optimm'"),
        (["optim.lr=abc"], "optim.lr: expected a number, got 'abc'"),
        (["epochs=2.5"], "epochs: expected an integer"),
        (["optim.nesterov=maybe"], "optim.nesterov: expected true or false"),
        (["data.dataset=imagenet"], "data.dataset must be one of cifar10, cifar100, folder"),
        (["optim.schedule=linear"], "optim.schedule must be one of"),
        (["epochs=0"], "epochs must be >= 1"),
        (["optim=3"], "optim: is a section"),
        (["epochs"], "not of the form key=value"),
        (["epochs.x=1"], "epochs: is a value, not a section"),
        (["amp=fp8"], "amp must be one of auto, off, bf16, fp16"),
    ],
)
def test_bad_keys_and_values_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as exc:
        load_config(TrainConfig, None, override)
    assert fragment in str(exc.value)
    assert "\n" not in str(exc.value)


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(TrainConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(TrainConfig, bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(TrainConfig, listy)
    typo = tmp_path / "typo.yaml"
    typo.write_text("optim:\n  weight_decai: 0.1\n")
    with pytest.raises(ConfigError, match="did you mean 'optim.weight_decay'"):
        load_config(TrainConfig, typo)


def test_every_field_is_documented():
    import dataclasses

    from augkd.data.config import DataConfig
    from augkd.train.config import AugmentConfig, CheckpointConfig, EmaConfig, KdConfig, ModelConfig

    for cls in (
        TrainConfig,
        ModelConfig,
        DataConfig,
        AugmentConfig,
        OptimConfig,
        EmaConfig,
        KdConfig,
        CheckpointConfig,
    ):
        docs = field_docs(cls)
        sections = {"model", "data", "augment", "optim", "ema", "kd"}
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in docs and f.name not in sections]
        assert not missing, f"{cls.__name__} fields without a docstring: {missing}"


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path, load_cfg):
    cfg = load_cfg(path)
    assert cfg.name == path.stem


def test_yaml_words_like_off_stay_strings(tmp_path):
    # YAML 1.1 reads off/on/yes/no as booleans; augkd's configs use YAML 1.2 booleans (true/false only).
    path = tmp_path / "c.yaml"
    path.write_text("amp: off\nchannels_last: false\n")
    cfg = load_config(TrainConfig, path, ["ema.enabled=true"])
    assert cfg.amp == "off" and cfg.channels_last is False and cfg.ema.enabled is True
    assert load_config(TrainConfig, None, ["amp=off"]).amp == "off"


def test_exponents_without_a_dot_are_numbers(tmp_path):
    # YAML 1.1 reads 1e-5 as a string; the EfficientNet recipe writes weight decay and epsilon that way.
    path = tmp_path / "c.yaml"
    path.write_text("optim: {weight_decay: 1e-5, eps: 1.0e-3}\n")
    cfg = load_config(TrainConfig, path, ["optim.lr=2.56E-1", "model.kwargs.x=1e5x"])
    assert (cfg.optim.weight_decay, cfg.optim.eps, cfg.optim.lr) == (1e-5, 1e-3, 0.256)
    assert cfg.model.kwargs == {"x": "1e5x"}


def test_kd_lambda_key_and_presets():
    cfg = load_config(TrainConfig, None, ["kd.preset=cifar100", "kd.lambda=0.5"])
    assert (cfg.kd.k, cfg.kd.lambda_, cfg.kd.temperature) == (5, 0.5, 2.0)  # explicit lambda wins
    assert config_to_dict(cfg)["kd"]["lambda"] == 0.5 and "lambda_" not in config_to_dict(cfg)["kd"]
    assert build_config(TrainConfig, config_to_dict(cfg)) == cfg
    big = load_config(TrainConfig, None, ["kd.preset=imagenet-large"])
    assert (big.kd.k, big.kd.lambda_, big.kd.temperature) == (50, 2.0, 10.0)
    with pytest.raises(ConfigError, match="kd.lambda must be >= 0"):
        load_config(TrainConfig, None, ["kd.lambda=-1"])
    with pytest.raises(ConfigError, match="unknown config key 'kd.lamda' \\(did you mean 'kd.lambda'"):
        load_config(TrainConfig, None, ["kd.lamda=1"])


@pytest.mark.parametrize(
    "key",
    [
        "optim.lr",
        "optim.weight_decay",
        "optim.grad_clip",
        "kd.lambda",
        "kd.temperature",
        "ema.decay",
        "model.drop_rate",
    ],
)
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_are_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError) as exc:
        load_config(TrainConfig, None, [f"{key}={value}"])
    assert str(exc.value).startswith(f"{key}: expected a finite number")


def test_non_finite_numbers_are_refused_in_python_too():
    from augkd.train.config import KdConfig

    with pytest.raises(ValueError, match="optim.lr must be a finite number; got nan"):
        OptimConfig(lr=float("nan"))
    with pytest.raises(ValueError, match=r"optim.milestones must be a finite number; got \[1.0, inf\]"):
        OptimConfig(milestones=[1.0, float("inf")])
    with pytest.raises(ValueError, match="kd.lambda must be a finite number"):
        KdConfig(lambda_=float("inf"))


def test_negative_grad_clip_is_refused():
    with pytest.raises(ConfigError, match="optim.grad_clip must be >= 0"):
        load_config(TrainConfig, None, ["optim.grad_clip=-1"])


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("optim:\n  lr: 0.1\nepochs: 2\noptim:\n  momentum: 0.5\n", "duplicate key 'optim' on line 4"),
        ("optim:\n  lr: 0.1\n  lr: 0.2\n", "duplicate key 'lr' on line 3"),
        ("model: {name: fastnet9, name: wrn28_10}\n", "duplicate key 'name' on line 1"),
    ],
)
def test_duplicate_yaml_keys_are_refused(tmp_path, text, fragment):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(TrainConfig, path)
    assert str(exc.value) == f"{path}: {fragment} (each key may appear once per mapping)"


def test_duplicate_keys_in_an_override_value_are_refused():
    with pytest.raises(ConfigError, match="model.kwargs: duplicate key 'width'"):
        load_config(TrainConfig, None, ["model.kwargs={width: 8, width: 16}"])


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("optim:\n  <<: {lr: 0.3, momentum: 0.8}\n  lr: 0.2\n")
    cfg = load_config(TrainConfig, path)
    assert cfg.optim.lr == 0.2 and cfg.optim.momentum == 0.8


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["augment.mixup=0.8", "data.loader=stream"], "need data.loader=memory"),
        (["augment.cutmix=-1"], "augment.mixup and augment.cutmix must be >= 0"),
        (["augment.mix_prob=1.5"], r"augment.mix_prob and augment.mix_switch_prob must be in \[0, 1\]"),
        (["log.every_steps=0"], "log.every_steps must be >= 1"),
    ],
)
def test_mixing_and_log_settings_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, None, overrides)
