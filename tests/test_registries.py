"""Every allowed value of a config key is written once: in its registry. The config accepts exactly the names."""

from __future__ import annotations

import importlib

import pytest

from augkd.config import ConfigError, load_config
from augkd.registry import Registry
from augkd.train.config import TrainConfig

#: config key -> (module whose name the config validates against, the registry's name there)
CHOICES = {
    "optim.name": ("augkd.train.config", "OPTIMIZERS"),
    "optim.schedule": ("augkd.train.config", "SCHEDULES"),
    "kd.mode": ("augkd.train.config", "KD_MODES"),
    "kd.weighting": ("augkd.train.config", "KD_WEIGHTINGS"),
    "data.dataset": ("augkd.data.build", "DATASET_KINDS"),
    "data.base_aug": ("augkd.data.config", "BASE_AUGMENTS"),
}
#: where each registry is defined (the config's name must be that very object)
HOMES = {
    "OPTIMIZERS": "augkd.train.optim",
    "SCHEDULES": "augkd.train.schedule",
    "KD_MODES": "augkd.distill.loss",
    "KD_WEIGHTINGS": "augkd.distill.task",
    "DATASET_KINDS": "augkd.data.build",
    "BASE_AUGMENTS": "augkd.augment.base",
}
#: settings some names need to be valid at all
NEEDS = {"onecycle": ["optim.warmup_epochs=1"]}


def _registry(key: str) -> Registry:
    module, name = CHOICES[key]
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_the_config_takes_its_choices_from_the_registry(key):
    registry = _registry(key)
    assert registry is getattr(importlib.import_module(HOMES[CHOICES[key][1]]), CHOICES[key][1])
    assert len(registry) >= 2
    for name in registry:
        cfg = load_config(TrainConfig, None, [f"{key}={name}", *NEEDS.get(name, [])])
        section, field = key.split(".")
        assert getattr(getattr(cfg, section), field) == name
    with pytest.raises(ConfigError, match=f"{key} must be one of {', '.join(registry)}; got 'nope'"):
        load_config(TrainConfig, None, [f"{key}=nope"])


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_a_registered_name_is_a_valid_config_value(key, monkeypatch):
    """Adding a row to the registry is all it takes for the config to accept the new name."""
    module, name = CHOICES[key]
    old = _registry(key)
    grown = Registry(old.what, {**old, "brand-new": next(iter(old.values()))})
    monkeypatch.setattr(importlib.import_module(module), name, grown)
    section, field = key.split(".")
    assert getattr(getattr(load_config(TrainConfig, None, [f"{key}=brand-new"]), section), field) == "brand-new"


def test_registry_basics():
    reg: Registry[int] = Registry("thing", {"a": 1})
    reg.register("b", 2)

    @reg.register("c")
    def three() -> int:
        return 3

    assert reg.names() == ("a", "b", "c") and reg["b"] == 2 and reg["c"] is three and "c" in reg
    reg.register("none", None)  # None is an entry, not "decorate"
    assert reg["none"] is None
    with pytest.raises(ValueError, match="thing 'a' is registered twice"):
        reg.register("a", 5)
    with pytest.raises(KeyError, match="unknown thing 'z'"):
        reg["z"]
    with pytest.raises(ValueError, match="key.x must be one of a, b, c, none; got 'z'"):
        reg.check("z", "key.x")
