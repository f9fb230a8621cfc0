"""The Optuna side of a search: SQL storage, samplers, starting points and relaunch checks.

The search space itself (names, distributions, which recipe reads each) lives in
:mod:`kd_search.engine.hyperparameters`; a trial suggests only what its recipe reads.

How the samplers meet that conditional space (read in Optuna 5.0's code): ``GPSampler``
models the intersection of the parameters of every COMPLETE trial
(``IntersectionSearchSpace``), so once one prediction-only trial has finished, beta, gamma
and the layer weights leave the GP and are drawn by its independent sampler (random)
whenever a two-stage recipe reads them; the GP keeps modelling the recipe choice and the
parameters every recipe reads. Multivariate TPE supports a dynamic space only with
``group=True`` (one model per group of parameters that occur together), so kd-search
turns that on. Neither warns per parameter here: the space is conditional by design.

The driver is the only writer of the storage; readers (``status``, ``pareto``, ``export``,
``report``) open it here too. Nothing here needs Ray.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from kd_search.engine.hyperparameters import (
    default_hyperparameters,
    effective,
    search_distributions,
)
from kd_search.engine.spec import Study, parse_study
from kd_search.errors import SearchError
from kd_search.service.search._patient_storage import PatientRDBStorage
from kd_search.urls import display_url, error_reason

# The constraint set on every finished trial (feasible when <= 0), and the study attribute
# that holds the study file it was launched with.
CONSTRAINT = "sigma_minus_kappa"
SPEC_ATTR = "kd_search_spec"
# The study attribute holding the task's class names in class-number order (null where
# the data gives bare class numbers): exported students name their classes with it.
LABELS_ATTR = "kd_search_labels"
# The study attribute listing the feasible front's trial numbers, kept current by the driver.
# Readers of the storage that predate Optuna 5's constraints (optuna-dashboard 0.21 reads
# only the pre-5.0 ``constraints`` system attribute, which no public Optuna 5 API writes)
# see the front here, and each trial's feasibility in its ``phi_cnf`` and CONSTRAINT user attrs.
FRONT_ATTR = "kd_search_front"
# Each trial's per-epoch (epoch, task metric, sigma, kappa, prediction epoch), where the worker measured sigma:
# a relaunched driver replays them into the multi-objective scheduler's rungs.
EPOCH_SCORES_ATTR = "epoch_scores"
# Trials a killed driver left RUNNING and a later launch could not continue (budget met).
INTERRUPTED_ATTR = "kd_search_interrupted"
# A trial whose effective configuration (kd_search.engine.hyperparameters.config_key) an
# earlier trial already trains or trained: never trained, recorded PRUNED with the number
# of that trial, whose result it shares. PRUNED keeps it out of every front, Optuna's
# best_trials (optuna-dashboard's included) and the confirmations.
DUPLICATE_ATTR = "kd_search_duplicate_of"
# A sampler proposal set aside because an earlier trial trains its student, and the sampler
# asked again: told FAIL, never counted against the budget, never shown as a trial.
REDRAWN_ATTR = "kd_search_redrawn"
# The epoch a trial's scheduler stopped it at, stored before that epoch's checkpoint: a
# relaunch that finds the trial RUNNING (its driver died before the trial ended) records it
# PRUNED instead of training it on.
STOPPED_ATTR = "kd_search_stopped_at_epoch"
# Study-file fields that may change between launches of one study.
RELAUNCH_MUTABLE = {("search", "trials"), ("search", "concurrency"), ("search", "max_failures"),
                    ("search", "resources"), ("search", "scheduler"), ("search", "confirm"), ("tracking",), ("description",),
                    ("device",)}


def open_storage(url: str, *, patience_seconds: float = 0.0,
                 notify: Callable[[str], None] | None = None) -> optuna.storages.BaseStorage:
    """Optuna's SQL storage for ``url`` (SQLite by default, PostgreSQL on a cluster).

    Server databases get a pool that survives a long study: connections are checked
    before use (a restarted server costs no trial) and recycled, and connecting gives up
    after 10 s instead of hanging. With ``patience_seconds``, a call that finds the server
    away (a restart) is retried until it answers or that time has passed (a running
    study's driver; the first connection never waits). A password may come in the URL or,
    better, from ``PGPASSWORD``/``~/.pgpass``; it is never printed.

    Example:
        >>> storage = open_storage("sqlite:////tmp/kd-search-doc.db")  # doctest: +SKIP
    """
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine_options = None
    if not url.startswith("sqlite"):
        engine_options = {"pool_pre_ping": True, "pool_recycle": 1800}
        if url.startswith("postgresql"):
            # TCP keepalives: a server whose node died without closing its connections is
            # found out in about 25 s instead of the kernel's two hours.
            engine_options["connect_args"] = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10,
                                              "keepalives_interval": 5, "keepalives_count": 3}
    tries_left = 3
    while True:
        try:
            if patience_seconds > 0 and engine_options is not None:
                return PatientRDBStorage(url, engine_kwargs=engine_options, patience_seconds=patience_seconds,
                                         notify=notify or warnings.warn)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_options)
        except Exception as error:  # SQLAlchemy raises many types; users need the URL and the reason
            tries_left -= 1
            if tries_left and _lost_table_creation_race(error):
                time.sleep(0.2)  # let the other process (a launch, a `status`) finish creating them
                continue
            raise storage_error(url, error, "cannot open") from None


def _lost_table_creation_race(error: BaseException) -> bool:
    """Whether opening a new database failed because another process created Optuna's
    tables or stamped their schema version between this one's check and its write (SQLite:
    "table ... already exists", a duplicate alembic_version row; PostgreSQL: a duplicate
    type name)."""
    text = str(error)
    return any(sign in text for sign in ("already exists", "alembic_version", "pg_type_typname_nsp_index"))


def storage_error(url: str, error: BaseException, what: str) -> SearchError:
    """A one-line SearchError for a storage failure, the password masked everywhere."""
    reason = error_reason(error).replace(url, display_url(url))
    return SearchError(f"storage {display_url(url)}: {what} ({reason})")


def load_optuna_study(name: str, storage: str) -> optuna.Study:
    """An existing study from storage, or a one-line error listing the studies there."""
    store = open_storage(storage)
    try:
        return optuna.load_study(study_name=name, storage=store)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False))
        known = f" (studies there: {', '.join(names)})" if names else " (it holds no studies)"
        raise SearchError(f"no study named {name!r} in {display_url(storage)}{known}") from None


def stored_study(optuna_study: optuna.Study) -> Study:
    """The study file a stored study was launched with, or a one-line error.

    Example:
        >>> stored_study(optuna.create_study())
        Traceback (most recent call last):
        kd_search.errors.SearchError: study 'no-name-...' holds no kd-search study file (was it launched by kd-search launch?)
    """
    spec = optuna_study.user_attrs.get(SPEC_ATTR)
    if spec is None:
        raise SearchError(f"study {optuna_study.study_name!r} holds no kd-search study file "
                          "(was it launched by kd-search launch?)")
    return parse_study(spec)


def make_sampler(kind: str, seed: int, startup_trials: int) -> optuna.samplers.BaseSampler:
    """The multi-objective sampler for a study; constraints come from ``Trial.set_constraint``.

    ``startup_trials`` random trials come first (NSGA-II: the population size), so a small
    budget still leaves room for guided proposals.

    Example:
        >>> type(make_sampler("tpe", seed=0, startup_trials=4)).__name__
        'TPESampler'
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if kind == "tpe":
            # constant_liar: concurrent trials do not all get the same proposal.
            # group: one multivariate model per set of parameters that recipes read together.
            return optuna.samplers.TPESampler(n_startup_trials=startup_trials, multivariate=True, group=True,
                                              constant_liar=True, seed=seed)
        if kind == "gp":
            return optuna.samplers.GPSampler(n_startup_trials=startup_trials, seed=seed,
                                             warn_independent_sampling=False)
        if kind == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=max(2, startup_trials), seed=seed)
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {kind!r}")


def startup_trials(study: Study) -> int:
    """The study's ``search.startup_trials``, or a quarter of its budget (at least 2)."""
    return study.search.startup_trials or max(2, study.search.trials // 4)


def _relaunch_view(spec: dict[str, Any]) -> dict[str, Any]:
    view = json.loads(json.dumps(spec))
    for path in RELAUNCH_MUTABLE:
        node = view
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return view


def _changed_fields(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [c for key in sorted(set(old) | set(new))
                for c in _changed_fields(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [prefix.rstrip(".")] if old != new else []


def create_or_resume(study: Study, storage: str, num_mapped_layers: int, *, patience_seconds: float = 0.0,
                     notify: Callable[[str], None] | None = None) -> tuple[optuna.Study, bool]:
    """Create the Optuna study (directions: task metric up, sigma down) or re-open it.

    Re-opening checks that the stored study file matches (only the budget, resources,
    scheduler, confirmation and tracking may change) so results of different set-ups never mix.
    A new study's first trials are the study's defaults (``search.enqueue_defaults``), then
    the ``search.enqueue`` starting points in order. ``patience_seconds`` and ``notify``:
    see ``open_storage``.
    """
    store = open_storage(storage, patience_seconds=patience_seconds, notify=notify)
    spec = study.model_dump(mode="json")
    sampler = make_sampler(study.search.sampler, study.seed, startup_trials(study))
    try:
        existing = optuna.load_study(study_name=study.name, storage=store, sampler=sampler)
    except KeyError:
        existing = None
    if existing is not None:
        stored = existing.user_attrs.get(SPEC_ATTR)
        if stored is not None:
            changed = _changed_fields(_relaunch_view(stored), _relaunch_view(spec))
            if changed:
                raise SearchError(f"study {study.name!r} in {display_url(storage)} was launched with a different study file "
                                  f"(changed: {', '.join(changed[:5])}); give this one a new name")
        # A relaunch seeded as the first launch would replay its random start-up proposals,
        # points already trained; offset by the stored trials, it stays reproducible.
        existing.sampler = make_sampler(study.search.sampler, study.seed + len(existing.get_trials(deepcopy=False)),
                                        startup_trials(study))
        return existing, True
    created = optuna.create_study(study_name=study.name, storage=store, sampler=sampler,
                                  directions=["maximize", "minimize"])
    with warnings.catch_warnings():  # experimental in Optuna, stable in use since 3.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        created.set_metric_names([study.objectives.task_metric, "sigma"])
    created.set_user_attr(SPEC_ATTR, spec)
    if study.search.enqueue_defaults:
        # The values the defaults' recipe reads: a prediction-only default names no beta.
        defaults = effective(study, default_hyperparameters(study, num_mapped_layers))
        searched = search_distributions(study, num_mapped_layers)
        created.enqueue_trial({name: defaults[name] for name in searched if name in defaults},
                              user_attrs={"kd_search_baseline": True})
    for number, start in enumerate(study.search.enqueue):
        created.enqueue_trial(dict(start), user_attrs={"kd_search_enqueued": number})
    return created, False
