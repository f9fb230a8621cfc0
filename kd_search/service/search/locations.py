"""Where a study's files live: its work dir, Optuna storage and MLflow tracking store.

The layout is shared by the driver (which writes trial directories), the Ray workers
(which save students and confidence arrays there) and the readers (``export``,
``report``), so it has its own module rather than living with any one of them. Nothing
here needs Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kd_search.engine.spec import Study
from kd_search.errors import SearchError
from kd_search.service.search.optuna_study import open_storage
from kd_search.service.tracking import check_tracking_uri, default_tracking_uri


@dataclass(frozen=True)
class Locations:
    """Where a study's files live: work dir, Optuna storage URL, MLflow tracking URI.

    Example:
        >>> Locations.resolve(workdir="/tmp/runs").storage
        'sqlite:////tmp/runs/optuna.db'
    """

    workdir: Path
    storage: str
    tracking_uri: str
    experiment: str = "kd-search"

    @classmethod
    def resolve(cls, study: Study | None = None, workdir: str | Path | None = None, storage: str | None = None,
                tracking_uri: str | None = None) -> Locations:
        """Command-line/environment values first, then the study file, then the defaults."""
        tracking = study.tracking if study is not None else None
        root = Path(workdir or (tracking and tracking.workdir) or "runs").expanduser().resolve()
        return cls(
            workdir=root,
            storage=storage or (tracking and tracking.storage) or f"sqlite:///{root / 'optuna.db'}",
            tracking_uri=tracking_uri or (tracking and tracking.tracking_uri) or default_tracking_uri(root),
            experiment=(tracking and tracking.experiment) or "kd-search",
        )

    def study_dir(self, name: str) -> Path:
        """Per-study files: kept students, confidence arrays, Ray's trial directories."""
        return self.workdir / "studies" / name

    def trial_dir(self, name: str, number: int) -> Path:
        """One trial's files: ``student/`` (when kept) and ``confidence.npz``."""
        return trial_dir(self.study_dir(name), number)


def trial_dir(study_dir: str | Path, number: int) -> Path:
    """One trial's files under a study directory (see ``Locations.trial_dir``).

    Example:
        >>> trial_dir("/tmp/runs/studies/demo", 3).as_posix()
        '/tmp/runs/studies/demo/trials/3'
    """
    return Path(study_dir) / "trials" / str(number)


def confirmation_dir(study_dir: str | Path, number: int, seed: int) -> Path:
    """One confirmation's files (its ``confidence.npz``; no student is kept) under its trial's.

    Example:
        >>> confirmation_dir("/tmp/runs/studies/demo", 3, 1000).as_posix()
        '/tmp/runs/studies/demo/trials/3/seeds/1000'
    """
    return trial_dir(study_dir, number) / "seeds" / str(seed)


def kept_student(locations: Locations, study_name: str, number: int) -> Path:
    """The directory of a finished trial's kept student, or a one-line error saying why not.

    Example:
        >>> kept_student(Locations.resolve(workdir="/tmp/kd-search-doc"), "demo", 3)
        Traceback (most recent call last):
        kd_search.errors.SearchError: trial 3's student was not kept (...)
    """
    directory = locations.trial_dir(study_name, number) / "student"
    if not (directory / "config.json").is_file():
        raise SearchError(f"trial {number}'s student was not kept ({directory} is missing; the study's "
                          "search.keep_checkpoints keeps the Pareto front and the confirmed trials by default)")
    return directory


def check_locations(locations: Locations) -> None:
    """Fail in one line if the study's storage or tracking server cannot be reached.

    A launch checks this first, so a bad URL never costs the teacher's fine-tuning.

    Example:
        >>> check_locations(Locations.resolve(storage="postgresql+psycopg://kd:pw@127.0.0.1:9/optuna"))
        Traceback (most recent call last):
        kd_search.errors.SearchError: storage postgresql+psycopg://kd:***@127.0.0.1:9/optuna: cannot open (...)
    """
    open_storage(locations.storage)
    check_tracking_uri(locations.tracking_uri)
