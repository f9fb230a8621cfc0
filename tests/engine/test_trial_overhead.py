"""A trial's fixed costs cut without changing its numbers: length-sorted inference, the
tokenised-data cache, partial evaluation of intermediate epochs, phase timings."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from tiny import tiny_study, tiny_teacher_dir

from kd_search.engine import data_cache
from kd_search.engine.data import batches, load_task
from kd_search.engine.data_cache import cached_task
from kd_search.engine.models import load_classifier, load_tokenizer
from kd_search.engine.spec import parse_study
from kd_search.engine.teacher import evaluate_classifier, teacher_key
from kd_search.engine.trial import prepare, run_trial


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("overhead")


def test_length_sorted_inference_gives_the_row_order_logits(root):
    study = parse_study(tiny_study(root))
    teacher_dir = str(tiny_teacher_dir(root))
    split = load_task(study.task, load_tokenizer(teacher_dir)).train
    lengths = split.attention_mask.sum(dim=1)
    assert lengths.min() < lengths.max()  # rows of several lengths: the sort reorders them
    model = load_classifier(teacher_dir, 2).eval()
    with torch.inference_mode():  # the former way: batches in row order, each trimmed to its longest row
        unsorted = torch.cat([model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"],
                                    attention_mask=b["attention_mask"]).logits
                              for _, b in batches(split, 16, shuffle=False)])
    sorted_logits = evaluate_classifier(model, split, 16, torch.device("cpu"))
    torch.testing.assert_close(sorted_logits, unsorted, atol=1e-5, rtol=1e-5)


def test_tokenised_data_cache_hit_is_identical_and_keyed_by_max_length(root, monkeypatch):
    study = parse_study(tiny_study(root))
    tokenizer = load_tokenizer(str(tiny_teacher_dir(root)))
    direct = load_task(study.task, tokenizer)
    stored = cached_task(study.task, tokenizer, root / "data-cache")

    def no_tokenising(*args):
        raise AssertionError("a cache hit must not read or tokenise the examples")

    monkeypatch.setattr(data_cache, "load_task", no_tokenising)
    hit = cached_task(study.task, tokenizer, root / "data-cache")
    for data in (stored, hit):
        assert (data.num_labels, data.fingerprint) == (direct.num_labels, direct.fingerprint)
        for split in ("train", "eval"):
            ours, theirs = getattr(data, split), getattr(direct, split)
            assert ours.ids == theirs.ids
            for name in ("input_ids", "token_type_ids", "attention_mask", "labels"):
                assert torch.equal(getattr(ours, name), getattr(theirs, name)), (split, name)
                assert getattr(ours, name).dtype == getattr(theirs, name).dtype
    longer = study.with_changes(task={"max_length": 24}).task
    assert data_cache.data_cache_key(longer, tokenizer) != data_cache.data_cache_key(study.task, tokenizer)
    with pytest.raises(AssertionError, match="cache hit"):  # a different entry: computed, not read
        cached_task(longer, tokenizer, root / "data-cache")
    assert len(list((root / "data-cache" / "data").iterdir())) == 1


def test_partial_evaluation_of_intermediate_epochs_keeps_the_last_complete(root):
    study = parse_study(tiny_study(root))
    setup = prepare(study, root / "work")
    reports = []
    partial = run_trial(study, {"alpha": 0.2}, lambda metrics, _: reports.append(metrics), setup=setup,
                        full_evaluation_every_epoch=False)
    full = run_trial(study, {"alpha": 0.2}, setup=setup)
    first, last = reports
    for name in ("sigma", "kappa", "phi_cnf", "sigma_train", "prediction_loss_sum", "sigma_ci_low", "sigma_se"):
        assert name not in first, name
    for name in ("accuracy", "accuracy_ci_low", "ece", "agreement", "sigma_eval", "train_loss", "teacher_accuracy"):
        assert name in first, name
    # The last report holds every metric but those of the structure analysis (after training).
    assert set(last) == {n for n in full.metrics if n != "cka_diagonal" and not n.startswith("relation_")}
    for name, value in full.metrics.items():
        if name != "train_seconds":
            assert partial.metrics[name] == value or (math.isnan(value) and math.isnan(partial.metrics[name])), name
    assert sorted(partial.outputs) == sorted(full.outputs)


def test_trial_reports_its_phase_timings(root):
    study = parse_study(tiny_study(root))
    result = run_trial(study, {}, lambda metrics, _: None, workdir=root / "work")
    for phase in ("setup_data", "setup_teacher", "teacher_outputs", "student_build", "train", "eval_inference_train",
                  "eval_inference_eval", "eval_metrics", "eval_intervals", "checkpoint", "report",
                  "structure_analysis"):
        assert result.timings[phase] >= 0, phase
    assert result.timings["train"] == pytest.approx(result.metrics["train_seconds"])


def test_length_grouped_batches_see_every_row_once_with_less_padding(root):
    study = parse_study(tiny_study(root))
    split = load_task(study.task, load_tokenizer(str(tiny_teacher_dir(root)))).train

    def epoch(group_by_length: bool, seed: int = 3) -> list[tuple[list[int], int]]:
        return [(rows.tolist(), batch["input_ids"].numel())
                for rows, batch in batches(split, 8, shuffle=True, seed=seed, group_by_length=group_by_length)]

    shuffled, grouped = epoch(False), epoch(True)
    assert sorted(r for rows, _ in grouped for r in rows) == list(range(len(split)))  # each row once
    assert len(grouped) == len(shuffled) == -(-len(split) // 8)
    assert sum(tokens for _, tokens in grouped) < sum(tokens for _, tokens in shuffled)
    assert epoch(True) == grouped and epoch(True, seed=4) != grouped  # the seed fixes the epoch


def test_group_by_length_trains_reproducibly_and_keys_the_teacher_only_when_on(root):
    study = parse_study(tiny_study(root))
    grouped = study.with_changes(distillation={"group_by_length": True})
    setup = prepare(grouped, root / "work")
    first, again = (run_trial(grouped, {"alpha": 0.2}, setup=setup) for _ in range(2))
    assert first.metrics["train_loss"] == again.metrics["train_loss"]
    assert first.metrics["accuracy"] == again.metrics["accuracy"]
    # A teacher stored before the setting existed keeps its key; fine-tuning grouped is another teacher.
    data = cached_task(study.task, load_tokenizer(str(tiny_teacher_dir(root))), root / "data-cache")
    fine_tune = study.teacher.fine_tune.model_dump()
    del fine_tune["group_by_length"]
    recipe = {"model": study.teacher.model, "fine_tune": fine_tune, "data": data.fingerprint, "seed": study.seed}
    assert teacher_key(study, data) == hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    assert teacher_key(study.with_changes(teacher={"fine_tune": {"group_by_length": True}}), data) != teacher_key(study, data)
