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
from kd_search.service.search.presenting import verdict_text
from kd_search.service.search.records import TrialRecord, trust_fields

CARD_METRICS = ("trial", "accuracy", "teacher_accuracy", "sigma", "kappa", "phi_cnf", "ece", "agreement",
                "train_seconds", "verdict_text", "seeds")


def exported_metrics(record: TrialRecord, search_seed: int | None = None) -> dict[str, Any]:
    """What an exported student's card and ``kd_search_metrics.json`` say about it: the
    trial's recorded metrics, its verdict over seeds with the bound behind it, each
    COMPLETE seed's task metric and sigma (``per_seed``, the search's first, trained with
    ``search_seed``), and their mean and standard deviation.

    Example:
        >>> record = TrialRecord(3, "COMPLETE", 0.81, 0.04, 0.05, {}, {"sigma_se": 0.002})
        >>> metrics = exported_metrics(record, search_seed=0)
        >>> metrics["verdict"], metrics["verdict_text"], metrics["per_seed"]
        ('unconfirmed', 'holds on one seed (unconfirmed)', [{'seed': 0, 'accuracy': 0.81, 'sigma': 0.04}])
    """
    verdict = record.verdict
    name = record.metric_name
    per_seed = [{"seed": search_seed, name: record.metric, "sigma": record.sigma}] if record.seeds else []
    per_seed += [{"seed": c.get("seed"), name: c.get(name), "sigma": c.get("sigma")}
                 for c in record.confirmations if c.get("state") == "COMPLETE" and c.get("sigma") is not None]
    return record.attrs | {
        "trial": record.number, "phi_cnf": record.feasible, name: record.metric,
        "verdict": verdict.verdict.value if verdict else None, "verdict_text": verdict_text(record),
        "sigma_upper_bound": verdict.upper_bound if verdict else None, "seeds": record.seeds, "per_seed": per_seed,
        "sigma_mean": record.sigma_mean, "sigma_std": record.sigma_std,
        f"{name}_mean": record.metric_mean, f"{name}_std": record.metric_std}


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
            lines.append(f"| {name.removesuffix('_text')} | {_card_value(name, metrics)} |")
    lines += _seeds_section(metrics, spec.get("objectives", {}).get("task_metric", "accuracy"))
    lines += _trust_section(metrics)
    lines += ["", "## Hyperparameters", "", "| name | value |", "|---|---|"]
    lines += [f"| {k} | {v:g} |" if isinstance(v, (int, float)) else f"| {k} | {v} |" for k, v in sorted(params.items())]
    return "\n".join(lines) + "\n"


def _card_value(name: str, metrics: dict[str, Any]) -> str:
    value = metrics[name]
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
    if name in ("sigma", "accuracy") and isinstance(low, float) and isinstance(high, float):
        text += f" [{low:.4f}, {high:.4f}]"
    return text


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def _seeds_section(metrics: dict[str, Any], metric_name: str) -> list[str]:
    # The verdict over training seeds, each seed's values and their spread.
    if not metrics.get("per_seed"):
        return []
    bound, kappa = metrics.get("sigma_upper_bound"), metrics.get("kappa")
    lines = ["", "## Confidence over training seeds", "",
             f"Verdict: **{metrics.get('verdict_text')}**. phi_cnf is certified when a 95% upper prediction",
             "bound on the sigma of this recipe trained again with a new seed is <= kappa (Student t over",
             "the seeds, plus the bootstrap error of each sigma; one seed is never certified):",
             f"here {_number(bound)} against kappa {_number(kappa)}.", "",
             f"| seed | {metric_name} | sigma |", "|---|---|---|"]
    for index, run in enumerate(metrics["per_seed"]):
        seed = f"{run['seed']} (search)" if index == 0 else str(run["seed"])
        lines.append(f"| {seed} | {_number(run.get(metric_name))} | {_number(run.get('sigma'))} |")
    if len(metrics["per_seed"]) > 1:
        lines += ["", f"Over {len(metrics['per_seed'])} seeds (mean ± sd): {metric_name} "
                  f"{_number(metrics.get(f'{metric_name}_mean'))} ± {_number(metrics.get(f'{metric_name}_std'))}, "
                  f"sigma {_number(metrics.get('sigma_mean'))} ± {_number(metrics.get('sigma_std'))}."]
    return lines


def _trust_section(metrics: dict[str, Any]) -> list[str]:
    # Beyond sigma, on the eval split against the teacher (kd_search.engine.measures.trust); the
    # measures a study did not record are left out.
    found = {name: value for name, value in trust_fields(metrics).items() if isinstance(value, (int, float))}
    if not found:
        return []
    return ["", "## Trust beyond sigma", "",
            "sigma on both splits (per class on tasks of more than two classes); on the eval split: prediction",
            "flips against the teacher (all inputs, and the inputs the teacher gets right), mean",
            "KL(teacher || student), Brier score and NLL of student and teacher.", "",
            "| measure | value |", "|---|---|", *(f"| {name} | {value:.4f} |" for name, value in found.items())]


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


def export_student(student_dir: str | Path, out_dir: str | Path, card: str, metrics: dict[str, Any],
                   label_names: list[str] | None = None) -> Path:
    """Copy a kept student directory to ``out_dir`` with a fresh model card, never half-written.

    ``label_names`` (the study's class names, class i first) are written into the copy's
    config as ``id2label``/``label2id``, so a ``pipeline`` on it answers with them.

    Example:
        >>> export_student("runs/studies/demo/trials/3/student", "out/student", card, metrics,
        ...                ["negative", "positive"])  # doctest: +SKIP
        PosixPath('out/student')
    """

    def write(staging: Path) -> None:
        shutil.copytree(student_dir, staging)
        if label_names:
            name_classes(staging / "config.json", label_names)
        _write_card(staging, card, metrics)

    return write_directory(out_dir, write)


def name_classes(config_file: Path, label_names: list[str]) -> None:
    """Set a saved model config's ``id2label``/``label2id`` to the class names, as
    ``PreTrainedConfig.save_pretrained`` writes them (ids as text keys).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "config.json"
        >>> _ = path.write_text('{"id2label": {"0": "LABEL_0", "1": "LABEL_1"}}')
        >>> name_classes(path, ["rotten", "fresh"])
        >>> json.loads(path.read_text())
        {'id2label': {'0': 'rotten', '1': 'fresh'}, 'label2id': {'rotten': 0, 'fresh': 1}}
    """
    config = json.loads(config_file.read_text())
    config["id2label"] = {str(i): name for i, name in enumerate(label_names)}
    config["label2id"] = {name: i for i, name in enumerate(label_names)}
    config_file.write_text(json.dumps(config, indent=2) + "\n")


def _write_card(directory: Path, card: str | None, metrics: dict[str, Any] | None) -> None:
    if card is not None:
        (directory / "README.md").write_text(card)
    if metrics is not None:
        (directory / "kd_search_metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
