"""The recipe map's recipes: parsed from the command line, and every default one a valid
set of the demo study's hyperparameters (the map itself trains for about 10 minutes)."""

import importlib.util
from pathlib import Path

import pytest

from kd_search.engine.hyperparameters import with_overrides
from kd_search.study_file import load_study

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "recipe_map.py"
_spec = importlib.util.spec_from_file_location("recipe_map", _PATH)
recipe_map = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(recipe_map)


def test_a_recipe_is_its_name_and_its_overrides():
    assert recipe_map.parse_recipe("hot:temperature=4,alpha=0.1") == ("hot", {"temperature": "4", "alpha": "0.1"})
    assert recipe_map.parse_recipe("defaults:") == ("defaults", {})


def test_every_default_recipe_is_a_valid_demo_trial_and_the_names_are_distinct():
    study = load_study("demo")
    recipes = [recipe_map.parse_recipe(text) for text in recipe_map.RECIPES]
    assert len({name for name, _ in recipes}) == len(recipes)
    for name, overrides in recipes:
        params = with_overrides(study, 3, overrides)
        for key, value in overrides.items():
            assert params[key] == value if key == "prediction_loss" else float(params[key]) == float(value), name


def test_a_bad_recipe_is_a_one_line_usage_error_before_any_work(tmp_path, monkeypatch, capsys):
    for recipe, message in [("x:temperature", "--set 'temperature': expected name=value"),
                            ("x:temprature=2", "unknown hyperparameter 'temprature'")]:
        monkeypatch.setattr("sys.argv", ["recipe_map.py", "--workdir", str(tmp_path), "--recipe", recipe])
        with pytest.raises(SystemExit) as exit_info:
            recipe_map.main()
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no data read, no teacher fine-tuned
