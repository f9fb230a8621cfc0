"""Distillation methods side by side: one base study, each method's settings, several seeds.

A comparison file (the shipped ``compare_methods``) names the base study, the seeds and,
per method, the study fields it changes. Every method runs once per seed with the same
teacher and budget; the table gives accuracy, sigma (train split) and the CKA diagonal
(mean similarity of mapped teacher/student layers) as mean and spread over the seeds, and
sigma's bootstrap interval (each seed's bounds at the study's confidence level, averaged).
With a tracker, the comparison is one MLflow parent run (the table and an accuracy/sigma
figure) with a nested run per method and seed (epoch metrics, confidence and CKA figures).

Example:
    >>> comparison, studies = load_comparison("compare_methods")  # doctest: +SKIP
    >>> runs = run_comparison(comparison, studies, workdir="runs")  # doctest: +SKIP
    >>> print(markdown_table(summarize_runs(runs)))  # doctest: +SKIP
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from kd_search.engine.spec import Study
from kd_search.service import figures
from kd_search.service.tracking import StudyTracker
from kd_search.study_file import Comparison

COLUMNS = ("accuracy", "sigma", "cka_diagonal")


@dataclass(frozen=True)
class MethodRun:
    """One method trained with one seed."""

    method: str
    seed: int
    accuracy: float
    sigma: float
    sigma_ci_low: float
    sigma_ci_high: float
    cka_diagonal: float
    teacher_accuracy: float
    phi_cnf: bool
    train_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_comparison(comparison: Comparison, studies: dict[str, Study], workdir: str | Path = "runs",
                   progress: Callable[[str, int, int], None] | None = None,
                   on_run: Callable[[MethodRun], None] | None = None,
                   tracker: StudyTracker | None = None) -> list[MethodRun]:
    """Train every method once per seed; the teacher is fine-tuned (or reused) once.

    Example:
        >>> runs = run_comparison(comparison, studies, workdir="runs")  # doctest: +SKIP
        >>> {r.method for r in runs}  # doctest: +SKIP
        {'fsd', 'minilm', 'pkd', 'rkd', 'tinybert', 'vkd'}
    """
    from kd_search.engine.trial import hyperparameters, prepare, run_trial

    if tracker:
        tracker.start_study(comparison.description, comparison.model_dump(mode="json"),
                            {"base_study": comparison.study, "methods": ", ".join(studies),
                             "seeds": ", ".join(map(str, comparison.seeds))})
    runs: list[MethodRun] = []
    for method, study in studies.items():
        setup = prepare(study, workdir, progress)
        for seed in comparison.seeds:
            seeded = study.with_changes(distillation={"seed": seed})
            number, params = len(runs), hyperparameters(setup)
            if tracker:
                tracker.start_trial(number, {"method": method, "seed": seed} | params, ray_trial_id="",
                                    run_name=f"{method}-seed{seed}")
            report = (lambda metrics, _, number=number: tracker.log_epoch(number, metrics, int(metrics["epoch"]))) \
                if tracker else None
            try:
                # Methods without intermediate layers (VKD) are compared on the same layers too.
                result = run_trial(seeded, params, report, setup=setup, progress=progress, analyse_structure=True)
            except Exception as error:
                if tracker:
                    tracker.finish_trial(number, "FAIL", {}, error=str(error))
                    tracker.end_study("FAILED")
                raise
            metrics, outputs = result.metrics, result.outputs
            run = MethodRun(method, seed, float(metrics["accuracy"]), float(metrics["sigma"]),
                            float(metrics["sigma_ci_low"]), float(metrics["sigma_ci_high"]),
                            float(metrics["cka_diagonal"]), float(metrics["teacher_accuracy"]),
                            bool(metrics["phi_cnf"]), float(metrics["train_seconds"]))
            runs.append(run)
            if tracker:  # the epochs' metrics are on the run; add what was measured after training
                measured_after = {k: v for k, v in metrics.items() if k == "cka_diagonal" or k.startswith("relation_")}
                tracker.finish_trial(number, "COMPLETE", measured_after, figures.trial_figures(
                    outputs["teacher_probs"], outputs["student_probs"], outputs["labels"],
                    study.objectives.confidence.convention, float(metrics["kappa"]), outputs["cka_matrix"],
                    title=f"{method} seed {seed}"))
            if on_run:
                on_run(run)
    if tracker:
        rows = summarize_runs(runs)
        kappa = next(iter(studies.values())).objectives.confidence.fixed_kappa
        figure = figures.comparison_figure(
            [r["method"] for r in rows], [(r["accuracy_mean"], r["accuracy_std"]) for r in rows],
            [(r["sigma_mean"], r["sigma_std"]) for r in rows], kappa,
            title=f"{len(comparison.seeds)} seeds per method")
        tracker.log_study_results({"comparison.png": figure}, pd.DataFrame(rows), {})
        tracker.end_study()
    return runs


def summarize_runs(runs: list[MethodRun]) -> list[dict[str, Any]]:
    """Per method, in order of appearance: mean and standard deviation over its seeds, and
    the mean of the seeds' bootstrap bounds of sigma.

    Example:
        >>> runs = [MethodRun("vkd", s, a, 0.05, 0.04, h, 0.9, 0.8, True, 10.0)
        ...         for s, a, h in [(0, 0.7, 0.06), (1, 0.8, 0.07)]]
        >>> row = summarize_runs(runs)[0]
        >>> round(row["accuracy_mean"], 3), round(row["accuracy_std"], 3), row["seeds"], row["sigma_ci_high_mean"]
        (0.75, 0.071, 2, 0.065)
    """
    by_method: dict[str, list[MethodRun]] = {}
    for run in runs:
        by_method.setdefault(run.method, []).append(run)
    rows = []
    for method, group in by_method.items():
        row: dict[str, Any] = {"method": method, "seeds": len(group)}
        for column in COLUMNS:
            values = [getattr(r, column) for r in group]
            row[f"{column}_mean"] = statistics.fmean(values)
            # Sample standard deviation over seeds (0 for a single seed).
            row[f"{column}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        for bound in ("sigma_ci_low", "sigma_ci_high"):
            row[f"{bound}_mean"] = statistics.fmean(getattr(r, bound) for r in group)
        row["phi_cnf"] = sum(r.phi_cnf for r in group)
        row["train_seconds_mean"] = statistics.fmean(r.train_seconds for r in group)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The README's table: per method, mean ± std over seeds; sigma's CI is the mean of the
    seeds' bootstrap bounds.

    Example:
        >>> print(markdown_table([{"method": "vkd", "seeds": 3, "accuracy_mean": 0.75, "accuracy_std": 0.01,
        ...                         "sigma_mean": 0.05, "sigma_std": 0.002, "sigma_ci_low_mean": 0.046,
        ...                         "sigma_ci_high_mean": 0.055, "cka_diagonal_mean": 0.9,
        ...                         "cka_diagonal_std": 0.01, "phi_cnf": 2, "train_seconds_mean": 30.0}]))
        | method | accuracy | sigma (train) | sigma CI | CKA diagonal | phi_cnf | training s |
        |---|---|---|---|---|---|---|
        | vkd | 0.750 ± 0.010 | 0.0500 ± 0.0020 | [0.0460, 0.0550] | 0.900 ± 0.010 | 2/3 | 30 |
    """
    lines = ["| method | accuracy | sigma (train) | sigma CI | CKA diagonal | phi_cnf | training s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f} "
                     f"| {r['sigma_mean']:.4f} ± {r['sigma_std']:.4f} "
                     f"| [{r['sigma_ci_low_mean']:.4f}, {r['sigma_ci_high_mean']:.4f}] "
                     f"| {r['cka_diagonal_mean']:.3f} ± {r['cka_diagonal_std']:.3f} "
                     f"| {r['phi_cnf']}/{r['seeds']} | {r['train_seconds_mean']:.0f} |")
    return "\n".join(lines)
