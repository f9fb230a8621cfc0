"""MLflow tracking of a study: one parent run, one nested child run per Optuna trial.

Only the search driver writes here (workers report through Ray), so a SQLite tracking
store never sees two writers.

Modules, one job each: ``_reachability`` (where the store is, whether it answers),
``_front_view`` (the experiment's kind and the saved runs-table view of a study's front),
``_delivery`` (writes buffered through a briefly unreachable server and saved for the
next launch), ``_tracker`` (``StudyTracker``: the study's runs and their tags),
``_registry`` (a trained student as a registered MLflow model).

Example:
    >>> default_tracking_uri("/tmp/runs")
    'sqlite:////tmp/runs/mlflow.db'
"""

from __future__ import annotations

from kd_search.service.tracking._delivery import BufferedWriter
from kd_search.service.tracking._front_view import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    FRONT_COLUMNS,
    SHARED_VIEW_TAG,
    front_view,
    view_key,
)
from kd_search.service.tracking._reachability import (
    check_tracking_uri,
    default_tracking_uri,
    is_unreachable,
)
from kd_search.service.tracking._registry import StudentClassifier, register_student
from kd_search.service.tracking._tracker import StudyTracker, numeric_metrics

__all__ = ["EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "FRONT_COLUMNS", "SHARED_VIEW_TAG", "BufferedWriter",
           "StudentClassifier", "StudyTracker", "check_tracking_uri", "default_tracking_uri", "front_view",
           "is_unreachable", "numeric_metrics", "register_student", "view_key"]
