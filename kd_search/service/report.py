"""A self-contained HTML dashboard of one study, from the template in ``kd_search/templates/``.

Pictures are embedded as base64 PNGs, so the file can be mailed or attached to a ticket:
the Pareto front, parallel coordinates of the searched parameters, their fANOVA
importances for each objective, the confidence figures of the front members, their trust
beyond sigma (a table, a reliability diagram of teacher and students, prediction flips)
and the best certified task metric against kappa.
"""

from __future__ import annotations

import base64
import io
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from kd_search.engine import measures
from kd_search.service import figures
from kd_search.service.search.locations import Locations
from kd_search.service.search.presenting import summary_table
from kd_search.service.search.records import StudySummary, trust_fields
from kd_search.service.search.selection import kappa_curve

TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "templates"
TEMPLATE = "study_report.html.j2"


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _parallel_coordinates(optuna_study: optuna.Study, metric_name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axes = optuna.visualization.matplotlib.plot_parallel_coordinate(
            optuna_study, target=lambda t: t.values[0], target_name=metric_name)
    figure = axes.figure
    figure.set_size_inches(11, 4.5)
    return figure


def _importances(optuna_study: optuna.Study, metric_name: str) -> dict[str, dict[str, float]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: optuna.importance.get_param_importances(optuna_study, target=lambda t, i=i: t.values[i])
                for i, name in enumerate((metric_name, "sigma"))}


def _cards(summary: StudySummary) -> list[tuple[str, str]]:
    counts, verdicts = summary.counts(), summary.verdict_counts()
    cards = [("trials", str(len(summary.trials))), *[(state.lower(), str(n)) for state, n in sorted(counts.items())],
             ("front size", str(len(summary.front)))]
    if verdicts:
        cards.append(("certified / unconfirmed / fails",
                      " / ".join(str(verdicts.get(v, 0)) for v in ("certified", "unconfirmed", "fails"))))
    certified = summary.best_certified()
    if certified is not None:
        cards.append((f"best certified {summary.metric_name}",
                      f"{certified.metric_mean:.4f} over {certified.seeds} seeds (trial {certified.number})"))
    best = summary.best_feasible()
    if best is not None:
        cards.append((f"best feasible {summary.metric_name}", f"{best.metric:.4f} (trial {best.number})"))
    return cards


def _eval_arrays(path: Path, confidence_split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    # The eval split's probabilities a trial saved: beside the confidence split's, or they
    # are the confidence split's when that is eval. None for an older trial without them.
    if not path.is_file():
        return None
    prefix = "" if confidence_split == "eval" else "eval_"
    with np.load(path) as data:
        if f"{prefix}teacher_probs" not in data:
            return None
        return data[f"{prefix}teacher_probs"], data[f"{prefix}student_probs"], data[f"{prefix}labels"]


def _trust(summary: StudySummary, locations: Locations, kappa: float | None,
           confidence_split: str) -> tuple[dict[str, str], str]:
    """The trust pictures (reliability, flips, kappa curve) as PNGs and the front's trust table."""
    images: dict[str, str] = {}
    students, teacher = {}, None
    for t in summary.front:
        arrays = _eval_arrays(locations.trial_dir(summary.name, t.number) / "confidence.npz", confidence_split)
        if arrays is not None:
            teacher = teacher or measures.reliability(arrays[0], arrays[2])
            students[f"trial {t.number}"] = measures.reliability(arrays[1], arrays[2])
    if teacher is not None:
        images["reliability"] = _png(figures.reliability_figure(teacher, students))
    fields = {t.number: trust_fields(t.attrs) for t in summary.front}
    if any(f.get("flip_rate") is not None for f in fields.values()):
        images["flips"] = _png(figures.flips_figure([f"trial {n}" for n in fields],
                                                    [f["flip_rate"] for f in fields.values()],
                                                    [f["flip_rate_teacher_correct"] for f in fields.values()]))
    curve = kappa_curve(summary)
    if curve.kappas:
        images["kappa"] = _png(figures.kappa_figure(curve.kappas, curve.certified, curve.feasible, kappa,
                                                    summary.metric_name))
    table = pd.DataFrame([{"trial": n, **f} for n, f in fields.items()])
    html = table.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0, na_rep="-",
                         classes="trust") if not table.empty else "<p>No front yet.</p>"
    return images, html


def build_report(optuna_study: optuna.Study, summary: StudySummary, locations: Locations, out_file: str | Path,
                 description: str = "", kappa: float | None = None, convention: measures.Convention = "auto",
                 confidence_split: str = "train") -> Path:
    """Write the study's HTML dashboard to ``out_file`` and return its path.

    ``convention`` and ``confidence_split`` are the study's
    ``objectives.confidence.convention`` and ``.split``: the confidence figures of the
    front follow the first; the reliability diagram reads the eval split's probabilities.

    Example:
        >>> build_report(optuna_study, summarize(optuna_study), Locations.resolve(), "demo.html")  # doctest: +SKIP
        PosixPath('demo.html')
    """
    import matplotlib.pyplot as plt

    complete = [t for t in summary.trials if t.state == "COMPLETE"]
    images: dict[str, str] = {}
    notes: dict[str, str] = {}
    images["pareto"] = _png(summary.pareto_figure(kappa))
    if len(complete) >= 2 and any(t.params for t in complete):
        images["parallel"] = _png(_parallel_coordinates(optuna_study, summary.metric_name))
        plt.close("all")
        try:
            images["importance"] = _png(figures.importance_figure(_importances(optuna_study, summary.metric_name)))
        except (RuntimeError, ValueError) as error:  # e.g. every trial has the same parameters
            notes["importance"] = f"Importances unavailable: {error}"
    else:
        notes["parallel"] = notes["importance"] = "Needs at least two finished trials with searched parameters."
    confidence = []
    for trial in summary.front:
        arrays = locations.trial_dir(summary.name, trial.number) / "confidence.npz"
        if arrays.is_file():
            with np.load(arrays) as data:
                confidence.append((trial.number, _png(figures.confidence_figure(
                    data["teacher_probs"], data["student_probs"], data["labels"], convention, trial.kappa))))
    trust_images, trust_table = _trust(summary, locations, kappa, confidence_split)
    images |= trust_images
    table = summary_table(summary)
    html_table = table.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, na_rep="-",
                               classes="trials") if not table.empty else "<p>No trials yet.</p>"
    environment = Environment(loader=FileSystemLoader(TEMPLATE_DIR), autoescape=select_autoescape(["html", "j2"]))
    html = environment.get_template(TEMPLATE).render(
        name=summary.name, description=description, generated=time.strftime("%Y-%m-%d %H:%M"), version=version("kd-search"),
        cards=_cards(summary), metric_name=summary.metric_name, images=images, notes=notes, table=Markup(html_table),
        confidence=confidence, trust_table=Markup(trust_table))
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
