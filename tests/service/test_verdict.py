"""Verdicts over seeds: read from confirmation attrs on a real SQLite Optuna study, shown by
`pareto`, chosen by `export --best`, written on the model card and drawn on the front figure.

Confirmations are written the way the driver stores them: one study user attribute per
(trial, seed).
"""

from __future__ import annotations

import json
import shutil
import warnings

import optuna
import pytest
from optuna.distributions import FloatDistribution
from tiny import tiny_teacher_dir

from kd_search.cli import main
from kd_search.engine.measures import certify
from kd_search.engine.models import load_classifier, load_tokenizer, student_from_teacher_layers
from kd_search.service.export import exported_metrics, model_card, save_student
from kd_search.service.search import (
    CONSTRAINT,
    SPEC_ATTR,
    Locations,
    confirmations,
    summarize,
    verdict_text,
)

KAPPA = 0.05
SPACE = {"alpha": FloatDistribution(0.0, 0.5)}
# Trial number -> (accuracy, sigma, sigma_se) of the search run, and its confirmations
# (seed -> accuracy, sigma; None for a FAIL).
TRIALS = {
    0: ((0.80, 0.030, 0.001), {1000: (0.79, 0.031), 2000: (0.81, 0.029), 3000: None}),  # certified
    1: ((0.85, 0.040, 0.002), {}),  # one seed, feasible: unconfirmed
    2: ((0.83, 0.040, None), {1000: (0.82, 0.048)}),  # two seeds, mean <= kappa, bound > kappa
    3: ((0.90, 0.080, 0.002), {}),  # fails
}
NAME = "verdicts"
WIDE = {"COLUMNS": "250"}  # rich tables must not wrap in the runner


def record_study(storage: str, trials: dict = TRIALS, name: str = NAME) -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["accuracy", "sigma"])
    study.set_user_attr(SPEC_ATTR, {"name": name, "seed": 7, "teacher": {"model": "teacher-2x32"},
                                    "task": {"source": "files"}, "objectives": {"task_metric": "accuracy"}})
    for number, ((accuracy, sigma, error), confirmed) in trials.items():
        trial = study.ask(SPACE)
        assert trial.number == number
        attrs = {"accuracy": accuracy, "sigma": sigma, "kappa": KAPPA, "phi_cnf": sigma <= KAPPA,
                 "sigma_ci_low": sigma - 0.002, "sigma_ci_high": sigma + 0.003,
                 "accuracy_ci_low": accuracy - 0.03, "accuracy_ci_high": accuracy + 0.03}
        for key, value in attrs.items() | ({("sigma_se", error)} if error is not None else set()):
            trial.set_user_attr(key, value)
        trial.set_constraint(CONSTRAINT, sigma - KAPPA)
        study.tell(trial, values=[accuracy, sigma])
        for seed, values in confirmed.items():
            payload = {"state": "FAIL", "failure": "the trial's worker failed"} if values is None else \
                {"state": "COMPLETE", "accuracy": values[0], "sigma": values[1], "kappa": KAPPA}
            study.set_user_attr(f"kd_search_confirmation:{number}:{seed}", payload | {"seed": seed, "trial": number})
    return study


@pytest.fixture
def stored(tmp_path):
    locations = Locations.resolve(None, tmp_path / "work")
    locations.workdir.mkdir(parents=True)
    return record_study(locations.storage), locations


def test_confirmations_are_read_per_trial_sorted_by_seed(stored):
    study, _ = stored
    found = confirmations(study)
    assert sorted(found) == [0, 2]
    assert [(c["seed"], c["state"]) for c in found[0]] == [(1000, "COMPLETE"), (2000, "COMPLETE"), (3000, "FAIL")]


def test_verdicts_seeds_and_spread_from_the_stored_attrs(stored):
    study, _ = stored
    summary = summarize(study)
    by_number = {t.number: t for t in summary.trials}
    assert [verdict_text(by_number[n]) for n in range(4)] == [
        "certified", "holds on one seed (unconfirmed)", "holds on 2 seeds, not certified", "fails"]
    assert [by_number[n].seeds for n in range(4)] == [3, 1, 2, 1]  # the FAIL confirmation is no seed
    certified = by_number[0]
    assert certified.seed_sigmas == [0.030, 0.031, 0.029]
    assert certified.sigma_mean == pytest.approx(0.030) and certified.sigma_std == pytest.approx(0.001)
    assert certified.metric_mean == pytest.approx(0.80) and certified.metric_std == pytest.approx(0.01)
    assert (certified.sigma_ci_low, certified.sigma_ci_high) == (pytest.approx(0.028), pytest.approx(0.033))
    assert certified.verdict.upper_bound < KAPPA
    single = by_number[1]
    assert single.sigma_mean == 0.040 and single.sigma_std is None and single.metric_std is None
    assert by_number[2].verdict.mean_sigma == pytest.approx(0.044)  # no sigma_se recorded: counted as 0
    # The front is still the search's own: feasible on one seed, whatever the verdict.
    assert [t.number for t in summary.front] == [1, 0]
    assert summary.best_feasible().number == 1 and summary.best_certified().number == 0
    assert summary.verdict_counts() == {"certified": 1, "unconfirmed": 2, "fails": 1}


def test_pareto_shows_intervals_seeds_and_verdicts(stored, runner):
    _, locations = stored
    options = ["--workdir", str(locations.workdir)]
    result = runner.invoke(main, ["pareto", NAME, "--json", *options])
    assert result.exit_code == 0, result.output
    front = {item["trial"]: item for item in json.loads(result.output.strip().splitlines()[-1])}
    assert sorted(front) == [0, 1]
    for item in front.values():
        assert set(item) >= {"trial", "accuracy", "sigma", "kappa", "phi_cnf", "params", "verdict", "seeds",
                             "sigma_ci_low", "sigma_ci_high", "sigma_mean", "sigma_std", "accuracy_mean",
                             "accuracy_std"}
    assert (front[0]["verdict"], front[0]["seeds"], front[0]["phi_cnf"]) == ("certified", 3, True)
    assert front[0]["sigma_std"] == pytest.approx(0.001) and front[0]["accuracy_mean"] == pytest.approx(0.80)
    assert (front[1]["verdict"], front[1]["seeds"], front[1]["sigma_std"]) == ("unconfirmed", 1, None)
    assert front[1]["sigma_ci_low"] == pytest.approx(0.038)

    result = runner.invoke(main, ["pareto", NAME, *options], env=WIDE)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 3}
    assert "0.0300 [0.0280, 0.0330]" in rows["0"] and "certified" in rows["0"]
    assert "0.8000 ± 0.0100 / 0.0300 ± 0.0010" in rows["0"]
    assert "holds on one seed (unconfirmed)" in rows["1"] and "±" not in rows["1"]

    result = runner.invoke(main, ["status", *options], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "1 / 2 / 1" in result.output and "trial 0: accuracy 0.8000, sigma 0.0300 over 3 seeds" in result.output


def test_pareto_fits_an_80_column_terminal_without_cutting_words(stored, runner):
    _, locations = stored
    result = runner.invoke(main, ["pareto", NAME, "--workdir", str(locations.workdir)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in result.output, result.output
    text = " ".join(" ".join(lines).split())  # a parameter line may wrap, between parameters
    for number, trial in enumerate(stored[0].trials[:2]):  # the front: trials 0 and 1
        params = ", ".join(f"{k}={v:.3g}" for k, v in sorted(trial.params.items()))
        assert f"trial {number}: {params}" in text


@pytest.fixture(scope="module")
def tiny_student_dir(tmp_path_factory):
    teacher_dir = tiny_teacher_dir(tmp_path_factory.mktemp("teacher"))
    student = student_from_teacher_layers(load_classifier(str(teacher_dir), 2), [2]).eval()
    return save_student(student, load_tokenizer(str(teacher_dir)), tmp_path_factory.mktemp("kept") / "student")


def keep_students(locations: Locations, source, numbers, name: str = NAME) -> None:
    for number in numbers:
        shutil.copytree(source, locations.trial_dir(name, number) / "student")


def test_export_best_refuses_an_unconfirmed_front_and_touches_nothing(tmp_path, runner, tiny_student_dir):
    locations = Locations.resolve(None, tmp_path / "work")
    locations.workdir.mkdir(parents=True)
    trials = {0: ((0.85, 0.040, 0.002), {}), 1: ((0.90, 0.080, 0.002), {}), 2: ((0.80, 0.045, 0.002), {})}
    record_study(locations.storage, trials)
    keep_students(locations, tiny_student_dir, [0, 2])
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    result = runner.invoke(main, ["export", NAME, "--best", "--out", str(out), "--workdir", str(locations.workdir)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: no certified trial: trial 0 holds on one seed (unconfirmed); "
        f"run `kd-search confirm {NAME}` or pass --allow-unconfirmed"]
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and (out / "mine.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "work"]  # no staging directory either

    result = runner.invoke(main, ["export", NAME, "--best", "--allow-unconfirmed", "--out", str(tmp_path / "student"),
                                  "--workdir", str(locations.workdir)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == (
        "exported trial 0 (accuracy 0.8500, sigma 0.0400 [0.0380, 0.0430], NOT certified: holds on one seed "
        f"(unconfirmed); the most accurate with sigma <= kappa on its search seed) to {tmp_path / 'student'}")
    metrics = json.loads((tmp_path / "student" / "kd_search_metrics.json").read_text())
    assert (metrics["trial"], metrics["verdict"], metrics["seeds"]) == (0, "unconfirmed", 1)
    assert metrics["per_seed"] == [{"seed": 7, "accuracy": 0.85, "sigma": 0.04}]


def test_export_best_picks_the_most_accurate_certified_trial(stored, runner, tiny_student_dir, tmp_path):
    _, locations = stored
    keep_students(locations, tiny_student_dir, [0, 1])
    out = tmp_path / "student"
    result = runner.invoke(main, ["export", NAME, "--best", "--out", str(out), "--workdir", str(locations.workdir)])
    assert result.exit_code == 0, result.output
    # Trial 1 is more accurate and feasible on its seed, but only trial 0 is certified.
    assert result.output.strip().splitlines()[-1] == (
        "exported trial 0 (accuracy 0.8000, sigma 0.0300 [0.0280, 0.0330], the most accurate certified trial: "
        f"accuracy 0.8000 on average over its 3 seeds) to {out}")
    metrics = json.loads((out / "kd_search_metrics.json").read_text())
    assert (metrics["verdict"], metrics["verdict_text"], metrics["seeds"]) == ("certified", "certified", 3)
    assert [run["seed"] for run in metrics["per_seed"]] == [7, 1000, 2000]
    assert metrics["sigma_std"] == pytest.approx(0.001) and metrics["sigma_upper_bound"] < KAPPA
    card = (out / "README.md").read_text()
    assert "| sigma | 0.0300 [0.0280, 0.0330] |" in card and "| verdict | certified |" in card
    assert "| accuracy | 0.8000 [0.7700, 0.8300] |" in card

    result = runner.invoke(main, ["export", NAME, "--trial", "1", "--out", str(tmp_path / "one"),
                                  "--workdir", str(locations.workdir)])
    assert result.exit_code == 0, result.output
    assert "holds on one seed (unconfirmed)) to" in result.output.strip().splitlines()[-1]


def test_model_card_lists_the_seeds_their_spread_and_the_verdict(stored):
    study, _ = stored
    record = next(t for t in summarize(study).trials if t.number == 0)
    card = model_card(study.user_attrs[SPEC_ATTR], {"alpha": 0.1}, exported_metrics(record, search_seed=7))
    lines = card.splitlines()
    assert "| verdict | certified |" in lines and "| seeds | 3 |" in lines
    section = lines[lines.index("## Confidence over training seeds"):lines.index("## Hyperparameters")]
    assert section[2].startswith("Verdict: **certified**.")
    assert any(line.startswith("here 0.0") and line.endswith("against kappa 0.0500.") for line in section)
    table = section[section.index("| seed | accuracy | sigma |"):]
    assert table[:5] == ["| seed | accuracy | sigma |", "|---|---|---|", "| 7 (search) | 0.8000 | 0.0300 |",
                         "| 1000 | 0.7900 | 0.0310 |", "| 2000 | 0.8100 | 0.0290 |"]
    assert "Over 3 seeds (mean ± sd): accuracy 0.8000 ± 0.0100, sigma 0.0300 ± 0.0010." in table


def test_pareto_figure_draws_intervals_and_marks_certified_trials(stored, tmp_path):
    study, _ = stored
    figure = summarize(study).pareto_figure(KAPPA, title="verdicts")
    axis = figure.axes[0]
    legend = [text.get_text() for text in axis.get_legend().get_texts()]
    assert legend == ["certified over seeds", "feasible on its search seed", "infeasible (sigma > kappa)",
                      "95% bootstrap interval", "Pareto front", "kappa = 0.05"]
    bars = axis.containers[0]
    assert bars.has_xerr and bars.has_yerr
    x_segments = bars.lines[2][0].get_segments()  # one horizontal segment per trial: its sigma interval
    assert [tuple(round(x, 4) for x in (segment[0][0], segment[1][0])) for segment in x_segments] == [
        (0.028, 0.033), (0.038, 0.043), (0.038, 0.043), (0.078, 0.083)]
    out = tmp_path / "pareto.png"
    figure.savefig(out, dpi=80)
    assert out.read_bytes().startswith(b"\x89PNG")


def test_phi_cnf_tags_carry_the_verdict_and_follow_its_changes(stored, tmp_path):
    from mlflow import MlflowClient

    from kd_search.service.tracking import StudyTracker

    study, locations = stored
    tracker = StudyTracker(locations.tracking_uri, "kd-search", NAME, artifact_root=tmp_path / "artifacts")
    for number in range(4):
        tracker.start_trial(number, {"alpha": 0.1}, ray_trial_id=f"run_{number}")
    tracker.set_verdicts(summarize(study).verdicts())
    client = MlflowClient(locations.tracking_uri)

    def tags() -> dict[int, str]:
        return {number: client.get_run(tracker.trial_run_id(number)).data.tags.get("phi_cnf") for number in range(4)}

    assert tags() == {0: "certified", 1: "unconfirmed", 2: "unconfirmed", 3: "fails"}
    # A confirmation certifies trial 1; a tracker re-opened on the study rewrites only that tag.
    for seed, sigma in ((1000, 0.0405), (2000, 0.0395)):
        study.set_user_attr(f"kd_search_confirmation:1:{seed}",
                            {"state": "COMPLETE", "seed": seed, "trial": 1, "accuracy": 0.85, "sigma": sigma})
    reopened = StudyTracker(locations.tracking_uri, "kd-search", NAME, create=False)
    reopened.set_verdicts(summarize(study).verdicts())
    assert tags() == {0: "certified", 1: "certified", 2: "unconfirmed", 3: "fails"}


def test_pareto_at_another_kappa_recomputes_phi_cnf_verdicts_and_front(stored, runner):
    _, locations = stored
    options = ["--workdir", str(locations.workdir)]

    def front_at(kappa: str) -> dict[int, dict]:
        result = runner.invoke(main, ["pareto", NAME, "--json", "--kappa", kappa, *options])
        assert result.exit_code == 0, result.output
        return {item["trial"]: item for item in json.loads(result.output.strip().splitlines()[-1])}

    # Tighter: trial 1 (sigma 0.04, one seed) now fails; trial 0 stays certified (U about 0.0335).
    tight = front_at("0.035")
    assert sorted(tight) == [0] and (tight[0]["kappa"], tight[0]["verdict"]) == (0.035, "certified")
    bound = certify([0.030, 0.031, 0.029], [0.001, 0.0, 0.0], 0.035).upper_bound  # confirmations: no sigma_se
    assert tight[0]["sigma_upper_bound"] == pytest.approx(bound) and bound < 0.035
    # Looser: trial 3 (sigma 0.08) joins the front; trial 2's two seeds are certified, off the front.
    loose = front_at("0.1")
    assert sorted(loose) == [0, 1, 3]
    assert [loose[n]["verdict"] for n in (0, 1, 3)] == ["certified", "unconfirmed", "unconfirmed"]
    assert all(item["phi_cnf"] and item["kappa"] == 0.1 for item in loose.values())
    # Nothing stored changed: the study's own kappa gives the stored verdicts.
    own = front_at(str(KAPPA))
    assert sorted(own) == [0, 1] and [own[n]["verdict"] for n in (0, 1)] == ["certified", "unconfirmed"]

    result = runner.invoke(main, ["pareto", NAME, "--kappa", "0.1", *options], env=WIDE)
    assert result.exit_code == 0, result.output
    assert f"{NAME}: feasible Pareto front at kappa 0.1" in result.output


@pytest.mark.parametrize("bad", ["-0.05", "0", "abc", "nan", "inf", ""])
def test_a_bad_kappa_is_one_line_and_exit_2(stored, runner, bad, tmp_path):
    _, locations = stored
    for command in (["pareto", NAME], ["export", NAME, "--best", "--out", str(tmp_path / "out")]):
        result = runner.invoke(main, [*command, "--kappa", bad, "--workdir", str(locations.workdir)])
        assert result.exit_code == 2
        assert result.output.strip().splitlines() == [f"error: --kappa: expected a finite number > 0, got {bad!r}"]
    assert not (tmp_path / "out").exists()


def test_export_best_at_another_kappa_exports_the_best_certified_there(stored, runner, tiny_student_dir, tmp_path):
    _, locations = stored
    keep_students(locations, tiny_student_dir, [0, 1, 2])
    options = ["--workdir", str(locations.workdir)]
    out = tmp_path / "student"
    result = runner.invoke(main, ["export", NAME, "--best", "--kappa", "0.1", "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    # At 0.1 trial 2 (mean accuracy 0.825 over two seeds) is certified and beats trial 0 (0.80);
    # the line gives the mean the rule ranks by beside the search seed's accuracy.
    assert result.output.strip().splitlines()[-1] == (
        "exported trial 2 (accuracy 0.8300, sigma 0.0400 [0.0380, 0.0430], the most accurate certified trial: "
        f"accuracy 0.8250 on average over its 2 seeds, at kappa 0.1) to {out}")
    metrics = json.loads((out / "kd_search_metrics.json").read_text())
    assert (metrics["trial"], metrics["verdict"], metrics["kappa"]) == (2, "certified", 0.1)
    assert metrics["sigma_upper_bound"] <= 0.1
    card = (out / "README.md").read_text()
    assert "| kappa | 0.1000 |" in card and "| verdict | certified |" in card

    result = runner.invoke(main, ["export", NAME, "--best", "--kappa", "0.02", "--out", str(tmp_path / "none"),
                                  *options])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: study {NAME!r} has no finished trial with sigma <= kappa yet"]
    assert not (tmp_path / "none").exists()


def test_kappa_curve_steps_up_at_each_certified_trials_bound(stored):
    from kd_search.service.search import kappa_curve

    study, _ = stored
    summary = summarize(study)
    curve = kappa_curve(summary, points=400)
    by_number = {t.number: t for t in summary.trials}
    bound_0, bound_2 = by_number[0].verdict.upper_bound, by_number[2].verdict.upper_bound
    # From the lowest sigma to 10% past the highest of the bounds and sigmas (trial 2's U, 0.0877).
    assert bound_2 > 0.08
    assert curve.kappas[0] == pytest.approx(0.030) and curve.kappas[-1] == pytest.approx(1.1 * bound_2)
    for kappa, certified, feasible in zip(curve.kappas, curve.certified, curve.feasible, strict=True):
        expected = 0.825 if kappa >= bound_2 else 0.80 if kappa >= bound_0 else None
        assert certified == (pytest.approx(expected) if expected is not None else None), kappa
        assert feasible == max(t.metric for t in summary.trials if t.sigma <= kappa)


def test_at_kappa_judges_every_trial_of_a_bound_study_against_the_one_kappa():
    from kd_search.service.search import StudySummary, TrialRecord, at_kappa

    # kappa: bound: each trial stored its own bound; trial 0's was loose, trial 1's tight.
    records = [TrialRecord(0, "COMPLETE", 0.85, 0.06, 0.09, {}, {"kappa": 0.09}),
               TrialRecord(1, "COMPLETE", 0.80, 0.03, 0.02, {}, {"kappa": 0.02}),
               TrialRecord(2, "RUNNING", None, None, None, {}, {})]
    stored = StudySummary("bound", "accuracy", records)
    assert [t.feasible for t in stored.trials] == [True, False, False]
    judged = at_kappa(stored, 0.05)
    assert [t.kappa for t in judged.trials] == [0.05, 0.05, 0.05]
    assert [t.feasible for t in judged.trials] == [False, True, False]
    assert [t.number for t in judged.front] == [1]
    assert [t.verdict.verdict.value for t in judged.trials[:2]] == ["fails", "unconfirmed"]
    assert judged.trials[1].attrs["kappa"] == 0.05 and records[1].kappa == 0.02  # the stored records stay
