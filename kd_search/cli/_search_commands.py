"""Commands over a search's life: ``launch``, ``confirm``, ``status``, ``pareto``, ``export``,
``ui``, ``report`` and ``demo``."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click
from rich.console import Console

from kd_search.cli._main import console, main
from kd_search.cli._options import (
    driver_grace_option,
    following,
    kappa_option,
    location_args,
    location_options,
    progress_bar,
    ray_address_option,
    self_command,
    tracking_uri_option,
    workdir_option,
)
from kd_search.cli._render import (
    driver_text,
    format_value,
    interval_text,
    print_front,
    print_launch_summary,
    trial_events,
    word_table,
)
from kd_search.errors import SearchError, TrackingError
from kd_search.study_file import load_study
from kd_search.urls import display_url


@main.command()
@click.argument("study_file", metavar="STUDY")
@click.option("--trials", type=click.IntRange(min=1), default=None, help="Finished trials wanted [default: search.trials].")
@ray_address_option
@driver_grace_option
@location_options
def launch(study_file: str, trials: int | None, ray_address: str | None, workdir: str | None, storage: str | None,
           tracking_uri: str | None, driver_grace: float | None = None) -> None:
    """Run a study (or resume it: finished trials are kept) and print its Pareto front.

    While another launch (or confirm) of the study runs, it refuses with exit 2 and says
    where that driver runs; a driver unseen for --driver-grace seconds is taken as dead
    and its RUNNING trials are adopted.
    """
    from kd_search import api
    from kd_search.engine.compatibility import check_models

    study = load_study(study_file)
    check_models(study)  # before Ray or MLflow is imported: refused at once
    from kd_search.service import search

    with following(study.name, search.Locations.resolve(study, workdir, storage, tracking_uri)):
        # Every refusal before the live view, as one plain line.
        locations = api.check_launch(study, workdir=workdir, storage=storage, tracking_uri=tracking_uri,
                                     driver_grace=driver_grace)
        with progress_bar() as progress, trial_events(console) as on_event:
            summary = search.launch(study, locations=locations, trials=trials, progress=progress, on_event=on_event,
                                    ray_address=ray_address, driver_grace=driver_grace)
    print_launch_summary(summary, locations)


@main.command()
@click.argument("name")
@click.option("--top", type=click.IntRange(min=0), default=None,
              help="Confirm the K most accurate trials with sigma <= kappa [default: the study's search.confirm.top].")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Further training seeds per trial [default: the study's search.confirm.seeds].")
@ray_address_option
@driver_grace_option
@location_options
def confirm(name: str, top: int | None, seeds: int | None, ray_address: str | None, workdir: str | None,
            storage: str | None, tracking_uri: str | None, driver_grace: float | None = None) -> None:
    """Train a study's best trials again with further seeds: does sigma <= kappa hold on other seeds?

    Also confirms every finished trial whose sigma interval straddles kappa, but none that a
    certified trial dominates. The study file is the one stored with the study;
    confirmations already stored are kept.
    """
    from kd_search import api
    from kd_search.service import search

    study, locations = api.stored_study_locations(name, workdir, storage, tracking_uri)
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
             *("-" if record.get(key) is None else format_value(record[key]) for key in (metric_name, "sigma", "kappa")))
            for record in records]
    Console().print(word_table(f"{name}: confirmations", ("trial", "seed", "state", metric_name, "sigma", "kappa"),
                               rows))
    for record in records:
        if record["state"] == "FAIL":
            click.echo(f"trial {record['trial']} seed {record['seed']} failed: {record.get('failure', '')}")


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
                     certified_text, best_text, driver_text(search.read_lease(locations.storage, study_name))))
    Console().print(word_table(f"studies in {display_url(locations.storage)}", columns, rows,
                               left=("study", "best certified", "best feasible", "driver")))


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
    from kd_search import api

    summary = api.summary(name, kappa=kappa, workdir=workdir, storage=storage)
    if as_json:
        click.echo(json.dumps([t.as_dict(summary.metric_name) for t in summary.front]))
        return
    at = "" if kappa is None else f" at kappa {float(kappa):g}"
    print_front(summary, f"{name}: feasible Pareto front{at}")


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
    from kd_search import api

    exported = api.export(name, out_dir, trial=number, best=best, allow_unconfirmed=allow_unconfirmed, kappa=kappa,
                          register=model_name, workdir=workdir, storage=storage, tracking_uri=tracking_uri)
    chosen = exported.record
    click.echo(f"exported trial {chosen.number} ({chosen.metric_name} {chosen.metric:.4f}, "
               f"sigma {interval_text(chosen.sigma, chosen.sigma_ci_low, chosen.sigma_ci_high)}, {exported.why}) "
               f"to {exported.path}")
    if exported.registered:
        model, version, alias = exported.registered
        click.echo(f"registered {model} version {version} (alias @{alias})")


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
    click.echo(f"dashboard: {self_command()} report {shlex.quote(study.name)} --out {page}"
               f"{location_args(locations)}")
