"""Commands on one study file, no search: ``validate``, ``studies``, ``schema``, ``audit``,
``teacher``, ``distill`` and ``compare``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from rich.console import Console

from kd_search.cli._main import console, main
from kd_search.cli._options import (
    parse_overrides,
    progress_bar,
    tracking_uri_option,
    workdir_option,
)
from kd_search.cli._render import print_metrics, word_table
from kd_search.errors import StudyFileError
from kd_search.study_file import (
    is_comparison_file,
    load_comparison,
    load_study,
    resolve_study_file,
    shipped_studies,
    shipped_study_dir,
    study_json_schema,
)
from kd_search.urls import display_url


@main.command()
@click.argument("study_file", metavar="STUDY")
def validate(study_file: str) -> None:
    """Check a study (or comparison) file; print what it holds and exit 0, or one error line and exit 2.

    Local data files (task.source files) are read too: their columns and labels are checked.
    """
    if is_comparison_file(study_file):
        comparison, studies = load_comparison(study_file)
        for method, study in studies.items():
            _check_models(study, f"{study_file}: methods.{method}")
        click.echo(f"ok: {study_file} (comparison of {len(studies)} methods x {len(comparison.seeds)} seeds "
                   f"on {comparison.study})")
        return
    study = load_study(study_file)
    classes = ""
    if study.task.source == "files":  # local data is read and its labels checked (GLUE would need the hub)
        from kd_search.engine.data import load_examples

        examples = load_examples(study.task)
        names = examples.label_names or [str(i) for i in range(examples.num_labels)]
        classes = (f"; {len(examples.train)} train / {len(examples.eval)} eval examples, "
                   f"{examples.num_labels} classes: {', '.join(names)}")
    checked = _check_models(study, str(resolve_study_file(study_file)))
    click.echo(f"ok: {study_file} (study {study.name!r}, {study.search.trials} trials, {checked}{classes})")


def _check_models(study, where: str) -> str:
    """The study checked against its models' configurations (never downloaded here): what was checked."""
    from kd_search.engine.compatibility import ConfigNotCached, check_models

    try:
        return f"{len(check_models(study, download=False).pairs)} mapped layers"
    except ConfigNotCached as error:  # launch fetches the configuration and checks it before any work
        return f"models not checked: {str(error).split(': ', 1)[1]}"
    except StudyFileError as error:
        raise StudyFileError(f"{where}: {error}") from None


@main.command()
def studies() -> None:
    """List the studies shipped with kd-search: any command taking a STUDY accepts these names."""
    rows = []
    for name in shipped_studies():
        if is_comparison_file(name):
            comparison, methods = load_comparison(name)
            size, description = f"{len(methods)} methods x {len(comparison.seeds)} seeds", comparison.description
        else:
            study = load_study(name)
            size, description = str(study.search.trials), study.description
        rows.append((name, size, description.strip().split("\n")[0]))
    Console().print(word_table(f"shipped studies (files in {shipped_study_dir()})", ("name", "trials", "description"),
                               rows, left=("name", "description")))


@main.command()
def schema() -> None:
    """Print the JSON schema of the study file (for editors and the YAML language server)."""
    click.echo(study_json_schema())


@main.command()
@click.option("--teacher", "teacher_file", default=None, help="Teacher prediction file (CSV/JSONL/Parquet).")
@click.option("--student", "student_file", default=None, help="Student prediction file (CSV/JSONL/Parquet).")
@click.option("--teacher-model", default=None, help="Teacher model, a local directory or a hub id (with --study).")
@click.option("--student-model", default=None, help="Student model, a local directory or a hub id (with --study).")
@click.option("--study", "study_file", default=None, type=click.Path(dir_okay=False),
              help="Study whose task and confidence split the models are run on, and whose settings are the defaults.")
@click.option("--kappa", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Check phi_cnf: sigma <= kappa [default: the study's kappa when it is a number].")
@click.option("--convention", type=click.Choice(["auto", "p0", "true_class"]), default=None,
              help="delta on the class-0 probability (binary, the paper's) or on the true class "
                   "[default: the study's, else auto].")
@click.option("--level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Level of the bootstrap intervals [default: the study's, else 0.95].")
@click.option("--resamples", type=click.IntRange(min=100), default=None,
              help="Bootstrap resamples [default: the study's, else 1000].")
@click.option("--seed", type=int, default=None, help="Seed of the bootstrap resamples [default: the study's, else 0].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on the last line.")
def audit(teacher_file: str | None, student_file: str | None, teacher_model: str | None, student_model: str | None,
          study_file: str | None, kappa: float | None, convention: str | None, level: float | None,
          resamples: int | None, seed: int | None, as_json: bool) -> None:
    """Does a student preserve its teacher's confidence? Audit two prediction files, or run two models
    on a study's confidence split."""
    from kd_search import api

    report = api.audit(teacher_file=teacher_file, student_file=student_file, teacher_model=teacher_model,
                       student_model=student_model, study=study_file, kappa=kappa, convention=convention,
                       level=level, resamples=resamples, seed=seed)
    if teacher_model:
        title = f"Confidence audit: {student_model} vs teacher {teacher_model} ({report['split']} split)"
    else:
        title = f"Confidence audit: {Path(student_file).name} vs teacher {Path(teacher_file).name}"  # type: ignore[arg-type]
    if as_json:
        click.echo(json.dumps(report))
        return
    print_metrics(title, report)
    if "kappa" in report:
        verdict = "holds" if report["phi_cnf"] else "does NOT hold"
        click.echo(f"phi_cnf {verdict}: sigma = {report['sigma']:.4f} "
                   f"[{report['sigma_ci_low']:.4f}, {report['sigma_ci_high']:.4f}] vs kappa = {report['kappa']:g}")


@main.command()
@click.argument("study_file", metavar="STUDY")
@workdir_option
def teacher(study_file: str, workdir: str | None) -> None:
    """Prepare the study's teacher once (fine-tune and store it when the study asks)."""
    from kd_search.engine.trial import prepare
    from kd_search.service.search import Locations

    study = load_study(study_file)
    with progress_bar() as progress:
        setup = prepare(study, Locations.resolve(study, workdir).workdir, progress)
    info = setup.teacher_info
    reused = "reused" if info.get("reused") else "fine-tuned"
    accuracy = f", eval accuracy {info['eval_accuracy']:.4f}" if "eval_accuracy" in info else ""
    click.echo(f"teacher: {setup.teacher_path} ({reused}{accuracy})")


@main.command()
@click.argument("study_file", metavar="STUDY")
@click.option("--set", "overrides", multiple=True, metavar="NAME=VALUE",
              help="Override a hyperparameter (alpha, temperature, layer_weight_2, epochs_prediction, prediction_loss=kl, ...).")
@click.option("--out", "out_dir", default=None, help="Save the student here [default: <workdir>/distill/<study>/student].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object of metrics on the last line.")
@workdir_option
def distill(study_file: str, overrides: tuple[str, ...], out_dir: str | None, as_json: bool, workdir: str | None) -> None:
    """Run one distillation trial with the study's default (or overridden) hyperparameters."""
    from kd_search import api

    study = load_study(study_file)
    with progress_bar() as progress:
        distilled = api.distill(study, parse_overrides(overrides), out_dir=out_dir, workdir=workdir, progress=progress)
    metrics, out = distilled.metrics, distilled.student_dir
    metric = study.objectives.task_metric
    shown = dict.fromkeys(("accuracy", metric, f"{metric}_ci_low", f"{metric}_ci_high", "teacher_accuracy", "sigma",
                           "sigma_ci_low", "sigma_ci_high", "kappa", "phi_cnf", "ece", "agreement", "train_seconds"))
    summary = {k: metrics[k] for k in shown}
    if as_json:
        click.echo(json.dumps(metrics | {"student_dir": str(out)}))
        return
    print_metrics(f"distill {study.name}", summary)
    click.echo(f"student saved to {out}")


@main.command()
@click.argument("comparison_file", metavar="STUDY")
@tracking_uri_option
@workdir_option
def compare(comparison_file: str, tracking_uri: str | None, workdir: str | None) -> None:
    """Run each method of a comparison file once per seed; print accuracy, sigma and CKA.

    Each invocation is one MLflow parent run, compare-<file>-<time>, with a nested run per
    method and seed.
    """
    from kd_search.service import compare as comparing
    from kd_search.service.search import Locations
    from kd_search.service.tracking import StudyTracker, check_tracking_uri

    comparison, studies = load_comparison(comparison_file)
    locations = Locations.resolve(next(iter(studies.values())), workdir, tracking_uri=tracking_uri)
    check_tracking_uri(locations.tracking_uri)
    stem = Path(comparison_file).stem
    out = locations.workdir / "compare" / stem
    out.mkdir(parents=True, exist_ok=True)
    # Every invocation is its own parent run, so there is no later run to replay a backlog
    # into: writes MLflow never takes end in a one-line error, after the files are saved.
    tracker = StudyTracker(locations.tracking_uri, locations.experiment,
                           f"compare-{stem}-{time.strftime('%Y%m%d-%H%M%S')}",
                           artifact_root=locations.workdir / "mlartifacts")
    total = len(studies) * len(comparison.seeds)
    with progress_bar() as progress:
        def show(run) -> None:
            console.log(f"{run.method} seed {run.seed}: accuracy {run.accuracy:.3f}, sigma {run.sigma:.4f} "
                        f"[{run.sigma_ci_low:.4f}, {run.sigma_ci_high:.4f}], CKA diagonal {run.cka_diagonal:.3f}")

        runs = comparing.run_comparison(comparison, studies, locations.workdir, progress, on_run=show,
                                        tracker=tracker)
    rows = comparing.summarize_runs(runs)
    (out / "runs.json").write_text(json.dumps([r.as_dict() for r in runs], indent=2))
    (out / "summary.md").write_text(comparing.markdown_table(rows) + "\n")
    click.echo(comparing.markdown_table(rows))
    click.echo(f"{total} runs; saved to {out}")
    tracker.close()
    click.echo(f"MLflow: run {tracker.study_name} ({display_url(locations.tracking_uri)})")
