"""What a trial and an audit measure: pure functions on arrays, one module per job.

* :mod:`~kd_search.engine.measures.preservation`: delta, sigma (computed only there), the
  kappa bound and phi_cnf (Vengertsev & Sherman, arXiv 2401.11365);
* :mod:`~kd_search.engine.measures.calibration`: ECE and class-wise ECE (Guo et al. 2017);
* :mod:`~kd_search.engine.measures.classification`: accuracy, F1, MCC and the student's
  agreement with the teacher;
* :mod:`~kd_search.engine.measures.bootstrap`: percentile-bootstrap intervals of sigma and
  of the task metric;
* :mod:`~kd_search.engine.measures.certification`: the verdict on phi_cnf across seeds;
* :mod:`~kd_search.engine.measures.trust`: what users check beyond sigma: flips, KL, Brier
  score, NLL, reliability bins and sigma per class;
* :mod:`~kd_search.engine.measures._inputs`: the checks of probability tables and labels,
  and softmax.

Inputs are row-aligned arrays (the caller joins rows by example id). Every function
accepts numpy arrays or CPU tensors, raises :class:`~kd_search.errors.ConfidenceInputError`
on inputs it cannot measure and imports nothing of the package but its errors.

Example:
    >>> from kd_search.engine import measures
    >>> delta = measures.confidence_delta([[.9, .1], [.8, .2]], [[.7, .3], [.6, .4]], [0, 1])
    >>> delta.round(2).tolist(), measures.sigma(delta)
    ([0.2], 0.0)
"""

from kd_search.engine.measures._inputs import (
    PROBABILITY_SUM_TOLERANCE,
    check_probabilities,
    softmax,
)
from kd_search.engine.measures.bootstrap import (
    Interval,
    metric_interval,
    sigma_interval,
    sigma_interval_metrics,
)
from kd_search.engine.measures.calibration import (
    classwise_calibration_error,
    expected_calibration_error,
)
from kd_search.engine.measures.certification import (
    Certification,
    Verdict,
    certify,
    student_t_quantile,
)
from kd_search.engine.measures.classification import (
    CLASSIFICATION_METRICS,
    Agreement,
    accuracy,
    f1_score,
    matthews_correlation,
    task_metric,
    teacher_agreement,
)
from kd_search.engine.measures.preservation import (
    Convention,
    both_correct_mask,
    confidence_delta,
    kappa_bound,
    phi_cnf,
    resolve_convention,
    sigma,
)
from kd_search.engine.measures.trust import (
    PROBABILITY_FLOOR,
    SIGMA_CLASS_PREFIX,
    TRUST_METRICS,
    Flips,
    Reliability,
    brier_score,
    flips,
    mean_kl,
    negative_log_likelihood,
    reliability,
    sigma_per_class,
    trust_metrics,
)

__all__ = [
    "CLASSIFICATION_METRICS",
    "PROBABILITY_FLOOR",
    "PROBABILITY_SUM_TOLERANCE",
    "SIGMA_CLASS_PREFIX",
    "TRUST_METRICS",
    "Agreement",
    "Certification",
    "Convention",
    "Flips",
    "Interval",
    "Reliability",
    "Verdict",
    "accuracy",
    "both_correct_mask",
    "brier_score",
    "certify",
    "check_probabilities",
    "classwise_calibration_error",
    "confidence_delta",
    "expected_calibration_error",
    "f1_score",
    "flips",
    "kappa_bound",
    "matthews_correlation",
    "mean_kl",
    "metric_interval",
    "negative_log_likelihood",
    "phi_cnf",
    "reliability",
    "resolve_convention",
    "sigma",
    "sigma_interval",
    "sigma_interval_metrics",
    "sigma_per_class",
    "softmax",
    "student_t_quantile",
    "task_metric",
    "teacher_agreement",
    "trust_metrics",
]
