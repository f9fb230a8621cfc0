"""The ``kd-search`` command line: parses options, calls the layers below, prints.

Every user error (a bad study file, a bad prediction file, ...) ends as one line on
stderr starting with ``error:`` and exit code 2, never as a traceback.

Heavy libraries (torch, transformers, datasets, Ray, Optuna, MLflow, pandas) and the
modules built on them are imported inside the commands that use them, so ``--help``,
``validate`` and ``schema`` answer at once.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from kd_search.engine.spec import (
    is_comparison_file,
    load_comparison,
    load_study,
    resolve_study_file,
    shipped_studies,
    shipped_study_dir,
    study_json_schema,
)
from kd_search.errors import KdSearchError, OptionsError, SearchError, StudyFileError, TrackingError
from kd_search.terminal_tables import word_table
from kd_search.urls import display_url

if TYPE_CHECKING:
    from kd_search.service.search import Locations

console = Console(stderr=True, log_path=False)


class _Commands(click.Group):
    """A click group that turns user errors into one line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KdSearchError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(2)


def _quiet_progress_bars() -> None:
    # Our own rich progress replaces the libraries' tqdm bars, which would interleave
    # with the JSON line that --json promises on stdout. The libraries read these
    # variables when imported, which the commands do only after this; transformers' bars
    # follow the hub's variable.
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # A program that runs the commands in-process may have imported them already.
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    if "transformers.utils.logging" in sys.modules:
        sys.modules["transformers.utils.logging"].disable_progress_bar()


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kd-search")
def main() -> None:
    """Hyperparameter search for confidence-aware knowledge distillation.

    STUDY is a study file or the name of a study shipped with kd-search (see `kd-search studies`).
    """
    _quiet_progress_bars()
    for name in ("mlflow", "optuna", "alembic"):  # database migrations and study creation are not news
        logging.getLogger(name).setLevel(logging.WARNING)


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


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _print_metrics(title: str, metrics: dict[str, Any]) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, _format(value))
    Console().print(table)


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
    files, models = (teacher_file, student_file), (teacher_model, student_model, study_file)
    if not (all(files) and not any(models) or all(models) and not any(files)):
        raise OptionsError(
            "give either --teacher and --student (prediction files) or --teacher-model, --student-model and --study")
    bootstrap = {name: value for name, value in (("level", level), ("resamples", resamples), ("seed", seed))
                 if value is not None}
    from kd_search.engine import audit as audit_module

    if all(models):
        from kd_search.engine.model_audit import audit_models

        report = audit_models(teacher_model, student_model, load_study(study_file), kappa, convention,  # type: ignore[arg-type]
                              **bootstrap)
        title = f"Confidence audit: {student_model} vs teacher {teacher_model} ({report['split']} split)"
    else:
        report = audit_module.audit_predictions(teacher_file, student_file, kappa, convention or "auto",  # type: ignore[arg-type]
                                                **bootstrap)
        title = f"Confidence audit: {Path(student_file).name} vs teacher {Path(teacher_file).name}"
    if as_json:
        click.echo(json.dumps(report))
        return
    _print_metrics(title, report)
    if "kappa" in report:
        verdict = "holds" if report["phi_cnf"] else "does NOT hold"
        click.echo(f"phi_cnf {verdict}: sigma = {report['sigma']:.4f} "
                   f"[{report['sigma_ci_low']:.4f}, {report['sigma_ci_high']:.4f}] vs kappa = {report['kappa']:g}")


def workdir_option(function):
    return click.option("--workdir", envvar="KD_SEARCH_WORKDIR", default=None,
                        help="Where studies keep teachers, caches, storage and results "
                             "[default: the study file's tracking.workdir, else runs; env KD_SEARCH_WORKDIR].")(function)


def tracking_uri_option(function):
    return click.option("--tracking-uri", envvar=["KD_SEARCH_TRACKING_URI", "MLFLOW_TRACKING_URI"], default=None,
                        help="MLflow tracking URI [default: sqlite:///<workdir>/mlflow.db; "
                             "env KD_SEARCH_TRACKING_URI or MLFLOW_TRACKING_URI].")(function)


def location_options(function):
    """--workdir, --storage and --tracking-uri: the same on every command that reads or writes a study."""
    function = tracking_uri_option(function)
    function = click.option("--storage", envvar="KD_SEARCH_STORAGE", default=None,
                            help="Optuna storage URL, e.g. postgresql+psycopg://user@host/db "
                                 "[default: sqlite:///<workdir>/optuna.db; env KD_SEARCH_STORAGE].")(function)
    return workdir_option(function)


@contextmanager
def progress_bar():
    """A rich progress display; yields a callback(description, done, total)."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        tasks: dict[str, TaskID] = {}

        def update(description: str, done: int, total: int) -> None:
            if description not in tasks:
                tasks[description] = progress.add_task(description, total=total)
            progress.update(tasks[description], completed=done, total=total)

        yield update


def _parse_overrides(values: tuple[str, ...]) -> dict[str, str]:
    # The values stay text: hyperparameters() knows which name takes a number.
    overrides = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise StudyFileError(f"--set {item!r}: expected name=value")
        overrides[name.strip()] = value.strip()
    return overrides


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
    from kd_search.engine.trial import hyperparameters, prepare, run_trial
    from kd_search.service.export import model_card, save_student
    from kd_search.service.search import Locations

    study = load_study(study_file)
    root = Locations.resolve(study, workdir).workdir
    with progress_bar() as progress:
        setup = prepare(study, root, progress)
        params = hyperparameters(setup, _parse_overrides(overrides))
        result = run_trial(study, params, setup=setup, progress=progress)
    metrics = result.metrics
    out = Path(out_dir) if out_dir else root / "distill" / study.name / "student"
    card = model_card(study.model_dump(mode="json"), params, metrics)
    save_student(result.student, result.tokenizer, out, card, metrics | {"params": params})
    metric = study.objectives.task_metric
    shown = dict.fromkeys(("accuracy", metric, f"{metric}_ci_low", f"{metric}_ci_high", "teacher_accuracy", "sigma",
                           "sigma_ci_low", "sigma_ci_high", "kappa", "phi_cnf", "ece", "agreement", "train_seconds"))
    summary = {k: metrics[k] for k in shown}
    if as_json:
        click.echo(json.dumps(metrics | {"student_dir": str(out)}))
        return
    _print_metrics(f"distill {study.name}", summary)
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


def _interval(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" + (f" [{low:.4f}, {high:.4f}]" if low is not None and high is not None else "")


def _spread(mean: float | None, std: float | None) -> str:
    return f"{mean:.4f} ± {std:.4f}" if mean is not None and std is not None else "-"


def _print_front(summary, title: str) -> None:
    """The front as a table, then each front trial's parameters on lines of their own: in
    a table column they were cut to a few letters on an 80-column terminal."""
    from kd_search.service.search import verdict_text

    columns = ("trial", summary.metric_name, "sigma [95% CI]", "kappa", "seeds",
               f"{summary.metric_name} / sigma mean ± sd", "verdict")
    rows = [(str(t.number), f"{t.metric:.4f}", _interval(t.sigma, t.sigma_ci_low, t.sigma_ci_high), f"{t.kappa:g}",
             str(t.seeds), "-" if t.seeds < 2 else
             f"{_spread(t.metric_mean, t.metric_std)} / {_spread(t.sigma_mean, t.sigma_std)}", verdict_text(t))
            for t in summary.front]
    console = Console()
    console.print(word_table(title, columns, rows, left=("verdict",), console=console))
    for t in summary.front:
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(t.params.items()))
        console.print(f"trial {t.number}: {params}", markup=False, highlight=False)


def driver_grace_option(function):
    return click.option("--driver-grace", type=click.FloatRange(min=1), envvar="KD_SEARCH_DRIVER_GRACE", default=None,
                        help="Seconds a study's driver may go unseen before another launch takes it as dead and "
                             "adopts its RUNNING trials [default: 60; env KD_SEARCH_DRIVER_GRACE].")(function)


@contextmanager
def following(name: str, locations: Locations):
    """Refusals by a live driver name the command that follows it, with this command's locations."""
    from kd_search.service.search import DriverRunning

    try:
        yield
    except DriverRunning as running:
        follow = f"{_self_command()} status {shlex.quote(name)}{_location_args(locations)}"
        raise DriverRunning(running.lease, running.grace, follow) from None


@main.command()
@click.argument("study_file", metavar="STUDY")
@click.option("--trials", type=click.IntRange(min=1), default=None, help="Finished trials wanted [default: search.trials].")
@click.option("--ray-address", envvar="RAY_ADDRESS", default=None,
              help="Join a running Ray cluster (e.g. auto) [default: start a local one of its own, even beside a "
                   "running cluster; env RAY_ADDRESS].")
@driver_grace_option
@location_options
def launch(study_file: str, trials: int | None, ray_address: str | None, workdir: str | None, storage: str | None,
           tracking_uri: str | None, driver_grace: float | None = None) -> None:
    """Run a study (or resume it: finished trials are kept) and print its Pareto front.

    While another launch (or confirm) of the study runs, it refuses with exit 2 and says
    where that driver runs; a driver unseen for --driver-grace seconds is taken as dead
    and its RUNNING trials are adopted.
    """
    from kd_search.engine.compatibility import check_models

    study = load_study(study_file)
    check_models(study)  # before Ray or MLflow is imported: refused at once
    from kd_search.service import search

    locations = search.Locations.resolve(study, workdir, storage, tracking_uri)
    search.check_locations(locations)  # before the live view, so a bad URL is one plain line
    with following(study.name, locations):
        search.check_no_live_driver(locations.storage, study.name, driver_grace)  # one plain line, before the live view
        with progress_bar() as progress, trial_events(console) as on_event:
            summary = search.launch(study, locations=locations, trials=trials, progress=progress, on_event=on_event,
                                    ray_address=ray_address, driver_grace=driver_grace)
    _print_launch_summary(summary, locations)


@main.command()
@click.argument("name")
@click.option("--top", type=click.IntRange(min=0), default=None,
              help="Confirm the K most accurate trials with sigma <= kappa [default: the study's search.confirm.top].")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Further training seeds per trial [default: the study's search.confirm.seeds].")
@click.option("--ray-address", envvar="RAY_ADDRESS", default=None,
              help="Join a running Ray cluster (e.g. auto) [default: start a local one of its own, even beside a "
                   "running cluster; env RAY_ADDRESS].")
@driver_grace_option
@location_options
def confirm(name: str, top: int | None, seeds: int | None, ray_address: str | None, workdir: str | None,
            storage: str | None, tracking_uri: str | None, driver_grace: float | None = None) -> None:
    """Train a study's best trials again with further seeds: does sigma <= kappa hold on other seeds?

    Also confirms every finished trial whose sigma interval straddles kappa. The study file
    is the one stored with the study; confirmations already stored are kept.
    """
    from kd_search.service import search

    found_in = search.Locations.resolve(None, workdir, storage, tracking_uri)
    study = search.stored_study(search.load_optuna_study(name, found_in.storage))
    locations = search.Locations.resolve(study, workdir, found_in.storage, tracking_uri)
    search.check_locations(locations)
    with following(name, locations):
        search.check_no_live_driver(locations.storage, name, driver_grace)
        with progress_bar() as progress, trial_events(console) as on_event:
            records = search.confirm(study, locations=locations, top=top, seeds=seeds, progress=progress,
                                     on_event=on_event, ray_address=ray_address, driver_grace=driver_grace)
    if not records:
        click.echo("no trial to confirm (none satisfies sigma <= kappa)")
        return
    metric_name = study.objectives.task_metric
    rows = [(str(record["trial"]), str(record["seed"]), record["state"],
             *("-" if record.get(key) is None else _format(record[key]) for key in (metric_name, "sigma", "kappa")))
            for record in records]
    Console().print(word_table(f"{name}: confirmations", ("trial", "seed", "state", metric_name, "sigma", "kappa"),
                               rows))
    for record in records:
        if record["state"] == "FAIL":
            click.echo(f"trial {record['trial']} seed {record['seed']} failed: {record.get('failure', '')}")


def _self_command() -> str:
    """How a shell runs this kd-search: its name when PATH finds this one, else its path
    (a virtualenv that was never activated), else this Python with ``-m kd_search.cli``."""
    script = Path(sys.executable).parent / "kd-search"
    found = shutil.which("kd-search")
    if found and script.is_file() and Path(found).resolve() == script.resolve():
        return "kd-search"
    if script.is_file():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m kd_search.cli"


def _location_args(locations: Locations, storage: bool = True) -> str:
    """The options that find these locations again, each only when it is not the default.
    Passwords stay masked: the command is printed, so give them again (or set the variables)."""
    from kd_search.service.search import Locations

    defaults = Locations.resolve(workdir=locations.workdir)
    args = [] if locations.workdir == Locations.resolve().workdir else ["--workdir", str(locations.workdir)]
    if storage and locations.storage != defaults.storage:
        args += ["--storage", display_url(locations.storage)]
    if locations.tracking_uri != defaults.tracking_uri:
        args += ["--tracking-uri", display_url(locations.tracking_uri)]
    return "".join(f" {shlex.quote(arg)}" for arg in args)


def _print_launch_summary(summary, locations: Locations) -> None:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(summary.counts().items()))
    _print_front(summary, f"{summary.name}: feasible Pareto front ({counts})")
    if not summary.front:
        click.echo("no trial satisfies phi_cnf (sigma <= kappa) yet")
    if summary.tracking_backlog:
        click.echo(f"warning: {summary.tracking_backlog} MLflow writes wait for the next launch of this study "
                   "(the tracking server was unreachable)", err=True)
    click.echo(f"browse: {_self_command()} ui {shlex.quote(summary.name)}{_location_args(locations, storage=False)}")


@contextmanager
def trial_events(out: Console):
    """A live bar of finished trials, with each trial event printed above it."""
    with Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=out, transient=True) as progress:
        task = progress.add_task("trials", total=None)

        def update(message: str, finished: int | None, target: int) -> None:
            if finished is not None:
                progress.update(task, completed=finished, total=target)
            progress.console.log(message)

        yield update


@main.command()
@click.argument("name", required=False)
@location_options
def status(name: str | None, workdir: str | None, storage: str | None, tracking_uri: str | None) -> None:
    """Studies in the storage: trials by state, verdicts, the best certified and best feasible trials,
    and the driver running each (where, and when it was last seen)."""
    import optuna

    from kd_search.service import search

    locations = search.Locations.resolve(None, workdir, storage, tracking_uri)
    names = [name] if name else sorted(
        s.study_name for s in optuna.get_all_study_summaries(search.open_storage(locations.storage),
                                                             include_best_trial=False))
    if not names:
        click.echo(f"no studies in {display_url(locations.storage)}")
        return
    columns = ("study", "trials", "complete", "pruned", "fail", "running", "front", "certified / unconfirmed / fails",
               "best certified", "best feasible", "driver")
    rows = []
    for study_name in names:
        summary = search.summarize(search.load_optuna_study(study_name, locations.storage))
        counts, verdicts = summary.counts(), summary.verdict_counts()
        best = summary.best_feasible()
        best_text = f"trial {best.number}: {summary.metric_name} {best.metric:.4f}, sigma {best.sigma:.4f}" if best else "-"
        certified = summary.best_certified()
        certified_text = (f"trial {certified.number}: {summary.metric_name} {certified.metric_mean:.4f}, "
                          f"sigma {certified.sigma_mean:.4f} over {certified.seeds} seeds") if certified else "-"
        rows.append((study_name, str(len(summary.trials)), *(str(counts.get(s, 0)) for s in
                     ("COMPLETE", "PRUNED", "FAIL", "RUNNING")), str(len(summary.front)),
                     " / ".join(str(verdicts.get(v, 0)) for v in ("certified", "unconfirmed", "fails")),
                     certified_text, best_text, _driver_text(search.read_lease(locations.storage, study_name))))
    Console().print(word_table(f"studies in {display_url(locations.storage)}", columns, rows,
                               left=("study", "best certified", "best feasible", "driver")))


def kappa_option(function):
    # Text, parsed by check_kappa: a bad value is one line and exit 2, not click's usage block.
    return click.option("--kappa", "kappa", default=None, metavar="K",
                        help="Judge every trial against sigma <= K instead of the study's kappa "
                             "(from the stored trials, nothing is trained again).")(function)


def _driver_text(lease) -> str:
    """Who drives a study now, for ``status``: a live driver, one taken as dead, or none."""
    from kd_search.service.search import driver_grace

    if lease is None:
        return "-"
    grace = driver_grace()
    if lease.is_dead(grace):
        return f"none (pid {lease.pid} on {lease.host} unseen for {lease.age:.0f} s > {grace:g} s: dead)"
    return f"running: {lease.describe()}"


@main.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the front as one JSON list on the last line.")
@kappa_option
@location_options
def pareto(name: str, as_json: bool, kappa: str | None, workdir: str | None, storage: str | None,
           tracking_uri: str | None) -> None:
    """The study's feasible Pareto front (task metric up, sigma down, sigma <= kappa).

    --kappa K recomputes each trial's phi_cnf, verdict over its seeds and the front at K.
    """
    from kd_search.service import search

    threshold = None if kappa is None else search.check_kappa(kappa)
    locations = search.Locations.resolve(None, workdir, storage, tracking_uri)
    summary = search.summarize(search.load_optuna_study(name, locations.storage))
    if threshold is not None:
        summary = search.at_kappa(summary, threshold)
    if as_json:
        click.echo(json.dumps([t.as_dict(summary.metric_name) for t in summary.front]))
        return
    at = "" if threshold is None else f" at kappa {threshold:g}"
    _print_front(summary, f"{name}: feasible Pareto front{at}")


def _registry_alias(chosen, best: bool) -> str:
    # @certified only ever points at a certified student; an uncertified --best pick says so.
    if chosen.certified:
        return "certified"
    return "best-unconfirmed" if best else f"trial-{chosen.number}"


@main.command()
@click.argument("name")
@click.option("--trial", "number", type=int, default=None, help="Export this trial.")
@click.option("--best", is_flag=True, help="Export the most accurate certified trial (phi_cnf certified over seeds).")
@click.option("--allow-unconfirmed", is_flag=True,
              help="With --best and no certified trial: export the most accurate trial satisfying phi_cnf "
                   "on its search seed.")
@click.option("--out", "out_dir", required=True, help="Directory to write the Hugging Face student to.")
@click.option("--register", "model_name", default=None,
              help="Also log the student to the MLflow model registry under this name.")
@kappa_option
@location_options
def export(name: str, number: int | None, best: bool, allow_unconfirmed: bool, out_dir: str, model_name: str | None,
           kappa: str | None, workdir: str | None, storage: str | None, tracking_uri: str | None) -> None:
    """Export a trial's student as a Hugging Face directory with a model card.

    --best picks the most accurate certified trial; where none is certified it stops
    (exit 2, nothing written) and says why, unless --allow-unconfirmed. With --kappa K the
    verdicts (and the card) are those at K.
    """
    from kd_search.service import search, tracking
    from kd_search.service.export import export_student, exported_metrics, model_card

    if (number is None) == (not best):
        raise SearchError("give exactly one of --trial N and --best")
    threshold = None if kappa is None else search.check_kappa(kappa)
    locations = search.Locations.resolve(None, workdir, storage, tracking_uri)
    optuna_study = search.load_optuna_study(name, locations.storage)
    summary = search.summarize(optuna_study)
    if threshold is not None:
        summary = search.at_kappa(summary, threshold)
    chosen = search.select_trial(summary, number, best, allow_unconfirmed)
    source = search.kept_student(locations, name, chosen.number)
    spec = optuna_study.user_attrs.get(search.SPEC_ATTR, {"name": name})
    search_seed = spec.get("distillation", {}).get("seed")
    metrics = exported_metrics(chosen, spec.get("seed") if search_seed is None else search_seed)
    out = export_student(source, out_dir, model_card(spec, chosen.params, metrics),
                         metrics | {"params": chosen.params, "study": name},
                         optuna_study.user_attrs.get(search.LABELS_ATTR))
    if best:
        why = "the most accurate certified trial" if chosen.certified else \
            f"NOT certified: {search.verdict_text(chosen)}; the most accurate with sigma <= kappa on its search seed"
    else:
        why = search.verdict_text(chosen)
    if threshold is not None:
        why += f", at kappa {threshold:g}"
    click.echo(f"exported trial {chosen.number} ({summary.metric_name} {chosen.metric:.4f}, "
               f"sigma {_interval(chosen.sigma, chosen.sigma_ci_low, chosen.sigma_ci_high)}, {why}) to {out}")
    if model_name:
        tracker = tracking.StudyTracker(locations.tracking_uri, locations.experiment, name, create=False)
        run_id = tracker.trial_run_id(chosen.number)
        if run_id is None:
            raise TrackingError(f"{locations.tracking_uri}: no MLflow run for trial {chosen.number} of {name!r}")
        alias = _registry_alias(chosen, best)
        version = tracking.register_student(locations.tracking_uri, run_id, out, model_name, alias)
        click.echo(f"registered {model_name} version {version} (alias @{alias})")


@main.command()
@click.argument("name", required=False)
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True,
              help="Port of the UI on 127.0.0.1.")
@tracking_uri_option
@workdir_option
def ui(name: str | None, port: int, tracking_uri: str | None, workdir: str | None) -> None:
    """Serve the MLflow UI of the studies' tracking store on 127.0.0.1 until Ctrl-C.

    With NAME, print the address of that study's feasible Pareto front in the UI.
    """
    from kd_search.service import tracking
    from kd_search.service import ui as mlflow_ui
    from kd_search.service.search import Locations

    locations = Locations.resolve(None, workdir, tracking_uri=tracking_uri)
    served = locations.tracking_uri.startswith(("http://", "https://"))  # a server has its own UI
    mlflow_ui.check_local_store(locations.tracking_uri)
    tracking.check_tracking_uri(locations.tracking_uri)
    if not served:
        mlflow_ui.check_port_free(port)
    host = locations.tracking_uri.rstrip("/") if served else f"http://{mlflow_ui.UI_HOST}:{port}"
    url = tracking.StudyTracker(locations.tracking_uri, locations.experiment, name, create=False).front_url(host) \
        if name else host
    if served:
        click.echo(f"{display_url(locations.tracking_uri)} serves its own UI; open: {display_url(url)}")
        return
    click.echo(f"MLflow UI of {display_url(locations.tracking_uri)}; stop it with Ctrl-C")
    click.echo(f"open: {url}")
    mlflow_ui.serve_ui(locations.tracking_uri, port, locations.workdir / "mlartifacts")


@main.command()
@click.argument("name")
@click.option("--out", "out_file", required=True, help="HTML file to write.")
@location_options
def report(name: str, out_file: str, workdir: str | None, storage: str | None, tracking_uri: str | None) -> None:
    """Write a self-contained HTML dashboard of the study (also logged on its MLflow run)."""
    from kd_search.service import search, tracking
    from kd_search.service.report import build_report

    locations = search.Locations.resolve(None, workdir, storage, tracking_uri)
    optuna_study = search.load_optuna_study(name, locations.storage)
    spec = optuna_study.user_attrs.get(search.SPEC_ATTR, {})
    confidence_spec = spec.get("objectives", {}).get("confidence", {})
    kappa = confidence_spec.get("kappa")
    out = build_report(optuna_study, search.summarize(optuna_study), locations, out_file,
                       description=spec.get("description", ""), kappa=kappa if isinstance(kappa, float) else None,
                       convention=confidence_spec.get("convention", "auto"),
                       confidence_split=confidence_spec.get("split", "train"))
    try:
        tracking.StudyTracker(locations.tracking_uri, locations.experiment, name, create=False).log_study_artifact(out)
    except TrackingError as error:
        click.echo(f"warning: report not logged to MLflow ({error})", err=True)
    click.echo(f"report written to {out}")


@main.command()
@click.option("--study", "study_file", default="demo", show_default=True,
              help="A study file or the name of a shipped study.")
@click.option("--out", "out_dir", default=None,
              help="Where the best certified student goes [default: <workdir>/demo-student].")
@location_options
@click.pass_context
def demo(ctx: click.Context, study_file: str, out_dir: str | None, workdir: str | None, storage: str | None,
         tracking_uri: str | None) -> None:
    """Run the embedded default study end to end: teacher, search, Pareto front, export of the
    best certified student (or one line saying why none was exported)."""
    from kd_search.service.search import Locations

    study = load_study(study_file)
    locations = Locations.resolve(study, workdir, storage, tracking_uri)
    options = {"workdir": workdir, "storage": storage, "tracking_uri": tracking_uri}
    ctx.invoke(launch, study_file=study_file, trials=None, ray_address=None, **options)
    out = out_dir or str(locations.workdir / f"{study.name}-student")
    try:
        ctx.invoke(export, name=study.name, number=None, best=True, allow_unconfirmed=False, out_dir=out,
                   model_name=None, kappa=None, **options)
    except SearchError as error:
        click.echo(f"nothing exported: {error}")
    else:
        model = Path(out).resolve()
        one_liner = (f"from transformers import pipeline; "
                     f"print(pipeline('text-classification', model={str(model)!r})('a gripping, funny film'))")
        click.echo(f"try it: {shlex.quote(sys.executable)} -c {shlex.quote(one_liner)}")
    page = shlex.quote(str(locations.workdir / f"{study.name}.html"))
    click.echo(f"dashboard: {_self_command()} report {shlex.quote(study.name)} --out {page}"
               f"{_location_args(locations)}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
