"""Config: TOML files become frozen dataclasses; bad files and keys are refused by name."""

import pytest

from evolve.config import ConfigError, RunConfig, config_from_stored, config_to_dict, load_config_file, run_config_from_dict

GOOD = """
iterations = 12
seed = 3
[model]
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-secret"
temperature = 0.4
models = [{name = "big", weight = 1, price_prompt_per_mtok = 2.5}, "small"]
[archive]
islands = 3
[scorer]
workers = 1
timeout_s = 5
"""


def test_toml_file_to_config(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(GOOD)
    config = run_config_from_dict(load_config_file(path))
    assert config.iterations == 12 and config.seed == 3
    assert [m.name for m in config.model.models] == ["big", "small"]
    assert config.model.models[0].price_prompt_per_mtok == 2.5
    assert config.archive.islands == 3 and config.scorer.timeout_s == 5.0


def test_stored_settings_round_trip_without_the_key():
    config = run_config_from_dict({"iterations": 4, "model": {"api_key": "sk-secret", "name": "m"}})
    stored = config_to_dict(config)
    assert "sk-secret" not in repr(stored)
    restored = config_from_stored(stored)
    assert restored.iterations == 4 and restored.model.api_key is None
    assert "sk-secret" not in repr(config)


def test_cli_flags_lay_over_the_config_file(tmp_path):
    from evolve.cli.run_cmd import build_config

    path = tmp_path / "run.toml"
    path.write_text("iterations = 3\nseed = 5\n[archive]\nislands = 4\n")
    config = build_config("sft_scaling_law", path, (), {"archive.islands": 2, "iterations": 7})
    assert config.archive.islands == 2 and config.iterations == 7 and config.seed == 5


@pytest.mark.parametrize(
    "text, message",
    [
        ("iterations = [", "not valid TOML"),
        ("iteratoins = 3", "unknown setting\\(s\\) in \\[run\\]: iteratoins"),
        ("[scorer]\nworkers = 'two'", "scorer.workers must be a number"),
        ("[model]\nmodels = [{weight = 2}]", "model.models"),
    ],
)
def test_broken_config_is_refused(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        run_config_from_dict(load_config_file(path))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "none.toml")
