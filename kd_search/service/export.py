"""A trained student as a Hugging Face directory (config, safetensors, tokenizer, model card).

The directory loads with ``AutoModelForSequenceClassification.from_pretrained`` and
``pipeline("text-classification", model=DIR)``. Training-only parts (the width
projection) are never written.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

CARD_METRICS = ("trial", "accuracy", "teacher_accuracy", "sigma", "kappa", "phi_cnf", "ece", "agreement",
                "train_seconds")


def model_card(study_name: str, teacher: str, data: str, params: dict[str, float], metrics: dict[str, Any]) -> str:
    """A README.md model card: what the student is, how it was distilled, how it measures.

    Example:
        >>> "sigma" in model_card("demo", "embedded:minilm-l6", "rotten_tomatoes", {}, {"sigma": 0.05})
        True
    """
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
    lines += [f"| {k} | {v:g} |" for k, v in sorted(params.items())]
    return "\n".join(lines) + "\n"


def save_student(student, tokenizer, out_dir: str | Path, card: str | None = None,
                 metrics: dict[str, Any] | None = None) -> Path:
    """Write the student as a Hugging Face directory, atomically (staging dir, then rename).

    Example:
        >>> save_student(result.student, result.tokenizer, "out/student")  # doctest: +SKIP
        PosixPath('out/student')
    """

    def write(staging: Path) -> None:
        student.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)

    return _write_atomically(Path(out_dir), write, card, metrics)


def export_student(student_dir: str | Path, out_dir: str | Path, card: str, metrics: dict[str, Any]) -> Path:
    """Copy a kept student directory to ``out_dir`` with a fresh model card, atomically.

    Example:
        >>> export_student("runs/studies/demo/trials/3/student", "out/student", card, metrics)  # doctest: +SKIP
        PosixPath('out/student')
    """

    def write(staging: Path) -> None:
        shutil.copytree(student_dir, staging)

    return _write_atomically(Path(out_dir), write, card, metrics)


def _write_atomically(out: Path, write, card: str | None, metrics: dict[str, Any] | None) -> Path:
    # Readers never see a half-written directory: build it beside the target, then rename.
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    write(staging)
    if card is not None:
        (staging / "README.md").write_text(card)
    if metrics is not None:
        (staging / "kd_search_metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return out
