"""Batches of similar length against shuffled batches: the training time they save and
what they do to accuracy and sigma, over seeds.

Each configuration (the study's defaults and its first enqueued starting point: on the
demo TinyBERT's two stages and Hinton's prediction-only KD) is trained with ``--seeds``
training seeds twice: with shuffled batches (``distillation.group_by_length: false``) and
with batches of rows of similar length (``true``). Two trainings run at a time, one core
each, as the demo's two search slots do. Printed per configuration and batching: the
mean ± sd over seeds of the training loop's seconds, the task metric and sigma; then the
ratio of training seconds (grouped / shuffled) and the per-seed differences.

    python benchmarks/batching.py [--study demo] [--seeds 3] [--workdir runs]

The teacher is the study's own (fine-tuned once, as the study says). Every training is
stored in ``WORKDIR/batching/STUDY.jsonl`` as it finishes: a second run goes on where the
first stopped. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from statistics import mean
from typing import Any

from _common import format_mean_sd, fresh_seeds, json_line, mean_sd, study_copy
from bound_coverage import draw_configurations

from kd_search.engine.hyperparameters import training_params
from kd_search.engine.spec import Study, parse_study
from kd_search.study_file import load_study


def train(spec: dict[str, Any], workdir: str, params: dict[str, Any], seed: int, grouped: bool) -> dict[str, Any]:
    """One training on one core: the training loop's seconds, the task metric and sigma."""
    import torch

    from kd_search.engine.setup import prepare
    from kd_search.engine.trial import run_trial

    torch.set_num_threads(1)
    study = study_copy(parse_study(spec), distillation__seed=seed, distillation__group_by_length=grouped)
    result = run_trial(study, training_params(study, params, {}), setup=prepare(study, workdir))
    metric = study.objectives.task_metric
    return {"train_seconds": round(float(result.metrics["train_seconds"]), 1), metric: float(result.metrics[metric]),
            "sigma": float(result.metrics["sigma"])}


def stored_runs(path: Path) -> dict[tuple[int, int, bool], dict]:
    if not path.exists():
        return {}
    runs = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {(run["config"], run["seed"], run["grouped"]): run for run in runs}


def summary(study: Study, runs: list[dict]) -> dict[str, Any]:
    """Mean and sd over seeds of each figure."""
    names = ("train_seconds", study.objectives.task_metric, "sigma")
    return {name: dict(zip(("mean", "sd"), mean_sd([run[name] for run in runs]), strict=True)) for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="demo", help="a study file or a shipped study's name (default: demo)")
    parser.add_argument("--workdir", default="runs", help="where the teacher and the trainings are kept (default: runs)")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    study = load_study(args.study)
    workdir = Path(args.workdir)
    results_file = workdir / "batching" / f"{study.name}.jsonl"
    results_file.parent.mkdir(parents=True, exist_ok=True)

    from kd_search.engine.setup import prepare

    setup = prepare(study, workdir / study.name)  # the teacher and caches, once, before the workers read them
    params_list = draw_configurations(study, len(setup.pairs), 2, seed=0)
    seeds = [study.training_seed, *fresh_seeds(study, args.seeds - 1)]
    done = stored_runs(results_file)
    todo = [(i, seed, grouped) for i in range(len(params_list)) for seed in seeds for grouped in (False, True)
            if (i, seed, grouped) not in done]
    print(f"{study.name}: {len(params_list)} configurations x {len(seeds)} seeds x 2 batchings; "
          f"{len(todo)} trainings to run, {len(done)} stored", flush=True)
    spec = study.model_dump(mode="json")
    started = time.perf_counter()
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(train, spec, str(workdir / study.name), params_list[i], seed, grouped): (i, seed, grouped)
                   for i, seed, grouped in todo}
        for n, future in enumerate(as_completed(futures), start=1):
            i, seed, grouped = futures[future]
            run = {"config": i, "seed": seed, "grouped": grouped, "params": params_list[i]} | future.result()
            with results_file.open("a") as out:
                out.write(json.dumps(run) + "\n")
            done[(i, seed, grouped)] = run
            print(f"[{n}/{len(todo)}] config {i} seed {seed} {'grouped' if grouped else 'shuffled'}: "
                  f"{run['train_seconds']:.0f} s, sigma {run['sigma']:.4f} "
                  f"({(time.perf_counter() - started) / 60:.1f} min)", flush=True)

    metric = study.objectives.task_metric
    results = []
    for i, params in enumerate(params_list):
        by_batching = {grouped: [done[(i, seed, grouped)] for seed in seeds] for grouped in (False, True)}
        figures = {("grouped" if grouped else "shuffled"): summary(study, runs) for grouped, runs in by_batching.items()}
        ratio = (mean(r["train_seconds"] for r in by_batching[True])
                 / mean(r["train_seconds"] for r in by_batching[False]))
        differences = {name: [g[name] - s[name] for g, s in zip(by_batching[True], by_batching[False], strict=True)]
                       for name in (metric, "sigma")}
        recipe = "two stages" if int(params["epochs_intermediate"]) else "prediction only"
        print(f"config {i} ({recipe}): training seconds x{ratio:.2f} grouped / shuffled")
        for batching, figure in figures.items():
            print(f"  {batching:8s}: train {format_mean_sd(*figure['train_seconds'].values(), digits=1)} s, "
                  f"{metric} {format_mean_sd(*figure[metric].values())}, sigma {format_mean_sd(*figure['sigma'].values())}")
        print(f"  grouped - shuffled per seed: {metric} {' '.join(f'{d:+.4f}' for d in differences[metric])}; "
              f"sigma {' '.join(f'{d:+.4f}' for d in differences['sigma'])}")
        results.append({"config": i, "recipe": recipe, "train_seconds_ratio": ratio, "differences": differences}
                       | figures)
    json_line({"study": study.name, "seeds": seeds, "configs": results})


if __name__ == "__main__":
    main()
