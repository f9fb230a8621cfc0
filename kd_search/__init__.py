"""kd-search: hyperparameter search for confidence-aware knowledge distillation.

The functions the command line calls, for notebooks and scripts (:mod:`kd_search.api`):

Example:
    >>> import kd_search
    >>> kd_search.load_study("smoke").search.trials
    4
    >>> summary = kd_search.launch("smoke")  # doctest: +SKIP
    >>> kd_search.pareto("smoke")[0]["verdict"]  # doctest: +SKIP
    'unconfirmed'
"""

from kd_search.api import audit, confirm, distill, export, launch, pareto, summary
from kd_search.engine.spec import Study
from kd_search.study_file import load_study

__all__ = ["Study", "audit", "confirm", "distill", "export", "launch", "load_study", "pareto", "summary",
           "__version__"]
__version__ = "0.1.0"
