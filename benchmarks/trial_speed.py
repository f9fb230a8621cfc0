"""Cached teacher outputs vs. the teacher run in every step, measured side by side.

The same trial runs one epoch twice: reading the teacher-output cache, and running the
teacher in every step (Rotten Tomatoes, batch 32, max length 64). Two teacher/student
pairs:

- paper: the paper's shapes, a BERT-base teacher (12 layers, 768 wide; random weights,
  since nothing is downloaded here: speed does not depend on the weights) and a fresh
  TinyBERT-4L-312D student, prediction stage;
- demo: the embedded MiniLM-L6 teacher and a 3-layer student from its layers 2/4/6, both
  stages. Here the student is half the teacher, so the teacher's forward is a small
  part of a step and the cache gains little in the prediction stage.

The cache is filled before timing; its one-off fill time is printed too. Times are the
training loop only (`train_seconds`), evaluation excluded.

    python benchmarks/trial_speed.py [--train-limit 1024]

The last line is one JSON object with `prediction_stage_speedup` (the paper pair),
`intermediate_stage_speedup` (the demo pair) and `demo_prediction_stage_speedup`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _common import json_line

from kd_search.engine.spec import parse_study
from kd_search.engine.trial import prepare, run_trial, teacher_layers, teacher_outputs


def bert_base_teacher(directory: Path) -> str:
    """A BERT-base-shaped classifier with random weights and the embedded (uncased) vocabulary."""
    from transformers import BertConfig, BertForSequenceClassification

    from kd_search.engine.models import load_tokenizer

    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(num_labels=2)).save_pretrained(directory)
    load_tokenizer("embedded:minilm-l6").save_pretrained(directory)
    return str(directory)


def study_for(pair: str, stage: str, cache: bool, train_limit: int, workdir: str) -> dict:
    if pair == "paper":
        models = {"teacher": {"model": f"{workdir}/bert-base"},
                  "student": {"config": {"layers": 4, "hidden": 312, "heads": 12, "intermediate": 1200}}}
    else:
        models = {"teacher": {"model": "embedded:minilm-l6"}, "student": {"teacher_layers": [2, 4, 6]}}
    return {
        "name": f"bench-{pair}-{stage}-{'cache' if cache else 'live'}",
        "device": "cpu",
        "task": {"source": "rotten_tomatoes", "max_length": 64, "train_limit": train_limit, "eval_limit": 64},
        **models,
        "distillation": {"stages": [{"name": stage, "epochs": 1}], "batch_size": 32, "cache_teacher": cache,
                         "cache_dir": f"{workdir}/cache"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-limit", type=int, default=1024)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        bert_base_teacher(Path(workdir) / "bert-base")
        for pair, stage, key in (("paper", "prediction", "prediction_stage"),
                                 ("demo", "prediction", "demo_prediction_stage"),
                                 ("demo", "intermediate", "intermediate_stage")):
            seconds = {}
            for cache in (True, False):
                study = parse_study(study_for(pair, stage, cache, args.train_limit, workdir))
                setup = prepare(study, workdir)
                if cache:  # fill the cache outside the timed trial
                    started = time.perf_counter()
                    teacher_outputs(setup, teacher_layers(setup))
                    print(f"{pair} {stage}: cache fill {time.perf_counter() - started:.1f} s (once per study)")
                seconds[cache] = run_trial(study, {}, setup=setup).metrics["train_seconds"]
            ratio = seconds[False] / seconds[True]
            steps = -(-args.train_limit // 32)
            print(f"{pair} pair, {stage} stage: teacher every step {seconds[False]:.1f} s "
                  f"({1000 * seconds[False] / steps:.0f} ms/step), cached {seconds[True]:.1f} s "
                  f"({1000 * seconds[True] / steps:.0f} ms/step): {ratio:.2f}x", flush=True)
            results[f"{key}_speedup"] = round(ratio, 2)
            results[f"{key}_seconds"] = {"on_the_fly": round(seconds[False], 2), "cached": round(seconds[True], 2)}
    json_line(results)


if __name__ == "__main__":
    main()
