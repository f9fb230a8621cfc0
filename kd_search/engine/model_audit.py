"""Audit two models, not their prediction files: run teacher and student on a study's task.

Both models are sequence classifiers (a local Hugging Face directory or a hub id). They
read the same token ids, those of the teacher's tokenizer, so the student's tokenizer
must split text as the teacher's does. The report is :func:`kd_search.engine.audit.audit_report`
on the study's confidence split, the same as the audit of the two models' prediction files.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig

from kd_search.engine import measures
from kd_search.engine.audit import Report, audit_report
from kd_search.engine.data import load_task
from kd_search.engine.models import ModelError, load_classifier, load_tokenizer, resolve_model
from kd_search.engine.setup import resolve_device
from kd_search.engine.spec import Study
from kd_search.engine.teacher import evaluate_classifier

# Texts both tokenizers must split alike: case, punctuation, digits, accents, a rare word.
TOKENIZER_PROBES = ("The movie was GREAT, wasn't it?", "a dull plot: 2 hours & 15 minutes.",
                    "Café crème, naïve déjà vu", "antidisestablishmentarianism")


def audit_models(teacher_model: str, student_model: str, study: Study, kappa: float | None = None,
                 convention: measures.Convention | None = None, *, level: float | None = None,
                 resamples: int | None = None, seed: int | None = None) -> Report:
    """The audit report of two classifiers run on the study's confidence split (with
    ``split`` added), tokenized with the teacher's tokenizer.

    Settings left ``None`` come from the study: its kappa (when a number), convention,
    interval level, resamples and seed. Raises :class:`~kd_search.engine.models.ModelError`
    for a model that is missing, has another label count than the task, or a student
    tokenizer that differs from the teacher's.

    Example:
        >>> audit_models("runs/teacher", "runs/student", load_study("demo"))["split"]  # doctest: +SKIP
        'train'
    """
    spec = study.objectives.confidence
    tokenizer = load_tokenizer(_existing(teacher_model, "teacher"))
    check_same_tokenizer(tokenizer, load_tokenizer(_existing(student_model, "student")), student_model)
    data = load_task(study.task, tokenizer)
    split = data.train if spec.split == "train" else data.eval
    device = resolve_device(study.device)
    probs = [measures.softmax(evaluate_classifier(_classifier(name, role, data.num_labels).to(device), split,
                                                    study.distillation.eval_batch_size, device))
             for name, role in ((teacher_model, "teacher"), (student_model, "student"))]
    report = audit_report(*probs, split.labels.numpy(), spec.fixed_kappa if kappa is None else kappa,
                          convention or spec.convention, level=spec.level if level is None else level,
                          resamples=spec.resamples if resamples is None else resamples,
                          seed=study.seed if seed is None else seed)
    return report | {"split": spec.split}


def _existing(name: str, role: str) -> str:
    # A local path that is not there would otherwise be tried as a hub id, over the network.
    if name.startswith(("/", "./", "../", "~")) and not Path(name).expanduser().exists():
        raise ModelError(f"{role} model {name}: no such directory")
    return name


def _classifier(name: str, role: str, num_labels: int):
    # The label count is checked on the config first: loading would replace a head of
    # another size with a random one.
    try:
        config = AutoConfig.from_pretrained(resolve_model(name))
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load the {role} model {name!r}: {str(error).splitlines()[0]}") from None
    if config.num_labels != num_labels:
        raise ModelError(f"{role} model {name}: {config.num_labels} labels, but the task has {num_labels} classes")
    return load_classifier(name, num_labels)


def check_same_tokenizer(teacher_tokenizer, student_tokenizer, student_model: str) -> None:
    """Raise :class:`~kd_search.engine.models.ModelError` unless both tokenizers have the same
    vocabulary and split :data:`TOKENIZER_PROBES` into the same ids.

    Example:
        >>> tokenizer = load_tokenizer("embedded:minilm-l6")
        >>> check_same_tokenizer(tokenizer, tokenizer, "student")
    """
    teacher_vocab, student_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if teacher_vocab != student_vocab:
        raise ModelError(f"student model {student_model}: its tokenizer's vocabulary ({len(student_vocab)} tokens) "
                         f"differs from the teacher's ({len(teacher_vocab)} tokens)")
    for text in TOKENIZER_PROBES:
        if teacher_tokenizer(text)["input_ids"] != student_tokenizer(text)["input_ids"]:
            raise ModelError(f"student model {student_model}: its tokenizer splits {text!r} differently from "
                             "the teacher's")
