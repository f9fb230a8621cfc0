"""What a user sees of a finished study in the MLflow UI: ``mlflow server`` on the study's
tracking store, opened in headless Chromium (Playwright, the system's ``chromium``).

Screenshots go to ``$KD_SEARCH_SCREENSHOTS`` (default ``runs/screenshots``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient
from servers import mlflow_server
from tiny import finished_study

from kd_search.service.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The UI loads its bundle and then the runs; a fresh server answers its first pages slowly.
LOAD_MS = 60_000


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """The MLflow server on the finished tiny study, and what the test needs to find its runs."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
    root = tmp_path_factory.mktemp("mlflow-ui")
    study, locations, tracker = finished_study(root / "work")
    shots = Path(os.environ.get("KD_SEARCH_SCREENSHOTS", "runs/screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    with mlflow_server(root / "server", backend=locations.tracking_uri) as server, \
            playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield {"server": server, "tracker": tracker, "browser": browser, "shots": shots,
               "client": MlflowClient(locations.tracking_uri)}
        browser.close()


def open_page(ui, url: str):
    """A fresh browser profile (MLflow's UI defaults to its GenAI mode) at ``url``, with the
    assistant side panel closed: a per-browser preference MLflow may open on its own."""
    page = ui["browser"].new_context(viewport={"width": 1500, "height": 820}).new_page()
    page.set_default_timeout(LOAD_MS)
    page.goto(url)
    page.get_by_text("Model registry").first.wait_for()  # the side bar: the app has loaded
    close = page.locator("[data-component-id='mlflow.assistant.chat_panel.close']")
    if close.count():
        close.first.click()
    return page


def table_rows(page) -> list[str]:
    """The runs table's rows, top to bottom, each its cells' text joined by spaces (the grid
    keeps pinned and scrolled columns of one row in separate elements)."""
    page.locator(".ag-row").first.wait_for()
    cells: dict[int, list[str]] = {}
    for row in page.locator(".ag-center-cols-container .ag-row, .ag-pinned-left-cols-container .ag-row").all():
        cells.setdefault(int(row.get_attribute("row-index")), []).append(" ".join(row.inner_text().split()))
    return [" ".join(cells[index]) for index in sorted(cells)]


def shoot(ui, page, name: str) -> Path:
    path = ui["shots"] / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def wait_for_figure(page, artifact: str) -> None:
    """Until the run page previews ``artifact``: its path shown, the PNG drawn (MLflow
    fetches the artifact and shows it from a blob URL)."""
    page.get_by_text(f"/artifacts/{artifact}").first.wait_for()
    page.wait_for_function("() => [...document.images].some(image => image.src.startsWith('blob:') "
                           "&& image.complete && image.naturalWidth > 300)")


def run_id(ui, name: str) -> str:
    runs = ui["client"].search_runs([ui["tracker"].experiment_id], filter_string=f"attributes.run_name = '{name}'")
    return runs[0].info.run_id


def test_the_experiment_is_a_classic_training_experiment(ui):
    tags = ui["client"].get_experiment(ui["tracker"].experiment_id).tags
    assert tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_the_front_url_opens_the_runs_table_not_the_genai_pages(ui):
    page = open_page(ui, ui["tracker"].front_url(ui["server"].url))
    page.get_by_text("trial-001").first.wait_for()
    assert f"/experiments/{ui['tracker'].experiment_id}/runs" in page.url
    nav = page.locator("nav, aside").first.inner_text()
    assert "Runs" in nav and "Observability" not in nav and "Sessions" not in nav


def test_the_front_url_lists_the_front_trials_flat_with_their_metrics(ui):
    page = open_page(ui, ui["tracker"].front_url(ui["server"].url))
    page.get_by_text("trial-001").first.wait_for()
    headers = [h.strip() for h in page.get_by_role("columnheader").all_inner_texts()]
    assert {"accuracy", "sigma", "kappa", "phi_cnf"} <= set(headers), headers
    rows = table_rows(page)
    shoot(ui, page, "front-table")
    # The front (trials 1 and 0), most accurate first; no parent row, no other trial.
    assert len(rows) == 2 and "trial-001" in rows[0] and "trial-000" in rows[1], rows
    assert "0.85 0.05 1 0.04" in rows[0] and "0.8 0.05 1 0.03" in rows[1], rows
    assert "2 matching runs" in page.inner_text("body")


def test_the_parent_run_shows_the_pareto_figure(ui):
    parent = ui["tracker"].parent_id
    page = open_page(ui, f"{ui['server'].url}/#/experiments/{ui['tracker'].experiment_id}/runs/{parent}"
                         "/artifacts/pareto_front.png?workflowType=machine_learning")
    wait_for_figure(page, "pareto_front.png")
    shoot(ui, page, "parent-pareto-front")
    assert "tiny-front" in page.inner_text("body")


def test_a_front_trial_run_shows_its_confidence_figure(ui):
    page = open_page(ui, f"{ui['server'].url}/#/experiments/{ui['tracker'].experiment_id}/runs/"
                         f"{run_id(ui, 'trial-001')}/artifacts/confidence.png?workflowType=machine_learning")
    wait_for_figure(page, "confidence.png")
    shoot(ui, page, "trial-confidence")
    # The run's description, once its page has rendered (the side bar comes first).
    page = open_page(ui, f"{ui['server'].url}/#/experiments/{ui['tracker'].experiment_id}/runs/"
                         f"{run_id(ui, 'trial-001')}?workflowType=machine_learning")
    page.get_by_text("Trial 1 of kd-search study tiny-front.").first.wait_for()
