"""kd-search: hyperparameter search for confidence-aware knowledge distillation.

Example:
    >>> from kd_search import load_study
    >>> study = load_study("smoke")
"""

from kd_search.engine.spec import Study, load_study

__all__ = ["Study", "load_study", "__version__"]
__version__ = "0.1.0"
