"""The structure losses' catalog, their registered functions, the study file's fields, the
search space and what a trial reads for each loss all agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kd_search.engine.hyperparameters import SPACE_NAME, default_hyperparameters
from kd_search.engine.losses import structure_objective
from kd_search.engine.losses.registry import STRUCTURE_TERMS, register_structure_loss
from kd_search.engine.losses.structure import pkd_loss
from kd_search.engine.spec import StructureWeights, parse_study
from kd_search.engine.step import plan_stages
from kd_search.engine.structure_catalog import STRUCTURE_LOSS_NEEDS, STRUCTURE_LOSSES
from kd_search.engine.trial import TrialSetup, teacher_layers

PAIRS = [(1, 2), (2, 4)]


def test_registry_study_fields_and_search_space_follow_the_catalog():
    assert tuple(STRUCTURE_TERMS) == STRUCTURE_LOSSES == tuple(StructureWeights.model_fields)
    assert StructureWeights().model_dump() == dict.fromkeys(STRUCTURE_LOSSES, 0.0)
    assert all(SPACE_NAME.match(f"weight_{name}") for name in STRUCTURE_LOSSES)
    assert not SPACE_NAME.match("weight_fsd") and not SPACE_NAME.match("weight_minilm")
    study = parse_study({"name": "s", "student": {"teacher_layers": [2]},
                         "search": {"space": {f"weight_{name}": {"low": 0.0, "high": 1.0} for name in STRUCTURE_LOSSES}}})
    assert {f"weight_{name}" for name in STRUCTURE_LOSSES} <= set(default_hyperparameters(study, 1))


def test_a_name_is_registered_once_and_only_from_the_catalog():
    with pytest.raises(ValueError, match="not a structure loss"):
        register_structure_loss("fsd_typo")
    with pytest.raises(ValueError, match="registered twice"):
        register_structure_loss("pkd")(lambda student, teacher, inputs: torch.zeros(()))
    assert STRUCTURE_TERMS["pkd"].__name__ == "_pkd"


def test_validating_a_study_does_not_import_torch():
    code = "import sys, kd_search.engine.spec; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).parents[2])
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("name", STRUCTURE_LOSSES)
@pytest.mark.parametrize("searched", [False, True])
def test_a_trial_reads_what_each_loss_needs(name, searched):
    distillation = {"gamma": 0.0} | ({} if searched else {"structure": {name: 1.0}})
    space = {f"weight_{name}": {"low": 0.0, "high": 1.0}} if searched else {}
    study = parse_study({"name": "s", "student": {"teacher_layers": [1, 2]}, "distillation": distillation,
                         "search": {"space": space}})
    setup = TrialSetup(study, data=None, tokenizer=None, teacher_path="", teacher_info={}, teacher_id="",
                       pairs=PAIRS, device=torch.device("cpu"), workdir=Path("."))
    needs = STRUCTURE_LOSS_NEEDS[name]
    last = (PAIRS[-1][1],) if needs.self_attention else ()
    layers = teacher_layers(setup)
    assert (layers.hidden, layers.scores, layers.values) == ((0, 2, 4), last, last)
    params = default_hyperparameters(study, len(PAIRS)) | {f"weight_{name}": 1.0}
    intermediate, prediction = plan_stages(study, params, PAIRS)
    assert intermediate.attention_scores == needs.self_attention and not prediction.attention_scores
    assert intermediate.value_layers == ([PAIRS[-1][0]] if needs.self_attention else [])
    assert prediction.value_layers == [] and not prediction.intermediate
    hidden = [torch.randn(2, 3, 4) for _ in range(len(PAIRS) + 1)]
    if needs.memory or needs.self_attention:  # the objective refuses to run without it
        with pytest.raises(ValueError, match="need"):
            structure_objective(hidden, hidden, torch.ones(2, 3), {name: 1.0})


def test_a_loss_on_every_mapped_layer_sees_every_mapped_layer():
    torch.manual_seed(0)
    student, teacher = [torch.randn(4, 3, 8) for _ in range(3)], [torch.randn(4, 3, 8) for _ in range(3)]
    assert STRUCTURE_LOSS_NEEDS["pkd"].layers == "mapped"
    expected = pkd_loss([h[:, 0] for h in student[1:]], [h[:, 0] for h in teacher[1:]])
    torch.testing.assert_close(structure_objective(student, teacher, torch.ones(4, 3), {"pkd": 1.0}), expected)
