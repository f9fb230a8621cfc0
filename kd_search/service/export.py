"""A trained student as a Hugging Face directory (config, safetensors, tokenizer, model card).

The directory loads with ``AutoModelForSequenceClassification.from_pretrained`` and
``pipeline("text-classification", model=DIR)``. Training-only parts (the width
projection) are never written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from kd_search.files import write_directory

CARD_METRICS = ("trial", "accuracy", "teacher_accuracy", "sigma", "kappa", "phi_cnf", "ece", "agreement",
                "train_seconds")


def model_card(spec: dict[str, Any], params: dict[str, Any], metrics: dict[str, Any]) -> str:
    """A README.md model card: what the student is, how it was distilled, how it measures.

    ``spec`` is the study file as data (``Study.model_dump(mode="json")``, as a study
    stores it); a field it lacks shows as ``?``. Parameters that are not numbers (a
    categorical choice of text) are left out.

    Example:
        >>> card = model_card({"name": "demo", "teacher": {"model": "embedded:minilm-l6"}}, {"alpha": 0.5},
        ...                   {"sigma": 0.05})
        >>> card.splitlines()[5], card.splitlines()[7]
        ('# demo: distilled student', 'Distilled with kd-search from teacher `embedded:minilm-l6` on `?`, searched for task accuracy')
        >>> "| sigma | 0.0500 |" in card, "| alpha | 0.5 |" in card
        (True, True)
    """
    study_name = spec.get("name", "?")
    teacher = spec.get("teacher", {}).get("model", "?")
    data = spec.get("task", {}).get("source", "?")
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-classification",
        "tags: [knowledge-distillation, kd-search]",
        "---",
        f"# {study_name}: distilled student",
        "",
        f"Distilled with kd-search from teacher `{teacher}` on `{data}`, searched for task accuracy",
        "and confidence preservation (Vengertsev & Sherman, arXiv 2401.11365): sigma is the",
        "population std of p0_teacher - p0_student over the training inputs both classify",
        "correctly, and phi_cnf holds when sigma <= kappa.",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for name in CARD_METRICS:
        if name in metrics:
            value = metrics[name]
            lines.append(f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |")
    lines += ["", "## Hyperparameters", "", "| name | value |", "|---|---|"]
    lines += [f"| {k} | {v:g} |" if isinstance(v, (int, float)) else f"| {k} | {v} |" for k, v in sorted(params.items())]
    return "\n".join(lines) + "\n"


def save_student(student, tokenizer, out_dir: str | Path, card: str | None = None,
                 metrics: dict[str, Any] | None = None) -> Path:
    """Write the student as a Hugging Face directory; readers never see it half-written.

    Example:
        >>> save_student(result.student, result.tokenizer, "out/student")  # doctest: +SKIP
        PosixPath('out/student')
    """

    def write(staging: Path) -> None:
        student.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        _write_card(staging, card, metrics)

    return write_directory(out_dir, write)


def export_student(student_dir: str | Path, out_dir: str | Path, card: str, metrics: dict[str, Any]) -> Path:
    """Copy a kept student directory to ``out_dir`` with a fresh model card, never half-written.

    Example:
        >>> export_student("runs/studies/demo/trials/3/student", "out/student", card, metrics)  # doctest: +SKIP
        PosixPath('out/student')
    """

    def write(staging: Path) -> None:
        shutil.copytree(student_dir, staging)
        _write_card(staging, card, metrics)

    return write_directory(out_dir, write)


def _write_card(directory: Path, card: str | None, metrics: dict[str, Any] | None) -> None:
    if card is not None:
        (directory / "README.md").write_text(card)
    if metrics is not None:
        (directory / "kd_search_metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
