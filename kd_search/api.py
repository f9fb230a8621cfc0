"""kd-search from Python (a notebook, a script): the functions the command line calls.

Each takes what its command takes, as keyword arguments with the same defaults (the work
dir ``runs/``, its SQLite storage and MLflow store unless told otherwise), and returns
what the command prints, as Python objects. Heavy libraries are imported when a
function runs, so ``import kd_search`` stays quick.

Example:
    >>> import kd_search
    >>> summary = kd_search.launch("smoke", trials=4)  # doctest: +SKIP
    >>> [row["trial"] for row in kd_search.pareto("smoke")]  # doctest: +SKIP
    [1, 3]
    >>> kd_search.export("smoke", "my-student", best=True, allow_unconfirmed=True).trial  # doctest: +SKIP
    1
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kd_search.engine.spec import Study
from kd_search.errors import OptionsError, SearchError, TrackingError
from kd_search.study_file import load_study

if TYPE_CHECKING:
    from kd_search.service.search import Locations, StudySummary, TrialRecord

# (message, done or None when unknown, total): what the CLI's progress bar shows.
Progress = Callable[[str, int | None, int], None]


def _study(study: str | Path | Study) -> Study:
    return study if isinstance(study, Study) else load_study(study)


def check_launch(study: Study, *, workdir: str | None = None, storage: str | None = None,
                 tracking_uri: str | None = None, driver_grace: float | None = None) -> Locations:
    """Every check a launch makes before any work, and the study's locations: the study
    against its models' ``config.json``, the storage and MLflow reachable, no live driver.

    Example:
        >>> locations = check_launch(load_study("smoke"))  # doctest: +SKIP
    """
    from kd_search.engine.compatibility import check_models

    check_models(study)  # before Ray or MLflow is imported: refused at once
    from kd_search.service import search

    locations = search.Locations.resolve(study, workdir, storage, tracking_uri)
    search.check_locations(locations)
    search.check_no_live_driver(locations.storage, study.name, driver_grace)
    return locations


def launch(study: str | Path | Study, *, trials: int | None = None, workdir: str | None = None,
           storage: str | None = None, tracking_uri: str | None = None, ray_address: str | None = None,
           driver_grace: float | None = None, progress: Progress | None = None,
           on_event: Callable[[str, int | None, int], None] | None = None) -> StudySummary:
    """Run a study (a file, a shipped name or a ``Study``), or resume it, and return its summary.

    Refused (``DriverRunning``) while another driver of the study is alive.

    Example:
        >>> summary = launch("smoke", trials=4)  # doctest: +SKIP
        >>> [t.number for t in summary.front]  # doctest: +SKIP
        [1, 3]
    """
    from kd_search.service import search

    study = _study(study)
    locations = check_launch(study, workdir=workdir, storage=storage, tracking_uri=tracking_uri,
                             driver_grace=driver_grace)
    return search.launch(study, locations=locations, trials=trials, progress=progress, on_event=on_event,
                         ray_address=ray_address, driver_grace=driver_grace)


def stored_study_locations(name: str, workdir: str | None = None, storage: str | None = None,
                           tracking_uri: str | None = None) -> tuple[Study, Locations]:
    """The study file stored with study ``name`` and its locations (work dir, storage, MLflow).

    Example:
        >>> study, locations = stored_study_locations("smoke")  # doctest: +SKIP
    """
    from kd_search.service import search

    found_in = search.Locations.resolve(None, workdir, storage, tracking_uri)
    study = search.stored_study(search.load_optuna_study(name, found_in.storage))
    return study, search.Locations.resolve(study, workdir, found_in.storage, tracking_uri)


def confirm(name: str, *, top: int | None = None, seeds: int | None = None, workdir: str | None = None,
            storage: str | None = None, tracking_uri: str | None = None, ray_address: str | None = None,
            driver_grace: float | None = None, progress: Progress | None = None,
            on_event: Callable[[str, int | None, int], None] | None = None) -> list[dict[str, Any]]:
    """Train the study's best trials again on further seeds; one record per (trial, seed).

    Example:
        >>> [(r["trial"], r["seed"], r["state"]) for r in confirm("smoke", top=1, seeds=2)]  # doctest: +SKIP
        [(1, 1000, 'COMPLETE'), (1, 2000, 'COMPLETE')]
    """
    from kd_search.service import search

    study, locations = stored_study_locations(name, workdir, storage, tracking_uri)
    search.check_locations(locations)
    search.check_no_live_driver(locations.storage, name, driver_grace)
    return search.confirm(study, locations=locations, top=top, seeds=seeds, progress=progress, on_event=on_event,
                          ray_address=ray_address, driver_grace=driver_grace)


def summary(name: str, *, kappa: float | str | None = None, workdir: str | None = None,
            storage: str | None = None) -> StudySummary:
    """Every trial of a stored study with its verdict, and the front; at ``kappa`` if given.

    Example:
        >>> summary("smoke", kappa=0.1).counts()  # doctest: +SKIP
        {'COMPLETE': 4}
    """
    from kd_search.service import search

    threshold = None if kappa is None else search.check_kappa(str(kappa))
    locations = search.Locations.resolve(None, workdir, storage)
    found = search.summarize(search.load_optuna_study(name, locations.storage))
    return found if threshold is None else search.at_kappa(found, threshold)


def pareto(name: str, *, kappa: float | str | None = None, workdir: str | None = None,
           storage: str | None = None) -> list[dict[str, Any]]:
    """The feasible Pareto front as ``kd-search pareto --json`` gives it: one dict per trial
    (``pandas.DataFrame(pareto(...))`` makes it a table).

    Example:
        >>> [row["verdict"] for row in pareto("smoke")]  # doctest: +SKIP
        ['certified', 'unconfirmed']
    """
    found = summary(name, kappa=kappa, workdir=workdir, storage=storage)
    return [t.as_dict(found.metric_name) for t in found.front]


@dataclass(frozen=True)
class Exported:
    """A student written by :func:`export`: where, which trial, why that one, and the MLflow
    registry version when it was registered."""

    path: Path
    trial: int
    record: TrialRecord
    why: str
    registered: tuple[str, int, str] | None = None  # (model name, version, alias)


def _registry_alias(chosen: TrialRecord, best: bool) -> str:
    # @certified only ever points at a certified student; an uncertified --best pick says so.
    if chosen.certified:
        return "certified"
    return "best-unconfirmed" if best else f"trial-{chosen.number}"


def export(name: str, out_dir: str | Path, *, trial: int | None = None, best: bool = False,
           allow_unconfirmed: bool = False, kappa: float | str | None = None, register: str | None = None,
           workdir: str | None = None, storage: str | None = None, tracking_uri: str | None = None) -> Exported:
    """Write a trial's student (``trial=N``) or the most accurate certified one (``best=True``)
    as a Hugging Face directory with a model card; ``register`` also logs it to MLflow's
    model registry under that name.

    Example:
        >>> export("smoke", "my-student", best=True, allow_unconfirmed=True).path  # doctest: +SKIP
        PosixPath('my-student')
    """
    from kd_search.service import search, tracking
    from kd_search.service.export import export_student, exported_metrics, model_card

    if (trial is None) == (not best):
        raise SearchError("give exactly one of --trial N and --best")
    threshold = None if kappa is None else search.check_kappa(str(kappa))
    locations = search.Locations.resolve(None, workdir, storage, tracking_uri)
    optuna_study = search.load_optuna_study(name, locations.storage)
    found = search.summarize(optuna_study)
    if threshold is not None:
        found = search.at_kappa(found, threshold)
    chosen = search.select_trial(found, trial, best, allow_unconfirmed)
    source = search.kept_student(locations, name, chosen.number)
    spec = optuna_study.user_attrs.get(search.SPEC_ATTR, {"name": name})
    search_seed = spec.get("distillation", {}).get("seed")
    metrics = exported_metrics(chosen, spec.get("seed") if search_seed is None else search_seed)
    out = export_student(source, out_dir, model_card(spec, chosen.params, metrics),
                         metrics | {"params": chosen.params, "study": name},
                         optuna_study.user_attrs.get(search.LABELS_ATTR))
    if best:
        # The rule ranks by the mean over seeds, so a trial less accurate on its search seed may win.
        why = (f"the most accurate certified trial: {chosen.metric_name} {chosen.metric_mean:.4f} on average over "
               f"its {chosen.seeds} seeds") if chosen.certified else \
            f"NOT certified: {search.verdict_text(chosen)}; the most accurate with sigma <= kappa on its search seed"
    else:
        why = search.verdict_text(chosen)
    if threshold is not None:
        why += f", at kappa {threshold:g}"
    registered = None
    if register:
        tracker = tracking.StudyTracker(locations.tracking_uri, locations.experiment, name, create=False)
        run_id = tracker.trial_run_id(chosen.number)
        if run_id is None:
            raise TrackingError(f"{locations.tracking_uri}: no MLflow run for trial {chosen.number} of {name!r}")
        alias = _registry_alias(chosen, best)
        registered = (register, tracking.register_student(locations.tracking_uri, run_id, out, register, alias), alias)
    return Exported(Path(out), chosen.number, chosen, why, registered)


@dataclass(frozen=True)
class Distilled:
    """One trial run by :func:`distill`: its metrics, the hyperparameters it trained with,
    and where its student was saved."""

    metrics: dict[str, Any]
    params: dict[str, Any]
    student_dir: Path


def distill(study: str | Path | Study, overrides: Mapping[str, Any] | None = None, *, out_dir: str | Path | None = None,
            workdir: str | None = None, progress: Progress | None = None) -> Distilled:
    """Train one student with the study's hyperparameters (or ``overrides``), no search, and save it.

    Example:
        >>> distilled = distill("smoke", {"alpha": 0.3})  # doctest: +SKIP
        >>> distilled.metrics["phi_cnf"]  # doctest: +SKIP
        True
    """
    from kd_search.engine.trial import hyperparameters, prepare, run_trial
    from kd_search.service.export import model_card, save_student
    from kd_search.service.search import Locations

    study = _study(study)
    root = Locations.resolve(study, workdir).workdir
    setup = prepare(study, root, progress)
    params = hyperparameters(setup, dict(overrides or {}))
    result = run_trial(study, params, setup=setup, progress=progress)
    out = Path(out_dir) if out_dir else root / "distill" / study.name / "student"
    card = model_card(study.model_dump(mode="json"), params, result.metrics)
    save_student(result.student, result.tokenizer, out, card, result.metrics | {"params": params})
    return Distilled(result.metrics, params, out)


def audit(*, teacher_file: str | None = None, student_file: str | None = None, teacher_model: str | None = None,
          student_model: str | None = None, study: str | Path | Study | None = None, kappa: float | None = None,
          convention: str | None = None, level: float | None = None, resamples: int | None = None,
          seed: int | None = None) -> dict[str, Any]:
    """Does a student preserve its teacher's confidence? The report of two prediction files,
    or of two models run on a study's confidence split.

    Example:
        >>> audit(teacher_file="teacher.csv", student_file="student.csv", kappa=0.05)["phi_cnf"]  # doctest: +SKIP
        True
    """
    files, models = (teacher_file, student_file), (teacher_model, student_model, study)
    if not (all(files) and not any(models) or all(models) and not any(files)):
        raise OptionsError(
            "give either --teacher and --student (prediction files) or --teacher-model, --student-model and --study")
    bootstrap = {name: value for name, value in (("level", level), ("resamples", resamples), ("seed", seed))
                 if value is not None}
    if all(models):
        from kd_search.engine.model_audit import audit_models

        return audit_models(teacher_model, student_model, _study(study), kappa, convention,  # type: ignore[arg-type]
                            **bootstrap)
    from kd_search.engine.audit import audit_predictions

    return audit_predictions(teacher_file, student_file, kappa, convention or "auto", **bootstrap)  # type: ignore[arg-type]
