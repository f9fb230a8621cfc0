"""The saved MLflow runs-table view of a study's front, and the experiment's kind.

The experiment is marked a classic ML experiment (``mlflow.experimentKind``) and carries,
per study, a saved runs-table view (``mlflow.sharedViewState.<key>``: MLflow's own "share
view" tag) that ``StudyTracker.front_url`` opens: the study's front trials as a flat
list, ordered by accuracy, with accuracy, sigma, kappa and phi_cnf as columns.
``tags.phi_cnf = "certified"`` filters a study's certified trials.
"""

from __future__ import annotations

import re
from typing import Any

# The experiment kind MLflow's own kind selector writes; "custom_model_development" is its
# classic training experiment (runs table), as opposed to "genai_development" (traces).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# Saved runs-table views: the UI loads the JSON in this experiment tag for
# ``?viewStateShareKey=<key>`` (search facets and table state, as its "Share" button saves).
SHARED_VIEW_TAG = "mlflow.sharedViewState."
# The columns of the front view: what a user compares front members by.
FRONT_COLUMNS = ("accuracy", "sigma", "kappa", "phi_cnf")


def front_view(study_name: str) -> dict[str, Any]:
    """The MLflow runs-table state listing a study's front trials, flat, most accurate first.

    A search filter with an order other than start time makes MLflow list matching child
    runs on their own rows instead of folding them under their parent run.

    Example:
        >>> view = front_view("demo")
        >>> view["searchFilter"]
        "tags.kd_search_study = 'demo' and tags.kd_search_role = 'trial' and tags.pareto = 'true'"
        >>> view["orderByKey"], view["selectedColumns"][:2]
        ('metrics.`accuracy`', ['metrics.`accuracy`', 'metrics.`sigma`'])
    """
    quoted = study_name.replace("'", "\\'")
    return {
        "searchFilter": f"tags.kd_search_study = '{quoted}' and tags.kd_search_role = 'trial' "
                        "and tags.pareto = 'true'",
        "orderByKey": f"metrics.`{FRONT_COLUMNS[0]}`", "orderByAsc": False, "lifecycleFilter": "Active",
        "selectedColumns": [f"metrics.`{name}`" for name in FRONT_COLUMNS] + ["tags.`optuna_trial_number`"],
        "viewMaximized": False, "runListHidden": False,
    }


def view_key(study_name: str) -> str:
    """The share key of a study's front view: characters MLflow allows in tag names and URLs.

    Example:
        >>> view_key("demo study #2")
        'kd-search-front-demo_study__2'
    """
    return "kd-search-front-" + re.sub(r"[^A-Za-z0-9_.-]", "_", study_name)

