"""How often does the certified bound cover a fresh seed? Coverage of U, measured.

kd-search certifies phi_cnf for a recipe when U, a one-sided 95% upper prediction bound
on the sigma of the recipe trained again with a new seed, is at most kappa
(:func:`~kd_search.engine.measures.certify`). This benchmark measures whether U earns
its level. It draws ``--configs`` configurations from the study's search space (the
study's enqueued points first, then a random sampler, distinct students only, so sigma
spreads on both sides of kappa, failing configurations included), and trains each with

- the search's own seed and ``--confirmation-seeds`` confirmation seeds (the seeds
  ``kd-search confirm`` uses: ``search seed + 1000 k``), from which U is computed, and
- ``--fresh-seeds`` fresh seeds that neither uses (``search seed + 100000 + k``).

It reports, for U computed from the search seed and the first 2, 3, ... confirmation
seeds:

- ``coverage``: the share of (configuration, fresh seed) pairs whose fresh sigma is at most
  U, with its 95% Wilson interval (the target is 0.95: a bound that covers less promises
  more than it keeps). Fresh seeds of one configuration share its U, so the pairs are not
  independent: the per-configuration shares are printed too;
- ``certified_hold_rate``: over the configurations certified (U <= kappa), the share of
  their fresh seeds with sigma <= kappa; ``single_seed_hold_rate``: the same over the
  configurations whose search seed alone satisfies phi_cnf (what a user who trusts one
  seed sees). Both with Wilson intervals, at the study's kappa or at each ``--kappa``.

    python benchmarks/bound_coverage.py [--study smoke] [--configs 12] [--confirmation-seeds 4] [--fresh-seeds 6]

Every training is stored in ``WORKDIR/bound_coverage/STUDY.jsonl`` as it finishes: a
second run goes on where the first stopped. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import optuna
from _common import fresh_seeds, json_line, study_copy, wilson_interval

from kd_search.engine.hyperparameters import (
    config_key,
    default_hyperparameters,
    search_distributions,
    suggest,
    training_params,
)
from kd_search.engine.measures import certify
from kd_search.engine.setup import prepare
from kd_search.engine.spec import Study
from kd_search.engine.trial import run_trial
from kd_search.service.search.confirmation_queue import confirmation_seeds
from kd_search.study_file import load_study


def draw_configurations(study: Study, num_mapped_layers: int, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` distinct students' training parameters: the study's enqueued points, then
    random draws from its search space (the recipe-aware suggestion the search uses).

    Example:
        >>> [int(params["epochs_intermediate"]) for params in draw_configurations(load_study("smoke"), 3, 4, seed=0)]
        [1, 0, 1, 1]
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler_study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for point in study.search.enqueue:
        sampler_study.enqueue_trial(dict(point))
    defaults = default_hyperparameters(study, num_mapped_layers)
    distributions = search_distributions(study, num_mapped_layers)
    configs: dict[str, dict[str, Any]] = {}
    if study.search.enqueue_defaults:  # the search's first trial: the study's own hyperparameters
        configs[config_key(study, defaults)] = defaults
    for _ in range(100 * count):
        if len(configs) == count:
            break
        trial = sampler_study.ask()
        params, _dropped = suggest(trial, study, distributions, defaults)
        sampler_study.tell(trial, 0.0)
        configs.setdefault(config_key(study, params), params)
    return list(configs.values())


def train(study: Study, setup, params: dict[str, Any], seed: int) -> dict[str, float]:
    """One training of ``params`` with training seed ``seed``: its sigma, sigma's bootstrap
    standard error and the task metric."""
    started = time.perf_counter()
    result = run_trial(study_copy(study, distillation__seed=seed), training_params(study, params, {}), setup=setup)
    metric = study.objectives.task_metric
    return {"sigma": float(result.metrics["sigma"]), "sigma_se": float(result.metrics["sigma_se"]),
            metric: float(result.metrics[metric]), "seconds": round(time.perf_counter() - started, 1)}


def stored_runs(path: Path) -> dict[tuple[int, int], dict]:
    if not path.exists():
        return {}
    runs = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {(run["config"], run["seed"]): run for run in runs}


def rate(holds: list[bool]) -> dict[str, Any]:
    """A share with its 95% Wilson interval and count.

    Example:
        >>> rate([True, True, False, True])["rate"]
        0.75
    """
    low, high = wilson_interval(sum(holds), len(holds))
    return {"rate": sum(holds) / len(holds) if holds else None, "low": low, "high": high, "n": len(holds)}


def show(name: str, figures: dict[str, Any]) -> str:
    if not figures["n"]:
        return f"{name} n/a (none)"
    return f"{name} {figures['rate']:.3f} [{figures['low']:.3f}, {figures['high']:.3f}] (n={figures['n']})"


def coverage_at(configs: list[dict], confirmations: int, kappas: list[float]) -> dict[str, Any]:
    """The bound from the search seed and the first ``confirmations`` confirmation seeds:
    how often it covers a fresh seed, and how often the verdicts it gives hold."""
    covered, per_config, by_kappa = [], [], {}
    for config in configs:
        seeds = [config["search"], *config["confirmations"][:confirmations]]
        upper = certify([s["sigma"] for s in seeds], [s["sigma_se"] for s in seeds], kappa=1.0).upper_bound
        fresh = [run["sigma"] <= upper for run in config["fresh"]]
        covered += fresh
        per_config.append({"config": config["config"], "upper_bound": upper, "covered": sum(fresh)})
    for kappa in kappas:
        certified, single = [], []
        for config in configs:
            seeds = [config["search"], *config["confirmations"][:confirmations]]
            holds = [run["sigma"] <= kappa for run in config["fresh"]]
            if certify([s["sigma"] for s in seeds], [s["sigma_se"] for s in seeds], kappa).verdict.value == "certified":
                certified += holds
            if config["search"]["sigma"] <= kappa:
                single += holds
        by_kappa[f"{kappa:g}"] = {"certified_hold_rate": rate(certified), "single_seed_hold_rate": rate(single)}
    return {"confirmation_seeds": confirmations, "coverage": rate(covered), "per_config": per_config,
            "at_kappa": by_kappa}


def decided_early(config: dict, confirmations: int, kappa: float):
    """The verdict ``search.confirm.decide_early`` stops at: the first of 1, 2, ...,
    ``confirmations`` confirmation seeds where it is certified or fails, else the last."""
    for k in range(1, confirmations + 1):
        seeds = [config["search"], *config["confirmations"][:k]]
        verdict = certify([s["sigma"] for s in seeds], [s["sigma_se"] for s in seeds], kappa)
        if verdict.verdict.value in ("certified", "fails"):
            break
    return verdict


def early_decision_at(configs: list[dict], confirmations: int, kappas: list[float]) -> dict[str, Any]:
    """Coverage and hold rates of the bound a ``decide_early`` confirmation stops with
    (stopping when U first drops below kappa favours a low U: this measures the cost)."""
    by_kappa = {}
    for kappa in kappas:
        covered, certified, seeds_used = [], [], []
        for config in configs:
            verdict = decided_early(config, confirmations, kappa)
            seeds_used.append(verdict.seeds - 1)
            covered += [run["sigma"] <= verdict.upper_bound for run in config["fresh"]]
            if verdict.verdict.value == "certified":
                certified += [run["sigma"] <= kappa for run in config["fresh"]]
        by_kappa[f"{kappa:g}"] = {"coverage": rate(covered), "certified_hold_rate": rate(certified),
                                  "mean_confirmation_seeds": sum(seeds_used) / len(seeds_used)}
    return {"max_confirmation_seeds": confirmations, "at_kappa": by_kappa}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="smoke", help="a study file or a shipped study's name (default: smoke)")
    parser.add_argument("--workdir", default="runs", help="where the teacher and the trainings are kept (default: runs)")
    parser.add_argument("--configs", type=int, default=12)
    parser.add_argument("--confirmation-seeds", type=int, default=4)
    parser.add_argument("--fresh-seeds", type=int, default=6)
    parser.add_argument("--kappa", type=float, action="append",
                        help="judge the verdicts at this kappa (repeatable; default: the study's)")
    parser.add_argument("--sampler-seed", type=int, default=0)
    args = parser.parse_args()
    study = load_study(args.study)
    if not args.kappa and study.objectives.confidence.fixed_kappa is None:
        parser.error(f"{study.name} sets kappa: bound (a kappa per trial): name the kappas to judge at with --kappa")
    workdir = Path(args.workdir)
    results_file = workdir / "bound_coverage" / f"{study.name}.jsonl"
    results_file.parent.mkdir(parents=True, exist_ok=True)
    setup = prepare(study, workdir / study.name)
    params_list = draw_configurations(study, len(setup.pairs), args.configs, args.sampler_seed)
    search_seed = study.training_seed
    confirmation = confirmation_seeds(study, args.confirmation_seeds)
    fresh = fresh_seeds(study, args.fresh_seeds)
    done = stored_runs(results_file)
    todo = [(i, s) for i in range(len(params_list)) for s in [search_seed, *confirmation, *fresh] if (i, s) not in done]
    print(f"{study.name}: {len(params_list)} configurations x (1 search + {len(confirmation)} confirmation + "
          f"{len(fresh)} fresh seeds); {len(todo)} trainings to run, {len(done)} stored", flush=True)
    started = time.perf_counter()
    for n, (i, seed) in enumerate(todo, start=1):
        run = {"config": i, "seed": seed, "params": params_list[i]} | train(study, setup, params_list[i], seed)
        with results_file.open("a") as out:
            out.write(json.dumps(run) + "\n")
        done[(i, seed)] = run
        left = (time.perf_counter() - started) / n * (len(todo) - n)
        print(f"[{n}/{len(todo)}] config {i} seed {seed}: sigma {run['sigma']:.4f} ± {run['sigma_se']:.4f} "
              f"({run['seconds']:.0f} s; about {left / 60:.0f} min left)", flush=True)

    configs = [{"config": i, "search": done[(i, search_seed)], "confirmations": [done[(i, s)] for s in confirmation],
                "fresh": [done[(i, s)] for s in fresh]} for i in range(len(params_list))]
    kappas = args.kappa or [study.objectives.confidence.fixed_kappa]
    for config in configs:
        sigmas = [config["search"]["sigma"], *(run["sigma"] for run in config["confirmations"])]
        fresh_sigmas = [run["sigma"] for run in config["fresh"]]
        print(f"config {config['config']}: sigma by seed (search, confirmations) "
              f"{' '.join(f'{s:.4f}' for s in sigmas)}; fresh {' '.join(f'{s:.4f}' for s in fresh_sigmas)}")
    results = [coverage_at(configs, k, kappas) for k in range(1, args.confirmation_seeds + 1)]
    for result in results:
        line = [show(f"coverage of U from the search seed + {result['confirmation_seeds']} confirmation seeds:",
                     result["coverage"])]
        for kappa, verdicts in result["at_kappa"].items():
            line.append(f"at kappa {kappa}: " + show("certified holds", verdicts["certified_hold_rate"]) + "; "
                        + show("single seed holds", verdicts["single_seed_hold_rate"]))
        print("; ".join(line))
    early = early_decision_at(configs, args.confirmation_seeds, kappas)
    for kappa, figures in early["at_kappa"].items():
        print(f"decide_early, up to {args.confirmation_seeds} confirmation seeds, at kappa {kappa}: "
              + show("coverage", figures["coverage"]) + "; " + show("certified holds", figures["certified_hold_rate"])
              + f"; {figures['mean_confirmation_seeds']:.2f} confirmation seeds on average")
    json_line({"study": study.name, "decide_early": early, "configs": len(configs), "fresh_seeds": fresh, "confirmation_seeds": confirmation,
               "search_seed": search_seed, "kappas": kappas, "by_confirmation_seeds": results,
               "sigmas": [{"config": c["config"], "search": c["search"]["sigma"],
                           "confirmations": [r["sigma"] for r in c["confirmations"]],
                           "fresh": [r["sigma"] for r in c["fresh"]]} for c in configs]})


if __name__ == "__main__":
    main()
