"""The confidence figure shows the delta the trial logs, whichever convention the study uses."""

from __future__ import annotations

import numpy as np
import pytest

from kd_search.engine import measures
from kd_search.service.figures import confidence_figure, trial_figures

TEACHER = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6], [0.6, 0.4]])
STUDENT = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.1, 0.9], [0.55, 0.45]])
LABELS = np.array([0, 1, 0, 1, 1])


@pytest.mark.parametrize(("convention", "drawn"), [("p0", "p0"), ("auto", "p0"), ("true_class", "p(true class)")])
def test_figure_sigma_is_the_logged_sigma(convention, drawn):
    figure = confidence_figure(TEACHER, STUDENT, LABELS, convention)
    # What a trial logs as sigma under this convention (trial._evaluate).
    sigma = float(np.std(measures.confidence_delta(TEACHER, STUDENT, LABELS, convention)))
    assert figure.axes[2].get_title() == f"delta, sigma = {sigma:.4f}"
    assert figure.axes[0].get_title() == f"teacher {drawn}"


def test_true_class_differs_from_p0_on_binary():
    p0 = confidence_figure(TEACHER, STUDENT, LABELS, "p0").axes[2].get_title()
    true_class = confidence_figure(TEACHER, STUDENT, LABELS, "true_class").axes[2].get_title()
    assert (p0, true_class) == ("delta, sigma = 0.1633", "delta, sigma = 0.1886")


def test_trial_figures_follow_the_convention():
    figure = trial_figures(TEACHER, STUDENT, LABELS, "true_class", kappa=0.05)["confidence.png"]
    assert figure.axes[2].get_title() == "delta, sigma = 0.1886"
