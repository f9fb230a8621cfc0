"""A trained student in MLflow's model registry: a pyfunc model on its trial's run, with an alias."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException


class StudentClassifier(mlflow.pyfunc.PythonModel):
    """An MLflow pyfunc model around the exported Hugging Face directory.

    ``predict`` takes a list of texts and returns one ``{"label", "score"}`` per text, as
    ``pipeline("text-classification")`` does.
    """

    def load_context(self, context) -> None:
        from transformers import pipeline

        self.pipeline = pipeline("text-classification", model=context.artifacts["student"])

    def predict(self, context, model_input: list[str], params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.pipeline(list(model_input))


def register_student(tracking_uri: str, run_id: str, student_dir: str | Path, model_name: str, alias: str) -> str:
    """Log the student on its trial's run as a pyfunc model, register it and set ``alias``.

    Returns the registered version. Load it back with
    ``mlflow.pyfunc.load_model(f"models:/{model_name}@{alias}")``.

    Example:
        >>> register_student("sqlite:///runs/mlflow.db", run_id, "out/student", "demo-student", "best")  # doctest: +SKIP
        '1'
    """
    # Client calls only: the fluent API would set the process-wide tracking URI (and the
    # MLFLOW_TRACKING_URI environment variable every child process inherits).
    client = MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory() as staging:
        model_dir = Path(staging) / "student"
        mlflow.pyfunc.save_model(str(model_dir), python_model=StudentClassifier(),
                                 artifacts={"student": str(student_dir)},
                                 pip_requirements=["kd-search", "transformers", "torch"])
        client.log_artifacts(run_id, str(model_dir), "student")
    try:
        client.create_registered_model(model_name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{client.get_run(run_id).info.artifact_uri}/student"
    version = client.create_model_version(model_name, source=source, run_id=run_id)
    client.set_registered_model_alias(model_name, alias, version.version)
    return str(version.version)
