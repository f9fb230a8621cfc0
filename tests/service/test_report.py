"""The study's HTML dashboard, on a small Optuna study recorded the way the search's driver does."""

from __future__ import annotations

import base64
import warnings
from html.parser import HTMLParser

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from kd_search.service.report import build_report
from kd_search.service.search import CONSTRAINT, Locations, summarize

KAPPA = 0.05
SPACE = {"alpha": FloatDistribution(0.0, 0.5), "temperature": FloatDistribution(1.0, 4.0)}
# (accuracy, sigma) of the finished trials 0-3: 0 and 1 form the front, 2 is infeasible, 3 is dominated by 0.
FINISHED = [(0.80, 0.03), (0.85, 0.04), (0.90, 0.08), (0.78, 0.035)]


class Page(HTMLParser):
    """The parts of the report the tests read: links, images, cards, headings and the trials table."""

    def __init__(self, html: str):
        super().__init__()
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.images: dict[str, str] = {}  # alt -> src
        self.cards: dict[str, str] = {}
        self.rows: list[list[str]] = []
        self.text: list[str] = []
        self._tags: list[str] = []
        self._card: list[str] | None = None
        self._table = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.links += [(tag, name, value or "") for name, value in attrs if name in ("src", "href", "srcset", "data")]
        if tag == "img":
            self.images[attributes.get("alt", "")] = attributes.get("src", "")
        if tag == "div" and attributes.get("class") == "card":
            self._card = []
        if tag == "table" and "trials" in (attributes.get("class") or "").split():
            self._table = True
        if self._table and tag == "tr":
            self.rows.append([])
        if self._table and tag in ("td", "th"):
            self.rows[-1].append("")
        if tag not in ("img", "meta", "br"):
            self._tags.append(tag)

    def handle_endtag(self, tag):
        if tag == "div" and self._card is not None:
            label, value = self._card
            self.cards[label] = value
            self._card = None
        if tag == "table":
            self._table = False
        if self._tags and self._tags[-1] == tag:
            self._tags.pop()

    def handle_data(self, data):
        self.text.append(data)
        if self._card is not None and data.strip():
            self._card.append(data.strip())
        if self._table and self._tags and self._tags[-1] in ("td", "th"):
            self.rows[-1][-1] += data.strip()

    def table(self) -> dict[str, dict[str, str]]:
        """Trial number -> column -> cell text."""
        header, *body = self.rows
        return {row[0]: dict(zip(header, row, strict=True)) for row in body}


def record_trials(study: optuna.Study, finished: list[tuple[float, float]], pruned: bool = True,
                  extra: dict[int, dict] | None = None) -> None:
    """Finished (and optionally one pruned, one failed) trials, attrs and constraint as the driver
    sets them; ``extra``: more recorded metrics by trial number."""
    for accuracy, sigma in finished:
        trial = study.ask(SPACE)
        trial.set_user_attr("ray_trial_id", f"run_{trial.number:05d}")
        for name, value in {"accuracy": accuracy, "teacher_accuracy": 0.9, "sigma": sigma, "kappa": KAPPA,
                            "phi_cnf": sigma <= KAPPA, "n_both": 40, "epoch": 2,
                            **(extra or {}).get(trial.number, {})}.items():
            trial.set_user_attr(name, value)
        trial.set_constraint(CONSTRAINT, sigma - KAPPA)
        study.tell(trial, values=[accuracy, sigma])
    if pruned:
        trial = study.ask(SPACE)  # stopped by the scheduler: its last result's metrics, no values
        for name, value in {"accuracy": 0.6, "sigma": 0.02, "kappa": KAPPA, "epoch": 1}.items():
            trial.set_user_attr(name, value)
        study.tell(trial, state=TrialState.PRUNED)
        trial = study.ask(SPACE)
        trial.set_user_attr("failure", "the trial's worker failed")
        study.tell(trial, state=TrialState.FAIL)


def optuna_study(tmp_path, name: str) -> tuple[optuna.Study, Locations]:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    with warnings.catch_warnings():  # experimental in Optuna, as create_or_resume uses it
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["accuracy", "sigma"])
    return study, Locations(workdir=tmp_path, storage=storage, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def save_confidence(locations: Locations, name: str, number: int) -> None:
    rng = np.random.default_rng(number)
    teacher = rng.dirichlet([1.0, 1.0], size=50)
    student = np.clip(teacher + rng.normal(0, 0.02, size=teacher.shape), 0.0, 1.0)
    directory = locations.trial_dir(name, number)
    directory.mkdir(parents=True)
    np.savez(directory / "confidence.npz", teacher_probs=teacher, student_probs=student / student.sum(1, keepdims=True),
             labels=teacher.argmax(1))


def assert_self_contained(page: Page) -> None:
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images.values())
    for src in page.images.values():
        assert base64.b64decode(src.removeprefix("data:image/png;base64,")).startswith(b"\x89PNG\r\n\x1a\n")
    assert all(value.startswith("data:") for _, _, value in page.links), page.links


@pytest.fixture(scope="module")
def front_report(tmp_path_factory):
    """The report of four finished trials (front: 1 and 0), one pruned, one failed; trials 1 and 2 kept arrays."""
    tmp_path = tmp_path_factory.mktemp("report")
    study, locations = optuna_study(tmp_path, "tiny-front")
    record_trials(study, FINISHED)
    save_confidence(locations, "tiny-front", 1)
    save_confidence(locations, "tiny-front", 2)  # not on the front: no figure
    out = build_report(study, summarize(study), locations, tmp_path / "reports" / "tiny.html",
                       description="a tiny study", kappa=KAPPA)
    return out, Page(out.read_text(encoding="utf-8"))


def test_report_is_a_self_contained_file(front_report):
    out, page = front_report
    assert out.name == "tiny.html" and out.is_file()
    assert_self_contained(page)
    html = out.read_text(encoding="utf-8")
    assert "<script" not in html and "<link" not in html and "@import" not in html and "url(" not in html


def test_report_names_the_study_and_counts_trials_by_state(front_report):
    _, page = front_report
    text = " ".join(page.text)
    assert "kd-search study tiny-front" in text and "Study tiny-front" in text and "a tiny study" in text
    assert page.cards == {"trials": "6", "complete": "4", "fail": "1", "pruned": "1", "front size": "2",
                          "certified / unconfirmed / fails": "0 / 3 / 1",
                          "best feasible accuracy": "0.8500 (trial 1)"}


def test_report_table_marks_the_front_and_shows_kappa(front_report):
    _, page = front_report
    table = page.table()
    assert list(table) == ["0", "1", "2", "3", "4", "5"]
    assert {n: row["state"] for n, row in table.items()} == {"0": "COMPLETE", "1": "COMPLETE", "2": "COMPLETE",
                                                             "3": "COMPLETE", "4": "PRUNED", "5": "FAIL"}
    assert [n for n, row in table.items() if row["pareto"] == "True"] == ["0", "1"]
    assert [n for n, row in table.items() if row["phi_cnf"] == "True"] == ["0", "1", "3"]
    assert {table[n]["kappa"] for n in "01234"} == {"0.05"}
    assert [table[n]["accuracy"] for n in "0123"] == ["0.8", "0.85", "0.9", "0.78"]
    assert [table[n]["sigma"] for n in "0123"] == ["0.03", "0.04", "0.08", "0.035"]
    assert {"alpha", "temperature"} <= set(table["0"])


def test_report_embeds_the_figures_and_the_kept_confidence_of_front_members_only(front_report):
    _, page = front_report
    assert set(page.images) == {"Pareto front", "parallel coordinates", "parameter importances",
                                "confidence of trial 1", "best metric against kappa"}
    text = " ".join(page.text)
    assert "Trial 1" in text and "Trial 0" not in text and "Trial 2" not in text
    assert "No front member has kept confidence outputs." not in text


def test_report_of_a_study_without_a_front_says_what_is_missing(tmp_path):
    study, locations = optuna_study(tmp_path, "tiny-alone")
    record_trials(study, [(0.7, 0.09)], pruned=False)  # one finished trial, infeasible
    out = build_report(study, summarize(study), locations, tmp_path / "alone.html")
    page = Page(out.read_text(encoding="utf-8"))
    assert_self_contained(page)
    assert set(page.images) == {"Pareto front", "best metric against kappa"}
    assert page.cards == {"trials": "1", "complete": "1", "front size": "0", "certified / unconfirmed / fails": "0 / 0 / 1"}
    text = " ".join(page.text)
    assert text.count("Needs at least two finished trials with searched parameters.") == 2
    assert "No front member has kept confidence outputs." in text
    assert page.table()["0"]["pareto"] == "False" and page.table()["0"]["phi_cnf"] == "False"


def test_report_shows_each_trials_verdict_and_the_best_certified(tmp_path):
    study, locations = optuna_study(tmp_path, "tiny-verdicts")
    record_trials(study, FINISHED)
    for seed, sigma in ((1000, 0.041), (2000, 0.039)):  # trial 1 confirmed on two more seeds
        study.set_user_attr(f"kd_search_confirmation:1:{seed}",
                            {"state": "COMPLETE", "seed": seed, "trial": 1, "accuracy": 0.84, "sigma": sigma})
    out = build_report(study, summarize(study), locations, tmp_path / "verdicts.html", kappa=KAPPA)
    page = Page(out.read_text(encoding="utf-8"))
    table = page.table()
    assert {n: row["verdict"] for n, row in table.items()} == {
        "0": "holds on one seed (unconfirmed)", "1": "certified", "2": "fails", "3": "holds on one seed (unconfirmed)",
        "4": "-", "5": "-"}
    assert [table[n]["seeds"] for n in "012345"] == ["1", "3", "1", "1", "0", "0"]
    assert table["1"]["sigma_mean"] == "0.04" and table["0"]["sigma_std"] == "-"
    assert page.cards["certified / unconfirmed / fails"] == "1 / 2 / 1"
    assert page.cards["best certified accuracy"] == "0.8433 over 3 seeds (trial 1)"


def save_eval_confidence(locations: Locations, name: str, number: int, noise: float) -> None:
    """confidence.npz as a trial on the train split saves it: the eval split's probabilities beside."""
    rng = np.random.default_rng(number)
    arrays = {}
    for prefix in ("", "eval_"):
        teacher = rng.dirichlet([0.5, 0.5], size=80)
        student = np.clip(teacher + rng.normal(0, noise, size=teacher.shape), 1e-3, 1.0)
        labels = np.where(rng.random(80) < 0.9, teacher.argmax(1), 1 - teacher.argmax(1))
        arrays |= {f"{prefix}teacher_probs": teacher, f"{prefix}student_probs": student / student.sum(1, keepdims=True),
                   f"{prefix}labels": labels}
    directory = locations.trial_dir(name, number)
    directory.mkdir(parents=True)
    np.savez(directory / "confidence.npz", **arrays)


TRUST = {"sigma_train": 0.03, "sigma_eval": 0.05, "flip_rate": 0.0625, "flip_rate_teacher_correct": 0.04,
         "kl_teacher_student": 0.012, "brier": 0.21, "brier_teacher": 0.18, "nll": 0.35, "nll_teacher": 0.3}


def test_report_shows_trust_beyond_sigma_and_the_best_certified_metric_against_kappa(tmp_path):
    study, locations = optuna_study(tmp_path, "tiny-trust")
    record_trials(study, FINISHED, pruned=False,
                  extra={n: {name: value * (1 + n) for name, value in TRUST.items()} for n in (0, 1)})
    for seed, sigma in ((1000, 0.031), (2000, 0.029)):  # trial 0 certified: U about 0.034
        study.set_user_attr(f"kd_search_confirmation:0:{seed}",
                            {"state": "COMPLETE", "seed": seed, "trial": 0, "accuracy": 0.80, "sigma": sigma})
    for number in (0, 1):
        save_eval_confidence(locations, "tiny-trust", number, noise=0.05 * (1 + number))
    out = build_report(study, summarize(study), locations, tmp_path / "trust.html", kappa=KAPPA)
    html = out.read_text(encoding="utf-8")
    page = Page(html)
    assert_self_contained(page)
    assert {"reliability diagram", "prediction flips", "best metric against kappa"} <= set(page.images)
    text = " ".join(page.text)
    assert "Trust beyond sigma: the front" in text and "Best accuracy against kappa" in text
    assert 'class="dataframe trust"' in html
    for name in TRUST:
        assert f"<th>{name}</th>" in html
    assert "<td>0.0625</td>" in html and "<td>0.1250</td>" in html  # trials 0 and 1's flip rates
    for alt in ("reliability diagram", "prediction flips", "best metric against kappa"):
        (tmp_path / f"{alt.replace(' ', '_')}.png").write_bytes(
            base64.b64decode(page.images[alt].removeprefix("data:image/png;base64,")))
