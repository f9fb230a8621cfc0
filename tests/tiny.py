"""Tiny random BERT teachers, tokenizers and local CSV tasks built inside the tests."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import yaml
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

WORDS = ["good", "great", "fine", "fun", "bad", "awful", "dull", "poor", "the", "a", "movie", "plot", "was", "is"]
POSITIVE, NEGATIVE = WORDS[:4], WORDS[4:8]


def tiny_teacher_dir(root: Path, layers: int = 2, hidden: int = 32, heads: int = 2, seed: int = 0) -> Path:
    """A random BERT classifier (hidden 32, 2 layers by default) with a word-level tokenizer."""
    directory = root / f"teacher-{layers}x{hidden}"
    if (directory / "config.json").is_file():
        return directory
    directory.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    # transformers 5 ignores vocab_file= (every word would be [UNK]); the vocabulary goes in as a dict.
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}, do_lower_case=True)
    import torch

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=hidden * 2, max_position_embeddings=64,
                        num_labels=2)
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


ARCHITECTURES = ("bert", "roberta", "distilbert", "deberta-v2", "modernbert")


def tiny_config(architecture: str, vocab_size: int, layers: int = 3, hidden: int = 32, heads: int = 2,
                num_labels: int = 2, positions: int = 64):
    """A random config of one encoder family, sized like :func:`tiny_teacher_dir`'s BERT
    (``positions`` tokens at most); special token ids follow the word-level tokenizer
    ([PAD] 0, [CLS] 2, [SEP] 3)."""
    import transformers

    special = {"pad_token_id": 0}
    if architecture == "distilbert":
        return transformers.DistilBertConfig(vocab_size=vocab_size, dim=hidden, n_layers=layers, n_heads=heads,
                                             hidden_dim=hidden * 2, max_position_embeddings=positions,
                                             num_labels=num_labels, **special)
    if architecture == "modernbert":
        # Every third layer global, the others local over 8 tokens: subsets keep each layer's kind.
        return transformers.ModernBertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                             num_attention_heads=heads, intermediate_size=hidden * 2,
                                             max_position_embeddings=positions, local_attention=8, num_labels=num_labels,
                                             bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3, **special)
    classes = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig,
               "deberta-v2": transformers.DebertaV2Config}
    # RoBERTa numbers positions from pad_token_id + 1: two more positions than BERT.
    return classes[architecture](vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                 num_attention_heads=heads, intermediate_size=hidden * 2,
                                 max_position_embeddings=positions + 2, num_labels=num_labels, **special)


def tiny_encoder_dir(root: Path, architecture: str, layers: int = 3, hidden: int = 32, heads: int = 2,
                     seed: int = 0, words: list[str] | None = None, positions: int = 64) -> Path:
    """A random classifier of one encoder family (see ``ARCHITECTURES``) saved with a
    word-level tokenizer, as a teacher (or pretrained student) directory."""
    import torch
    from transformers import AutoModelForSequenceClassification

    directory = root / (f"{architecture}-{layers}x{hidden}" + ("" if words is None else f"-{len(words)}words")
                        + ("" if positions == 64 else f"-{positions}positions"))
    if (directory / "config.json").is_file():
        return directory
    directory.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(words or WORDS)]
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(seed)
    config = tiny_config(architecture, len(vocab), layers, hidden, heads, positions=positions)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_task_files(root: Path, train_rows: int = 64, eval_rows: int = 32, seed: int = 0) -> tuple[Path, Path]:
    """Two CSV files of short sentences whose label is given by their sentiment word."""
    rng = random.Random(seed)

    def rows(n: int, prefix: str):
        out = []
        for i in range(n):
            label = i % 2
            word = rng.choice(POSITIVE if label else NEGATIVE)
            filler = rng.sample(WORDS[8:], k=rng.randint(1, 4))
            out.append({"id": f"{prefix}{i}", "sentence": " ".join(filler + [word]), "label": label})
        return pd.DataFrame(out)

    train, evaluation = root / "train.csv", root / "eval.csv"
    rows(train_rows, "tr").to_csv(train, index=False)
    rows(eval_rows, "ev").to_csv(evaluation, index=False)
    return train, evaluation


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Rows as a file of the kind the path names: .csv, .jsonl, .parquet, or (no suffix) a
    directory written by ``Dataset.save_to_disk``."""
    frame = pd.DataFrame(rows)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        import datasets

        datasets.Dataset.from_pandas(frame, preserve_index=False).save_to_disk(str(path))
    return path


def sentiment_rows(n: int, names=("negative", "positive"), seed: int = 0, text: str = "sentence") -> list[dict]:
    """``n`` short sentences labelled by their sentiment word: class i of ``names`` (any
    labels: numbers, names, booleans) draws its word from the i-th of len(names) word groups."""
    rng = random.Random(seed)
    groups = [WORDS[:8][i::len(names)] for i in range(len(names))]
    rows = []
    for i in range(n):
        label = i % len(names)
        filler = rng.sample(WORDS[8:], k=rng.randint(1, 4))
        rows.append({text: " ".join(filler + [rng.choice(groups[label])]), "label": names[label]})
    return rows


def tiny_study(root: Path, **overrides) -> dict:
    """A study dict on a tiny teacher and tiny CSV task; ``overrides`` replace top-level keys."""
    teacher = tiny_teacher_dir(root)
    train, evaluation = tiny_task_files(root)
    study = {
        "name": "tiny",
        "seed": 0,
        "device": "cpu",
        "task": {"source": "files", "train_file": str(train), "eval_file": str(evaluation),
                 "text_column": "sentence", "max_length": 16},
        "teacher": {"model": str(teacher), "fine_tune": {"epochs": 2, "learning_rate": 1e-3, "batch_size": 16}},
        "student": {"teacher_layers": [2]},
        "distillation": {"stages": [{"name": "intermediate", "epochs": 1, "learning_rate": 1e-3},
                                    {"name": "prediction", "epochs": 1, "learning_rate": 1e-3}],
                         "batch_size": 16, "cache_dir": str(root / "cache")},
        "search": {"trials": 2, "concurrency": 1, "space": {"alpha": {"low": 0.0, "high": 0.5}}},
        "tracking": {"workdir": str(root / "work")},
    }
    study.update(overrides)
    return study


def search_study(root: Path, trials: int = 4, prediction_epochs: int = 1, **search) -> dict:
    """A tiny study searching the TinyBERT weights, two trials at a time."""
    study = tiny_study(root)
    study["distillation"]["stages"][1]["epochs"] = prediction_epochs
    study["search"] = {"trials": trials, "concurrency": 2, "space": {
        "alpha": {"low": 0.0, "high": 0.5}, "beta": {"low": 0.1, "high": 10.0, "log": True},
        "gamma": {"low": 0.1, "high": 10.0, "log": True}, "temperature": {"low": 1.0, "high": 4.0},
        "layer_weight": {"low": 0.25, "high": 2.0}}, **search}
    return study


def write_study(root: Path, study: dict) -> Path:
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def fill_cache_in_process(root: str, marker: str, result_file: str) -> None:
    """Child-process body for the concurrent cache test: fill (or reuse) and record what it read."""
    import json

    from kd_search.engine.data import load_task
    from kd_search.engine.models import load_classifier, load_tokenizer
    from kd_search.engine.spec import parse_study
    from kd_search.engine.teacher_cache import TeacherLayers, cached_teacher

    study = parse_study(tiny_study(Path(root)))
    teacher_dir = str(tiny_teacher_dir(Path(root)))
    data = load_task(study.task, load_tokenizer(teacher_dir))

    def load_teacher():
        with open(marker, "a") as handle:
            handle.write("computed\n")
        return load_classifier(teacher_dir, 2)

    cache = cached_teacher(Path(root) / "cache", "shared-key", load_teacher, data,
                           TeacherLayers(hidden=(0, 2), scores=(2,)))
    Path(result_file).write_text(json.dumps(cache.logits("train").tolist()))


# (accuracy, sigma) of the finished trials 0-3 of `finished_study`, kappa 0.05: 0 and 1 form
# the feasible front, 2 is the most accurate but infeasible, 3 is dominated by 0.
FINISHED_TRIALS = [(0.80, 0.03), (0.85, 0.04), (0.90, 0.08), (0.78, 0.035)]
FINISHED_KAPPA = 0.05


def finished_study(root: Path, name: str = "tiny-front"):
    """A finished study written by the search's own ``Driver`` (its Ray callbacks called
    directly, no Ray): four finished trials (``FINISHED_TRIALS``) with confidence figures,
    one pruned, then the launch's closing (front tags, Pareto figure, parent run ended).
    Returns the study, its ``Locations`` and its (closed) ``StudyTracker``."""
    import numpy as np

    from kd_search.engine.hyperparameters import default_hyperparameters, search_distributions
    from kd_search.engine.spec import parse_study
    from kd_search.service.search import Locations
    from kd_search.service.search._launch import _close_launch
    from kd_search.service.search.driver import Driver
    from kd_search.service.search.optuna_study import create_or_resume
    from kd_search.service.tracking import StudyTracker

    study = parse_study({"name": name, "description": "a tiny study written by the driver",
                         "student": {"teacher_layers": [2]},
                         "objectives": {"confidence": {"kappa": FINISHED_KAPPA}},
                         "search": {"trials": len(FINISHED_TRIALS), "sampler": "random", "space": {
                             "alpha": {"low": 0.0, "high": 0.5}, "temperature": {"low": 1.0, "high": 4.0}}},
                         "tracking": {"workdir": str(root)}})
    locations = Locations.resolve(study)
    optuna_study, _ = create_or_resume(study, locations.storage, num_mapped_layers=1)
    tracker = StudyTracker(locations.tracking_uri, locations.experiment, study.name,
                           artifact_root=root / "mlartifacts")
    tracker.start_study(study.description, study.model_dump(mode="json"), {"kappa": FINISHED_KAPPA})
    driver = Driver(study, optuna_study, tracker, locations, search_distributions(study, 1),
                    default_hyperparameters(study, 1), [], len(FINISHED_TRIALS) + 1, None)
    rng = np.random.default_rng(0)
    for index, (accuracy, sigma) in enumerate([*FINISHED_TRIALS, (0.6, 0.02)]):
        ray_id = f"run_{index:05d}"
        number = driver.suggest(ray_id)["number"]
        total = 1 if index < len(FINISHED_TRIALS) else 2  # the last one is stopped after epoch 1
        result = {"epoch": 1, "total_epochs": total, "accuracy": accuracy, "sigma": sigma,
                  "kappa": FINISHED_KAPPA, "phi_cnf": sigma <= FINISHED_KAPPA, "n_both": 40}
        driver.on_result(ray_id, result)
        teacher = rng.dirichlet([1.0, 1.0], size=60)
        student = np.clip(teacher + rng.normal(0, sigma, size=teacher.shape), 1e-3, 1.0)
        directory = locations.trial_dir(study.name, number)
        directory.mkdir(parents=True)
        np.savez(directory / "confidence.npz", teacher_probs=teacher,
                 student_probs=student / student.sum(1, keepdims=True), labels=teacher.argmax(1))
        driver.on_complete(ray_id, result, error=False)
    _close_launch(driver, tracker, study, "FINISHED")
    return study, locations, tracker
