"""A study the models cannot run is refused from their config.json, before any work:
one line naming the field, exit 2, no teacher fine-tuned, no cache filled, no Ray."""

from __future__ import annotations

import time

import pytest
from tiny import tiny_study, write_study
from transformers import BertConfig

from kd_search.cli import main
from kd_search.engine.compatibility import check_models
from kd_search.engine.spec import parse_study


def _other_vocabulary(root):
    # Only config.json is read: no weights are needed to refuse this student.
    directory = root / "other-vocab"
    BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64).save_pretrained(directory)
    return str(directory)


# (what the study changes, the field and message the one error line holds). The tiny teacher
# has 2 layers of width 32 with 2 heads and 64 positions.
CASES = {
    "teacher_layers": (lambda s, root: s["student"].update(teacher_layers=[1, 2, 60]),
                       "student.teacher_layers: the teacher has only 2 layers, asked for 60"),
    "layer_weights": (lambda s, root: s["distillation"].update(layer_weights=[1, 1, 1, 1, 1]),
                      "distillation.layer_weights: 5 weights given for 1 mapped layers"),
    "layer_map": (lambda s, root: s["distillation"].update(layer_map={"kind": "pairs", "pairs": [[1, 3]]}),
                  "distillation.layer_map: "),
    "uniform_map_depth": (lambda s, root: s.update(student={"config": {"layers": 3, "hidden": 32, "heads": 2}}),
                          "distillation.layer_map: a uniform map needs M <= N; got M=3, N=2"),
    "searched_layer_weight": (lambda s, root: s["search"]["space"].update(layer_weight_2={"low": 0, "high": 1}),
                              "search.space.layer_weight_2: the layer map has only 1 layers"),
    "enqueued_layer_weight": (lambda s, root: s["search"].update(
        space={"layer_weight": {"low": 0.0, "high": 1.0}}, enqueue=[{"layer_weight_3": 0.5}]),
        "search.enqueue[0].layer_weight_3: the layer map has only 1 layers"),
    "vocabulary": (lambda s, root: s.update(student={"model": _other_vocabulary(root)}),
                   "student.model: the vocabulary of"),
    "positions": (lambda s, root: s["task"].update(max_length=128),
                  "task.max_length: 128 tokens exceed the 64 positions of teacher.model"),
    "minilm_heads": (lambda s, root: (s.update(student={"config": {"layers": 1, "hidden": 33, "heads": 3}}),
                                      s["distillation"].update(structure={"minilm_value": 1.0})),
                     "distillation.structure: MiniLM's value relation splits the student's width (33)"),
}


@pytest.fixture(scope="module")
def ray_imported():
    # The launch command imports Ray once per process; the refusals below are timed without it.
    import ray  # noqa: F401


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_architecture_check_refuses_before_any_work(tmp_path, runner, ray_imported, case):
    change, message = CASES[case]
    study = tiny_study(tmp_path)
    study["distillation"]["stages"][0]["epochs"] = 1
    change(study, tmp_path)
    study_file = write_study(tmp_path, study)
    workdir = tmp_path / "work"
    for command in (["validate", str(study_file)], ["launch", str(study_file), "--workdir", str(workdir)]):
        started = time.perf_counter()
        result = runner.invoke(main, command)
        seconds = time.perf_counter() - started
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2, result.output
        assert len(lines) == 1 and message in lines[0], result.output
        assert seconds < 5, f"{command[0]} took {seconds:.1f} s"
    # No teacher fine-tuned, no teacher-output or data cache filled, no study directory.
    assert not (workdir / "teachers").exists() and not (tmp_path / "cache").exists()
    assert not (workdir / "studies").exists()


def test_a_runnable_study_reports_its_layer_map(tmp_path):
    study = parse_study(tiny_study(tmp_path, student={"teacher_layers": [2]}))
    shapes = check_models(study)
    assert shapes.pairs == [(1, 2)] and shapes.teacher_heads == 2
