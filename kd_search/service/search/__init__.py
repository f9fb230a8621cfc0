"""The search: Ray Tune runs distillation trials, Optuna proposes their hyperparameters.

One ``launch`` is one driver process. It prepares the teacher and its output cache once,
then a Ray Tune ``Tuner`` runs ``run_trial`` as one worker per trial (the study's
resources each, at most ``search.concurrency`` at a time) while an Optuna study in SQL
storage proposes the parameters and receives the results. The driver is the only writer
of the Optuna storage and of MLflow: workers report through Ray.

Gaps in the stock Ray/Optuna glue this package closes:

- constraints: ``sigma - kappa <= 0`` is set on every finished trial
  (``Trial.set_constraint``), so every sampler and ``Study.best_trials`` see it;
- a trial a scheduler stops early is told to Optuna as PRUNED (Ray reports it to the
  searcher like a finished one, with its last, under-trained result);
- a trial that raises, loses its worker more often than ``search.max_failures`` or has
  a non-finite loss becomes FAIL and the study goes on;
- no Optuna trial is left RUNNING: a relaunch adopts the trials a dead driver left
  RUNNING and continues them from their last epoch checkpoint;
- one driver per study: a launch holds a lease on its study in the storage, with a
  heartbeat, so a second launch while the first lives is refused instead of adopting
  the live driver's trials.

Modules: ``records`` (trials read back from storage, the front), ``presenting`` (the
verdict in words, the summary table), ``selection`` (the trial to export, the study at
another kappa), ``optuna_study``
(storage, samplers, search space, relaunch checks), ``lease`` (which driver runs a
study, and whether it lives), ``locations`` (where a study's files
live), ``worker`` (one trial in a Ray worker), ``driver`` (the launch's Optuna and MLflow
writer behind Ray's searcher), ``ray_runs`` (Ray, the teacher, MLflow and one Tune run,
as a launch and a confirmation share them), ``_launch`` (``launch`` itself), ``_confirm``
(``confirm``: the best trials retrained with further seeds). Only the last five import
Ray, and this package loads them when ``launch`` or ``confirm`` is first used, so the
readers (``status``, ``pareto``, ``export``, ``report``) never start it.

Example:
    >>> study = load_study("smoke")  # doctest: +SKIP
    >>> summary = launch(study, locations=Locations.resolve(study, workdir="runs"))  # doctest: +SKIP
    >>> [t.number for t in summary.front]  # doctest: +SKIP
    [0, 2]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kd_search.service.search.lease import (
    DriverRunning,
    Lease,
    check_no_live_driver,
    driver_grace,
    read_lease,
)
from kd_search.service.search.locations import Locations, check_locations, kept_student
from kd_search.service.search.optuna_study import (
    CONSTRAINT,
    LABELS_ATTR,
    SPEC_ATTR,
    SearchError,
    load_optuna_study,
    open_storage,
    stored_study,
)
from kd_search.service.search.presenting import summary_table, verdict_text
from kd_search.service.search.records import (
    RECORDED_METRICS,
    StudySummary,
    TrialRecord,
    confirmations,
    finished_count,
    summarize,
)
from kd_search.service.search.selection import at_kappa, check_kappa, kappa_curve, select_trial

if TYPE_CHECKING:
    from kd_search.service.search._confirm import confirm
    from kd_search.service.search._launch import launch

__all__ = ["CONSTRAINT", "LABELS_ATTR", "RECORDED_METRICS", "SPEC_ATTR", "DriverRunning", "Lease", "Locations",
           "SearchError", "StudySummary", "TrialRecord", "at_kappa", "check_kappa", "check_locations",
           "check_no_live_driver", "confirm", "confirmations", "driver_grace", "finished_count", "kappa_curve",
           "kept_student", "launch", "load_optuna_study", "open_storage", "read_lease", "select_trial",
           "stored_study", "summarize", "summary_table",
           "verdict_text"]


def __getattr__(name: str) -> Any:
    # ``launch`` and ``confirm`` need Ray, which takes seconds to import; only they pay for it.
    if name == "launch":
        from kd_search.service.search._launch import launch

        return launch
    if name == "confirm":
        from kd_search.service.search._confirm import confirm

        return confirm
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
