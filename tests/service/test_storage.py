"""Optuna's SQL storage as kd-search opens it, on real SQLite."""

from __future__ import annotations

import multiprocessing

from kd_search.service.search.optuna_study import open_storage


def _open(url: str) -> None:
    open_storage(url)


def test_processes_opening_one_new_database_at_once_all_succeed(tmp_path):
    # A launch and a `kd-search status` (or two launches) meeting a new database race to
    # create Optuna's tables; the losers must open what the winner created, not fail.
    with multiprocessing.get_context("fork").Pool(4) as pool:
        for round_number in range(12):
            url = f"sqlite:///{tmp_path}/round-{round_number}.db"
            pool.map(_open, [url] * 4, chunksize=1)
