"""The pictures people look at: confidence histograms of a trial, the study's Pareto front,
the front's reliability diagram and prediction flips, and the best metric against kappa.

Each function takes plain arrays and returns a matplotlib ``Figure``; tracking logs them
to MLflow and the HTML report embeds them. Nothing here reads storage.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # figures are files, never windows (workers and CI have no display)

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from kd_search.engine import measures  # noqa: E402


def confidence_figure(teacher_probs: np.ndarray, student_probs: np.ndarray, labels: np.ndarray,
                      convention: measures.Convention, kappa: float | None = None, title: str = "") -> Figure:
    """Teacher vs student confidence and the distribution of delta (the paper's Figure 2).

    Only the inputs both classify correctly are drawn, the set sigma is computed on, and
    the confidence is the one the study's ``convention`` measures delta on (class 0 or the
    true class), so the figure's sigma is the trial's.

    Example:
        >>> p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
        >>> q = np.array([[0.8, 0.2], [0.3, 0.7], [0.7, 0.3]])
        >>> confidence_figure(p, q, np.array([0, 1, 0]), "p0", kappa=0.05).axes[2].get_title()
        'delta, sigma = 0.0943'
    """
    p0 = measures.resolve_convention(convention, teacher_probs.shape[1]) == "p0"
    rows = np.flatnonzero(measures.both_correct_mask(teacher_probs, student_probs, labels))
    column = 0 if p0 else np.asarray(labels)[rows]
    teacher_p, student_p = teacher_probs[rows, column], student_probs[rows, column]
    delta = teacher_p - student_p
    name = "p0" if p0 else "p(true class)"
    figure = Figure(figsize=(12, 3.6), layout="constrained")
    left, middle, right = figure.subplots(1, 3)
    bins = np.linspace(0, 1, 26)
    left.hist(teacher_p, bins=bins, color="tab:blue", alpha=0.8)
    left.set_title(f"teacher {name}")
    middle.hist(student_p, bins=bins, color="tab:orange", alpha=0.8)
    middle.set_title(f"student {name}")
    for axis in (left, middle):
        axis.set_xlabel("class-0 probability" if p0 else "true-class probability")
        axis.set_ylabel("inputs both classify correctly")
    sigma = measures.sigma(delta)
    right.hist(delta, bins=41, color="tab:green", alpha=0.8)
    right.set_title(f"delta, sigma = {sigma:.4f}")
    right.set_xlabel(f"delta = {name} teacher - {name} student")
    if kappa is not None and delta.size:
        mean = float(delta.mean())
        for edge in (mean - kappa, mean + kappa):
            right.axvline(edge, color="black", linestyle="--", linewidth=1)
        right.text(0.02, 0.95, f"dashed: mean +/- kappa ({kappa:g})", transform=right.transAxes, va="top", fontsize=8)
    if title:
        figure.suptitle(title)
    return figure


Bounds = Sequence[tuple[float | None, float | None]]
LEGEND_ORDER = ("certified over seeds", "feasible on its search seed", "infeasible (sigma > kappa)",
                "95% bootstrap interval", "Pareto front", "kappa")


def _error_bars(values: np.ndarray, intervals: Bounds | None) -> tuple[np.ndarray, np.ndarray]:
    # (2, n) distances below and above each value for errorbar, and which points have an
    # interval at all; a percentile interval may exclude its estimate, so distances clip at 0.
    bars, known = np.zeros((2, values.size)), np.zeros(values.size, dtype=bool)
    for i, (low, high) in enumerate(intervals or []):
        if low is not None and high is not None:
            bars[:, i] = max(values[i] - low, 0.0), max(high - values[i], 0.0)
            known[i] = True
    return bars, known


def pareto_figure(metric: Sequence[float], sigma: Sequence[float], feasible: Sequence[bool], front: Sequence[int],
                  kappa: float | None, metric_name: str = "accuracy", labels: Sequence[str] | None = None,
                  title: str = "", sigma_intervals: Bounds | None = None, metric_intervals: Bounds | None = None,
                  certified: Sequence[bool] | None = None) -> Figure:
    """Task metric against sigma for every finished trial: feasible vs infeasible, the
    certified ones starred, the front joined.

    ``sigma_intervals`` and ``metric_intervals`` are each trial's (low, high) bootstrap
    interval, drawn as error bars along the sigma and the metric axis where both ends
    are known; ``certified`` marks the trials whose phi_cnf is certified over seeds.

    Example:
        >>> fig = pareto_figure([0.8, 0.7, 0.75], [0.04, 0.03, 0.08], [True, True, False], [0, 1], kappa=0.05,
        ...                     sigma_intervals=[(0.035, 0.046), (None, None), (0.07, 0.09)],
        ...                     certified=[True, False, False])
        >>> fig.axes[0].get_xlabel(), [text.get_text() for text in fig.axes[0].get_legend().get_texts()][:3]
        ('sigma (train split)', ['certified over seeds', 'feasible on its search seed', 'infeasible (sigma > kappa)'])
    """
    metric, sigma = np.asarray(metric, dtype=float), np.asarray(sigma, dtype=float)
    feasible = np.asarray(feasible, dtype=bool)
    starred = np.asarray(certified if certified is not None else [False] * sigma.size, dtype=bool)
    figure = Figure(figsize=(6.4, 4.8), layout="constrained")
    axis = figure.subplots()
    sigma_bars, sigma_known = _error_bars(sigma, sigma_intervals)
    metric_bars, metric_known = _error_bars(metric, metric_intervals)
    drawn = sigma_known | metric_known
    if drawn.any():
        axis.errorbar(sigma[drawn], metric[drawn], xerr=sigma_bars[:, drawn], yerr=metric_bars[:, drawn],
                      fmt="none", ecolor="tab:blue", alpha=0.35, elinewidth=1, capsize=2,
                      label="95% bootstrap interval")
    for shown, style in ((starred, {"color": "tab:green", "marker": "*", "s": 150, "label": "certified over seeds"}),
                         (feasible & ~starred, {"color": "tab:blue", "label": "feasible on its search seed"}),
                         (~feasible & ~starred, {"color": "tab:gray", "marker": "x",
                                                 "label": "infeasible (sigma > kappa)"})):
        if shown.any():  # an empty group would still take a legend entry
            axis.scatter(sigma[shown], metric[shown], zorder=3, **style)
    if len(front):
        order = sorted(front, key=lambda i: sigma[i])
        axis.plot(sigma[order], metric[order], color="tab:red", marker="o", markersize=11, fillstyle="none",
                  linewidth=1.5, zorder=2, label="Pareto front")
    if kappa is not None:
        axis.axvline(kappa, color="black", linestyle="--", linewidth=1, label=f"kappa = {kappa:g}")
    for i, label in enumerate(labels or []):
        axis.annotate(label, (sigma[i], metric[i]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axis.set_xlabel("sigma (train split)")
    axis.set_ylabel(metric_name)
    handles, names = axis.get_legend_handles_labels()
    # Points first, then what is drawn around them (Matplotlib lists error bars last).
    ranked = sorted(range(len(names)), key=lambda i: LEGEND_ORDER.index(names[i].split(" =")[0]))
    axis.legend([handles[i] for i in ranked], [names[i] for i in ranked], fontsize=8)
    axis.grid(alpha=0.3)
    if title:
        axis.set_title(title)
    return figure


def importance_figure(importances: dict[str, dict[str, float]]) -> Figure:
    """Horizontal bars of each parameter's importance for each objective.

    Example:
        >>> importance_figure({"accuracy": {"alpha": 0.7, "beta": 0.3}}).axes[0].get_xlabel()
        'importance (fANOVA)'
    """
    names = sorted({name for values in importances.values() for name in values})
    figure = Figure(figsize=(6.4, 0.4 * max(len(names), 3) + 1.2), layout="constrained")
    axis = figure.subplots()
    height = 0.8 / max(len(importances), 1)
    for k, (objective, values) in enumerate(importances.items()):
        positions = np.arange(len(names)) + k * height
        axis.barh(positions, [values.get(name, 0.0) for name in names], height=height, label=objective)
    axis.set_yticks(np.arange(len(names)) + 0.4 - height / 2, names)
    axis.set_xlabel("importance (fANOVA)")
    axis.legend(fontsize=8)
    return figure


def cka_figure(matrix: np.ndarray, student_labels: Sequence[str], teacher_labels: Sequence[str],
               title: str = "") -> Figure:
    """Heat map of CKA between student layers (rows) and mapped teacher layers (columns).

    Example:
        >>> cka_figure(np.eye(2), ["emb", "s1"], ["emb", "t2"]).axes[0].get_ylabel()
        'student layer'
    """
    figure = Figure(figsize=(1.2 * len(teacher_labels) + 2.4, 1.0 * len(student_labels) + 1.4), layout="constrained")
    axis = figure.subplots()
    image = axis.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    for (i, j), value in np.ndenumerate(matrix):
        axis.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black", fontsize=8)
    axis.set_xticks(range(len(teacher_labels)), teacher_labels)
    axis.set_yticks(range(len(student_labels)), student_labels)
    axis.set_xlabel("teacher layer")
    axis.set_ylabel("student layer")
    axis.set_title(title or f"linear CKA, diagonal mean {float(np.mean(np.diagonal(matrix))):.3f}")
    figure.colorbar(image, ax=axis)
    return figure


def comparison_figure(methods: Sequence[str], accuracy: Sequence[tuple[float, float]],
                      sigma: Sequence[tuple[float, float]], kappa: float | None = None, title: str = "") -> Figure:
    """Accuracy against sigma per distillation method, each a (mean, std) over seeds.

    Example:
        >>> fig = comparison_figure(["vkd", "fsd"], [(0.75, 0.01), (0.76, 0.005)], [(0.09, 0.002), (0.07, 0.003)], 0.075)
        >>> fig.axes[0].get_xlabel()
        'sigma (train split), mean ± std over seeds'
    """
    figure = Figure(figsize=(6.4, 4.8), layout="constrained")
    axis = figure.subplots()
    for method, (accuracy_mean, accuracy_std), (sigma_mean, sigma_std) in zip(methods, accuracy, sigma, strict=True):
        axis.errorbar(sigma_mean, accuracy_mean, xerr=sigma_std, yerr=accuracy_std, fmt="o", capsize=3)
        axis.annotate(method, (sigma_mean, accuracy_mean), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if kappa is not None:
        axis.axvline(kappa, color="black", linestyle="--", linewidth=1, label=f"kappa = {kappa:g}")
        axis.legend(fontsize=8)
    axis.set_xlabel("sigma (train split), mean ± std over seeds")
    axis.set_ylabel("accuracy (eval), mean ± std over seeds")
    axis.grid(alpha=0.3)
    axis.set_title(title or "distillation methods")
    return figure


def trial_figures(teacher_probs: np.ndarray, student_probs: np.ndarray, labels: np.ndarray,
                  convention: measures.Convention, kappa: float, cka_matrix: np.ndarray | None = None,
                  title: str = "") -> dict[str, Figure]:
    """A finished trial's pictures by MLflow artifact name: ``confidence.png`` and, when
    the layers were compared, ``layer_cka.png`` (rows/columns: embeddings, mapped layers).

    Example:
        >>> p = np.array([[0.9, 0.1], [0.2, 0.8]])
        >>> sorted(trial_figures(p, p, np.array([0, 1]), "auto", 0.05, np.eye(2)))
        ['confidence.png', 'layer_cka.png']
    """
    pictures = {"confidence.png": confidence_figure(teacher_probs, student_probs, labels, convention, kappa=kappa,
                                                    title=title)}
    if cka_matrix is not None:
        layer_labels = ["emb", *(f"map {m}" for m in range(1, cka_matrix.shape[0]))]
        pictures["layer_cka.png"] = cka_figure(cka_matrix, layer_labels, layer_labels)
    return pictures


def reliability_figure(teacher: measures.Reliability, students: dict[str, measures.Reliability],
                       title: str = "") -> Figure:
    """Reliability diagram (Guo et al. 2017, Fig. 1): accuracy against top-label confidence
    per bin, the teacher's and each student's, with the diagonal of perfect calibration.
    The legend gives each curve's ECE. Empty bins are not drawn.

    Example:
        >>> bins = measures.reliability([[0.9, 0.1], [0.7, 0.3], [0.4, 0.6]], [0, 1, 1])
        >>> fig = reliability_figure(bins, {"trial 3": bins})
        >>> [text.get_text() for text in fig.axes[0].get_legend().get_texts()][:2]
        ['perfect calibration', 'teacher (ECE 0.400)']
    """
    figure = Figure(figsize=(6.4, 4.8), layout="constrained")
    axis = figure.subplots()
    axis.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1, label="perfect calibration")
    curves = [("teacher", teacher, {"color": "black", "linestyle": "--", "marker": "s"})]
    curves += [(name, bins, {"marker": "o"}) for name, bins in students.items()]
    for name, bins, style in curves:
        filled = bins.count > 0
        axis.plot(bins.confidence[filled], bins.accuracy[filled], markersize=4, linewidth=1.3,
                  label=f"{name} (ECE {bins.calibration_error:.3f})", **style)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("top-label confidence (eval split, bin mean)")
    axis.set_ylabel("accuracy in the bin")
    axis.legend(fontsize=8, loc="upper left")
    axis.grid(alpha=0.3)
    axis.set_title(title or "reliability: teacher and front students")
    return figure


def flips_figure(labels: Sequence[str], flip_rate: Sequence[float | None],
                 flip_rate_teacher_correct: Sequence[float | None], title: str = "") -> Figure:
    """Prediction flips against the teacher per student: on every eval input, and on the
    inputs the teacher gets right (where each flip is a new error). Missing values are
    drawn as 0-height bars marked "n/a".

    Example:
        >>> fig = flips_figure(["trial 1", "trial 4"], [0.05, 0.08], [0.03, None])
        >>> fig.axes[0].get_ylabel()
        'flip rate: share of the inputs whose prediction flips'
    """
    figure = Figure(figsize=(max(6.4, 1.1 * len(labels) + 2.5), 4.2), layout="constrained")
    axis = figure.subplots()
    positions = np.arange(len(labels))
    width = 0.38
    for offset, values, name, color in ((-width / 2, flip_rate, "all eval inputs", "tab:purple"),
                                        (width / 2, flip_rate_teacher_correct, "inputs the teacher gets right",
                                         "tab:red")):
        heights = [0.0 if v is None else float(v) for v in values]
        bars = axis.bar(positions + offset, heights, width, label=name, color=color, alpha=0.8)
        axis.bar_label(bars, labels=["n/a" if v is None else f"{v:.3f}" for v in values], fontsize=7, padding=2)
    axis.set_xticks(positions, labels)
    axis.set_ylabel("flip rate: share of the inputs whose prediction flips")
    axis.set_ylim(0, max([0.01, *(float(v) for v in (*flip_rate, *flip_rate_teacher_correct) if v is not None)]) * 1.25)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3, axis="y")
    axis.set_title(title or "prediction flips against the teacher (eval split)")
    return figure


def kappa_figure(kappas: Sequence[float], certified: Sequence[float | None], feasible: Sequence[float | None],
                 kappa: float | None = None, metric_name: str = "accuracy", title: str = "") -> Figure:
    """The best task metric a study offers against kappa: certified over seeds (mean over
    its seeds) and feasible on the search seed alone; gaps where no trial qualifies. A
    dashed line marks the study's own kappa.

    Example:
        >>> fig = kappa_figure([0.03, 0.04, 0.05], [None, 0.8, 0.8], [0.79, 0.8, 0.82], kappa=0.05)
        >>> fig.axes[0].get_xlabel(), len(fig.axes[0].get_legend().get_texts())
        ('kappa', 3)
    """
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    axis = figure.subplots()
    x = np.asarray(kappas, dtype=float)
    for values, name, style in ((feasible, "best feasible on its search seed (sigma <= kappa)",
                                 {"color": "tab:blue", "linestyle": "--", "alpha": 0.7}),
                                (certified, "best certified over seeds (U <= kappa)",
                                 {"color": "tab:green", "linewidth": 2})):
        y = np.array([np.nan if v is None else v for v in values], dtype=float)
        axis.step(x, y, where="post", label=name, **style)
    if kappa is not None:
        axis.axvline(kappa, color="black", linestyle=":", linewidth=1, label=f"study's kappa = {kappa:g}")
    axis.set_xlabel("kappa")
    axis.set_ylabel(f"best {metric_name}")
    axis.margins(y=0.15)
    axis.legend(fontsize=8, loc="upper left")
    axis.grid(alpha=0.3)
    axis.set_title(title or f"best {metric_name} against kappa")
    return figure
