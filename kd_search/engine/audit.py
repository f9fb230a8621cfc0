"""Audit a distilled student: does it preserve the teacher's confidence?

Two sources of predictions, one report (:func:`audit_report`):

* two prediction files (:func:`audit_predictions`). A file (CSV, JSONL or Parquet) has a
  ``label`` column, class probabilities ``p0..p{K-1}`` (or logits ``logit0..logit{K-1}``),
  an optional ``pred`` column and an optional ``id`` column. Rows are joined on ``id``
  when both files have it, otherwise by position after a length check;
* two models run on a study's task, on its confidence split
  (:func:`kd_search.engine.model_audit.audit_models`).

The metrics themselves live in :mod:`kd_search.engine.measures`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kd_search.engine import measures
from kd_search.errors import ConfidenceInputError, PredictionFileError

Report = dict[str, float | int | bool | str]


@dataclass(frozen=True)
class Predictions:
    """One model's predictions: probabilities (n, K), labels (n,), optional example ids."""

    path: str
    probs: np.ndarray
    labels: np.ndarray
    ids: np.ndarray | None


def _numbered_columns(columns: list[str], prefix: str) -> list[str]:
    found = []
    while f"{prefix}{len(found)}" in columns:
        found.append(f"{prefix}{len(found)}")
    return found


def _read_frame(path: Path) -> pd.DataFrame:
    """The file's rows as read by pandas, by suffix; a PredictionFileError says why not."""
    readers = {".csv": pd.read_csv, ".jsonl": lambda p: pd.read_json(p, lines=True),
               ".json": pd.read_json, ".parquet": pd.read_parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise PredictionFileError(f"{path}: unsupported file type {path.suffix!r} (use .csv, .jsonl or .parquet)")
    if not path.is_file():
        raise PredictionFileError(f"{path}: no such file")
    try:
        frame = reader(path)
    except Exception as error:  # pandas raises many parser-specific types
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PredictionFileError(f"{path}: cannot parse ({reason})") from None
    if frame.empty:
        raise PredictionFileError(f"{path}: no rows")
    return frame


def read_predictions(path: str | Path) -> Predictions:
    """Read and check one prediction file.

    Example:
        >>> read_predictions("teacher.csv").probs.shape  # doctest: +SKIP
        (872, 2)
    """
    path = Path(path)
    frame = _read_frame(path)
    columns = [str(c) for c in frame.columns]
    if "label" not in columns:
        raise PredictionFileError(f"{path}: missing column 'label'")
    prob_columns = _numbered_columns(columns, "p")
    logit_columns = _numbered_columns(columns, "logit")
    if len(prob_columns) < 2 and len(logit_columns) < 2:
        raise PredictionFileError(f"{path}: needs probability columns p0, p1, ... or logit columns logit0, logit1, ...")
    use = prob_columns if len(prob_columns) >= 2 else logit_columns
    try:
        values = frame[use].to_numpy(dtype=np.float64)
        labels = frame["label"].to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise PredictionFileError(f"{path}: columns {', '.join(use)} and label must be numeric") from None
    if np.isnan(values).any():
        raise PredictionFileError(f"{path}: column values contain NaN or empty cells")
    if np.isnan(labels).any() or (labels != np.round(labels)).any():
        raise PredictionFileError(f"{path}: column 'label' must hold whole class numbers")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= len(use):
        raise PredictionFileError(f"{path}: column 'label' has classes outside 0..{len(use) - 1}")
    try:
        probs = (
            measures.check_probabilities(values, f"{path}: columns {use[0]}..{use[-1]}")
            if use is prob_columns
            else measures.softmax(values)
        )
    except ConfidenceInputError as error:
        raise PredictionFileError(str(error)) from None
    ids = frame["id"].astype(str).to_numpy() if "id" in columns else None
    if ids is not None and len(set(ids)) != len(ids):
        raise PredictionFileError(f"{path}: column 'id' has duplicate values")
    if "pred" in columns:
        _check_pred_column(path, frame["pred"].to_numpy(), probs)
    return Predictions(str(path), probs, labels, ids)


def _check_pred_column(path: Path, pred: np.ndarray, probs: np.ndarray) -> None:
    # A `pred` that disagrees with the probabilities means shifted or mislabelled
    # columns; rows whose top probability is tied may go either way.
    try:
        pred = pred.astype(np.float64)
    except (TypeError, ValueError):
        raise PredictionFileError(f"{path}: column 'pred' must hold class numbers") from None
    top = np.sort(probs, axis=1)
    untied = top[:, -1] > top[:, -2]
    disagree = np.flatnonzero(untied & (pred != probs.argmax(axis=1)))
    if disagree.size:
        raise PredictionFileError(
            f"{path}: column 'pred' disagrees with the argmax of the probabilities in "
            f"{disagree.size} rows (first at row {int(disagree[0])})"
        )


def align(teacher: Predictions, student: Predictions) -> tuple[Predictions, Predictions]:
    """Put both files' rows in the same order: by ``id`` when both have one, else by position.

    Example:
        >>> t, s = align(read_predictions("t.csv"), read_predictions("s.csv"))  # doctest: +SKIP
    """
    if (teacher.ids is None) != (student.ids is None):
        with_ids = teacher.path if teacher.ids is not None else student.path
        raise PredictionFileError(f"{with_ids}: has an 'id' column but the other file does not")
    if teacher.probs.shape[1] != student.probs.shape[1]:
        raise PredictionFileError(
            f"{student.path}: {student.probs.shape[1]} classes, but {teacher.path} has {teacher.probs.shape[1]}"
        )
    if teacher.ids is not None:
        missing = set(teacher.ids) ^ set(student.ids)
        if missing:
            raise PredictionFileError(
                f"{student.path}: ids differ from {teacher.path} ({len(missing)} ids in only one file, "
                f"e.g. {sorted(missing)[0]!r})"
            )
        order = pd.Index(student.ids).get_indexer(teacher.ids)
        student = Predictions(student.path, student.probs[order], student.labels[order], student.ids[order])
    elif len(teacher.labels) != len(student.labels):
        raise PredictionFileError(
            f"{student.path}: {len(student.labels)} rows, but {teacher.path} has {len(teacher.labels)} "
            "(add an 'id' column to join rows by example)"
        )
    mismatched = np.flatnonzero(teacher.labels != student.labels)
    if mismatched.size:
        raise PredictionFileError(
            f"{student.path}: labels differ from {teacher.path} in {mismatched.size} rows "
            f"(first at row {int(mismatched[0])}); are the rows the same examples?"
        )
    return teacher, student


def audit_report(teacher_probs, student_probs, labels, kappa: float | None = None,
                 convention: measures.Convention = "auto", *, level: float = 0.95, resamples: int = 1000,
                 seed: int = 0) -> Report:
    """Confidence-preservation report of a student against its teacher on row-aligned
    probability tables and labels, with percentile-bootstrap intervals of sigma and of the
    student's accuracy (``level``, ``resamples``, ``seed``: see
    :func:`~kd_search.engine.measures.sigma_interval`).

    Example:
        >>> teacher = [[.9, .1], [.8, .2], [.3, .7], [.6, .4]]
        >>> student = [[.7, .3], [.6, .4], [.4, .6], [.4, .6]]
        >>> report = audit_report(teacher, student, [0, 0, 1, 0], kappa=0.2)
        >>> report["n_both"], round(report["sigma"], 4), report["phi_cnf"]
        (3, 0.1414, True)
    """
    teacher = measures.check_probabilities(teacher_probs, "teacher probabilities")
    student = measures.check_probabilities(student_probs, "student probabilities")
    labels = np.asarray(labels)
    num_classes = teacher.shape[1]
    teacher_pred, student_pred = teacher.argmax(axis=1), student.argmax(axis=1)
    delta = measures.confidence_delta(teacher, student, labels, convention)
    agreement = measures.teacher_agreement(teacher_pred, student_pred, num_classes)
    bootstrap = {"level": level, "resamples": resamples, "seed": seed}
    sigma_bounds = measures.sigma_interval_metrics(teacher, student, labels, convention=convention, **bootstrap)
    accuracy = measures.metric_interval("accuracy", student_pred, labels, num_classes, **bootstrap)
    report: Report = {
        "n": int(labels.size),
        "num_classes": num_classes,
        "convention": measures.resolve_convention(convention, num_classes),
        "n_both": int(delta.size),
        "sigma": measures.sigma(delta),
        **sigma_bounds,
        "mean_delta": float(delta.mean()),
        "teacher_accuracy": measures.accuracy(teacher_pred, labels),
        "student_accuracy": accuracy.estimate,
        "student_accuracy_ci_low": accuracy.low,
        "student_accuracy_ci_high": accuracy.high,
        "ece_teacher": measures.expected_calibration_error(teacher, labels),
        "ece_student": measures.expected_calibration_error(student, labels),
        "classwise_ece_teacher": measures.classwise_calibration_error(teacher, labels),
        "classwise_ece_student": measures.classwise_calibration_error(student, labels),
        "agreement": agreement.agreement,
        "agreement_precision": agreement.precision,
        "agreement_recall": agreement.recall,
        "agreement_f1": agreement.f1,
        "ci_level": level,
        "resamples": resamples,
        "seed": seed,
    }
    if kappa is not None:
        report["kappa"] = float(kappa)
        report["phi_cnf"] = measures.phi_cnf(report["sigma"], kappa)  # type: ignore[arg-type]
    return report


def audit_predictions(teacher_path: str | Path, student_path: str | Path, kappa: float | None = None,
                      convention: measures.Convention = "auto", *, level: float = 0.95, resamples: int = 1000,
                      seed: int = 0) -> Report:
    """:func:`audit_report` of a teacher/student pair of prediction files.

    Example:
        >>> audit_predictions("teacher.csv", "student.csv", kappa=0.05)["phi_cnf"]  # doctest: +SKIP
        True
    """
    teacher, student = align(read_predictions(teacher_path), read_predictions(student_path))
    return audit_report(teacher.probs, student.probs, teacher.labels, kappa, convention, level=level,
                        resamples=resamples, seed=seed)
