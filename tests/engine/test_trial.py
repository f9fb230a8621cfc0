"""The distillation engine on tiny random BERTs: models, cache, one trial, `kd-search distill`."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import fill_cache_in_process, tiny_study, tiny_teacher_dir, write_study

from kd_search.cli import main
from kd_search.engine.data import load_task
from kd_search.engine.models import build_student, load_classifier, load_tokenizer, width_projection
from kd_search.engine.spec import FreshStudentConfig, StudentSpec, parse_study
from kd_search.engine.teacher_cache import TeacherLayers, cache_bytes, cached_teacher, human_bytes
from kd_search.engine.trial import prepare, run_trial
from kd_search.errors import CacheSpaceError, NonFiniteLossError


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("engine")


def test_student_from_teacher_layers_copies_weights(root):
    teacher = load_classifier(str(tiny_teacher_dir(root, layers=4)), 2)
    student = build_student(StudentSpec(teacher_layers=[2, 4]), teacher, 2)
    assert student.config.num_hidden_layers == 2
    t_state, s_state = teacher.state_dict(), student.state_dict()
    # Student layer 0 is teacher layer 2 (index 1), student layer 1 is teacher layer 4 (index 3).
    for key, value in s_state.items():
        source = key.replace(".layer.0.", ".layer.1.") if ".layer.0." in key else key.replace(".layer.1.", ".layer.3.")
        torch.testing.assert_close(value, t_state[source], msg=key)
    assert width_projection(student, teacher) is None


def test_fresh_student_of_other_width_gets_projection(root):
    teacher = load_classifier(str(tiny_teacher_dir(root)), 2)
    student = build_student(StudentSpec(config=FreshStudentConfig(layers=1, hidden=16, heads=2)), teacher, 2)
    projection = width_projection(student, teacher)
    assert projection is not None and projection.dense.weight.shape == (32, 16)


def test_cache_is_reused_without_calling_the_teacher(root):
    study = parse_study(tiny_study(root))
    teacher_dir = str(tiny_teacher_dir(root))
    data = load_task(study.task, load_tokenizer(teacher_dir))
    calls = []

    def load_teacher():
        calls.append(1)
        return load_classifier(teacher_dir, 2)

    layers = TeacherLayers(hidden=(0, 2), scores=(2,), values=(2,))
    first = cached_teacher(root / "reuse", "k", load_teacher, data, layers)
    second = cached_teacher(root / "reuse", "k", load_teacher, data, layers)
    assert len(calls) == 1
    torch.testing.assert_close(first.logits("train"), second.logits("train"))
    # The cached logits are the teacher's own.
    teacher = load_classifier(teacher_dir, 2).eval()
    with torch.no_grad():
        direct = teacher(input_ids=data.eval.input_ids, attention_mask=data.eval.attention_mask,
                         token_type_ids=data.eval.token_type_ids).logits
    torch.testing.assert_close(second.logits("eval"), direct, atol=1e-4, rtol=1e-4)
    batch = second.batch(torch.tensor([3, 0]), {"input_ids": torch.zeros(2, 8)}, torch.device("cpu"),
                         with_intermediate=True)
    assert batch.hidden[0].shape == (2, 8, 32) and batch.scores[2].shape == (2, 2, 8, 8)
    assert batch.hidden[0].dtype == torch.float16
    # MiniLM's value vectors: layer 2's value projection of its input, layer 1's output.
    with torch.no_grad():
        layer_input = teacher(input_ids=data.train.input_ids[[3, 0], :8], token_type_ids=data.train.token_type_ids[[3, 0], :8],
                              attention_mask=data.train.attention_mask[[3, 0], :8], output_hidden_states=True).hidden_states[1]
        values = teacher.bert.encoder.layer[1].attention.self.value(layer_input)
    mask = data.train.attention_mask[[3, 0], :8].bool()
    torch.testing.assert_close(batch.values[2].float()[mask], values[mask], atol=2e-2, rtol=1e-2)


def test_cache_is_safe_when_two_processes_fill_it_at_once(root):
    tiny_teacher_dir(root)
    context = multiprocessing.get_context("spawn")
    marker = root / "computed.txt"
    processes = [context.Process(target=fill_cache_in_process, args=(str(root), str(marker), str(root / f"r{i}.json")))
                 for i in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=240)
        assert process.exitcode == 0
    assert marker.read_text().count("computed") == 1
    results = [json.loads((root / f"r{i}.json").read_text()) for i in range(2)]
    assert results[0] == results[1]
    assert not list((root / "cache").glob("*.tmp-*"))


def test_trial_is_deterministic_and_reports_every_epoch(root):
    study = parse_study(tiny_study(root))
    setup = prepare(study, root / "work")
    reports = []

    def report(metrics, checkpoint_dir):
        assert (Path(checkpoint_dir) / "student.safetensors").is_file()
        reports.append(metrics)

    first_result = run_trial(study, {"alpha": 0.2}, report, setup=setup)
    first = first_result.metrics
    second = run_trial(study, {"alpha": 0.2}, setup=setup).metrics
    assert [r["epoch"] for r in reports] == [1, 2]
    assert [r["stage"] for r in reports] == ["intermediate", "prediction"]
    for key in ("accuracy", "sigma", "kappa", "train_loss", "ece", "agreement", "sigma_ci_low", "sigma_ci_high",
                "sigma_se", "accuracy_ci_low", "accuracy_ci_high"):
        assert first[key] == second[key], key
    assert first["sigma_ci_low"] <= first["sigma"] <= first["sigma_ci_high"] and first["sigma_se"] > 0
    assert first["accuracy_ci_low"] <= first["accuracy"] <= first["accuracy_ci_high"]
    assert first_result.params["alpha"] == 0.2 and "params" not in first
    assert 0 <= first["sigma"] and first["kappa"] == 0.05
    assert isinstance(first["phi_cnf"], bool)


def test_kappa_bound_follows_the_paper(root):
    study = parse_study(tiny_study(root, objectives={"confidence": {"kappa": "bound", "bound_gamma": 2.0}}))
    metrics = run_trial(study, {"alpha": 0.5}, workdir=root / "work").metrics
    expected = 2.0 * np.sqrt(metrics["prediction_loss_sum"] / (64 * (1 - 0.5)))
    assert metrics["kappa"] == pytest.approx(expected)


def test_nan_loss_stops_the_trial(root):
    study = parse_study(tiny_study(root))
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        run_trial(study, {"temperature": 1e-40, "epochs_intermediate": 0}, workdir=root / "work")


def test_resume_continues_after_the_checkpoint(root):
    study = parse_study(tiny_study(root))
    setup = prepare(study, root / "work")
    saved = root / "saved-checkpoint"

    def keep_first(metrics, checkpoint_dir):
        if metrics["epoch"] == 1:
            import shutil

            shutil.copytree(checkpoint_dir, saved)

    run_trial(study, {}, keep_first, setup=setup)
    epochs = []
    result = run_trial(study, {}, lambda m, c: epochs.append(m["epoch"]), setup=setup, resume_from=saved)
    assert epochs == [2]
    assert result.metrics["stage"] == "prediction"


def test_on_the_fly_teacher_with_dropout(root):
    study = parse_study(tiny_study(root, teacher={"model": str(tiny_teacher_dir(root)), "dropout": True}))
    metrics = run_trial(study, {}, workdir=root / "work-dropout").metrics
    assert 0.0 <= metrics["accuracy"] <= 1.0 and np.isfinite(metrics["train_loss"])


def test_unknown_override_is_a_clear_error(root, runner):
    path = write_study(root, tiny_study(root))
    result = runner.invoke(main, ["distill", str(path), "--set", "dropout=0.1"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: unknown hyperparameter 'dropout'")


def test_distill_cli_saves_a_loadable_student(root, runner):
    from transformers import AutoModelForSequenceClassification, pipeline

    path = write_study(root, tiny_study(root))
    out = root / "student"
    result = runner.invoke(main, ["distill", str(path), "--json", "--out", str(out), "--set", "temperature=2"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output.strip().splitlines()[-1])
    for key in ("accuracy", "teacher_accuracy", "sigma", "kappa", "phi_cnf", "ece", "agreement", "train_seconds",
                "sigma_ci_low", "sigma_ci_high", "sigma_se", "accuracy_ci_low", "accuracy_ci_high"):
        assert key in metrics
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_hidden_layers == 1
    assert not any("dense" in k and "projection" in k for k in model.state_dict())
    classify = pipeline("text-classification", model=str(out))
    assert classify("a good movie")[0]["label"] in {"LABEL_0", "LABEL_1"}
    assert "sigma" in (out / "README.md").read_text()


def test_teacher_can_learn_from_a_superset_of_the_distillation_split(root):
    data = tiny_study(root)
    data["task"]["train_limit"] = 32
    data["teacher"]["fine_tune"]["train_limit"] = 64
    steps = []
    setup = prepare(parse_study(data), root / "superset", progress=lambda what, done, total: steps.append(total))
    assert len(setup.data.train) == 32
    assert steps[-1] == 2 * 64 // 16  # two epochs over 64 examples, batch 16


def test_cache_size_is_what_the_fill_writes(root):
    study = parse_study(tiny_study(root))
    teacher_dir = str(tiny_teacher_dir(root))
    data = load_task(study.task, load_tokenizer(teacher_dir))
    layers = TeacherLayers(hidden=(0, 1, 2), scores=(1, 2), values=(2,))
    cache = cached_teacher(root / "sized", "k", lambda: load_classifier(teacher_dir, 2), data, layers)
    expected = cache_bytes(len(data.train), len(data.eval), data.train.input_ids.shape[1], 2, 32, 2, layers)
    written = sum(p.stat().st_size for p in cache.directory.glob("*.npy"))
    assert written == expected == cache.meta["bytes"]


@pytest.fixture
def small_filesystem(tmp_path):
    """A real 256 kB filesystem (tmpfs), where this machine lets the test mount one."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or 'mount failed'}); CI runs as root")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_a_cache_fill_that_cannot_fit_is_refused_before_the_teacher_runs(root, small_filesystem):
    study = parse_study(tiny_study(root))
    teacher_dir = str(tiny_teacher_dir(root))
    data = load_task(study.task, load_tokenizer(teacher_dir))
    layers = TeacherLayers(hidden=(0, 1, 2), scores=(1, 2))
    forwards = []

    def load_teacher():
        teacher = load_classifier(teacher_dir, 2)
        teacher.register_forward_pre_hook(lambda module, args: forwards.append(1))
        return teacher

    needed = cache_bytes(len(data.train), len(data.eval), data.train.input_ids.shape[1], 2, 32, 2, layers)
    free = shutil.disk_usage(small_filesystem).free
    assert needed > free
    with pytest.raises(CacheSpaceError) as refused:
        cached_teacher(small_filesystem / "cache", "k", load_teacher, data, layers)
    message = str(refused.value)
    assert "\n" not in message and human_bytes(needed) in message and f"{human_bytes(free)} free" in message
    assert str(small_filesystem / "cache") in message
    assert not forwards  # refused before any forward pass
    assert [p.name for p in (small_filesystem / "cache").iterdir()] == ["k.lock"]  # nothing half-written
