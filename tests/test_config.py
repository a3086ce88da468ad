"""config: presets, profiles, the one place every choice and range is checked, and configs read back from disk."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from adadf_core.config import (config_differences, is_resolved, legacy_switch_values, make_config,
                               MACHINERY_FIELDS, PRESETS, PROFILE_SWITCHES, resolve_config, TrainConfig,
                               validate_config)


def test_a_preset_sets_its_values_and_an_override_wins():
    raf = make_config("raf")
    assert (raf.batch_size, raf.threshold, raf.epoch_threshold) == (64, 0.7, 3)
    sfew = make_config("sfew", threshold=0.9)
    assert sfew.batch_size == PRESETS["sfew"]["batch_size"] and sfew.threshold == 0.9
    with pytest.raises(ValueError, match="unknown dataset 'RAF'; expected one of .*raf"):
        make_config("RAF")


@pytest.mark.parametrize("profile", sorted(PROFILE_SWITCHES))
def test_resolving_fills_every_switch_from_the_profile_and_keeps_what_was_set(profile):
    cfg = make_config("raf", profile, attention_on="features" if profile == "official" else "logits")
    assert not is_resolved(cfg)
    resolved = resolve_config(cfg)
    assert is_resolved(resolved)
    for name, value in PROFILE_SWITCHES[profile].items():
        if name != "attention_on":
            assert getattr(resolved, name) == value, name
    assert resolved.attention_on == cfg.attention_on          # set explicitly: never replaced by the profile
    assert resolved.recipe == profile
    assert resolve_config(resolved) == resolved               # resolving twice changes nothing


@pytest.mark.parametrize("field, value, expected", [
    ("epochs", 0, "an integer >= 1"), ("lr", float("nan"), "a finite value > 0"),
    ("lambda_min", 1.2, "lambda_min <= lambda_max"), ("threshold", 1.5, r"\(0, 1\]"),
    ("noise_rate", 1.0, r"\[0, 1\)"), ("batch_size", True, "an integer >= 2"),
    ("method", "scnn", "expected one of"), ("recipe", "fancy", "expected one of"),
    ("slm_p", 1.0, r"\(0, 1\)"), ("max_train_samples", 0, "none or an integer >= 1"),
])
def test_a_value_outside_its_range_names_the_field_the_value_and_what_was_expected(field, value, expected):
    cfg = dataclasses.replace(resolve_config(make_config("synthfer")), **{field: value})
    with pytest.raises(ValueError, match=rf"^{field}={value!r}".replace("(", r"\(").replace(")", r"\)")
                       + rf".*{expected}"):
        validate_config(cfg)


def test_unknown_fields_are_refused_with_the_known_ones_listed():
    with pytest.raises(ValueError, match="unknown TrainConfig field.*lamda_min; expected some of:.*lambda_min"):
        TrainConfig.from_dict({"lamda_min": 0.1})


def test_a_config_round_trips_through_json(tmp_path):
    cfg = resolve_config(make_config("sfew", "paper", noise_rate=0.2, seed=3))
    (tmp_path / "config.json").write_text(json.dumps({"config": json.loads(cfg.to_json()), "environment": {}}))
    assert TrainConfig.load(tmp_path / "config.json") == cfg


def test_a_record_older_than_a_switch_reads_back_with_the_behaviour_it_had():
    old_sfew = {"dataset": "sfew", "profile": "official", "crop_batch_quirk": True, "cd_source": "eval_pass"}
    assert legacy_switch_values(old_sfew) == {"rr_low_group": "rest", "mining_subset": "redraw"}
    old_affectnet = {"dataset": "affectnet7", "profile": "official", "cd_source": "eval_pass"}
    assert legacy_switch_values(old_affectnet)["mining_subset"] == "same"
    assert legacy_switch_values({**old_sfew, "rr_low_group": "lowest", "mining_subset": "redraw"}) == {}
    record = {k: v for k, v in dataclasses.asdict(resolve_config(make_config("sfew"))).items()
              if k not in ("rr_low_group", "mining_subset")}
    assert TrainConfig.from_record(record).rr_low_group == "rest"      # what that run computed
    assert TrainConfig.from_record({**record, "rr_low_group": "lowest"}).rr_low_group == "lowest"


def test_differences_ignore_machinery_unless_asked():
    a = resolve_config(make_config("synthfer"))
    b = dataclasses.replace(a, device="cuda", num_threads=2, lr=0.01)
    assert config_differences(a, b) == ["lr: 0.001 != 0.01"]
    assert len(config_differences(a, b, ignore=())) == 3
    assert {"device", "num_threads", "progress"} <= set(MACHINERY_FIELDS)


def test_config_loads_without_torch():
    """`adadf train --help` reads config; it must not pull torch in at import time."""
    code = "import sys, adadf_core.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
