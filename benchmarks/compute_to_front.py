"""Feasible hypervolume against epochs consumed: fifo+random, fifo+default, mo_asha+default.

For each seed, three studies with the same trial budget run real distillation trials (the
smoke study's task and models unless ``--study`` says otherwise, ``--epochs`` per trial so
that multi-objective ASHA has rungs to judge at: epochs 1, 2, 4, ... below the total):

- ``fifo+random``: every trial to its end, Optuna's RandomSampler;
- ``fifo+default``: every trial to its end, the study's sampler;
- ``mo_asha+default``: the study's sampler, trials stopped at the rungs (PRUNED).

Every study runs without confirmation (``search.confirm.top: 0``): the benchmark compares
the searches' compute, and confirmation would add the same duty to each.
Each trial's epochs are what it trained before it finished or was stopped. After every
finished trial, in the order they finished, the benchmark records (epochs consumed so far,
hypervolume of the feasible front so far) against the reference point (0.5, kappa). It
prints each study's curve, then per configuration the mean and standard deviation over
the seeds of the final hypervolume, of the epochs consumed and of the hypervolume at the
smallest epoch count any configuration of that seed consumed (the same compute for all
three), and draws the curves in ``<workdir>/compute_to_front.png``.

    python benchmarks/compute_to_front.py [--study smoke] [--trials 8] [--epochs 4] [--seeds 3] [--workdir DIR]

Given a ``--workdir`` that already holds some of these studies (the same settings, fewer
seeds), the run resumes: ``launch`` continues each stored study, so finished ones are read
back in a second and only the missing seeds train.

The last line is one JSON object (``_common.json_line``); the sd of a single seed is
``null`` (``_common.mean_sd``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _common import format_mean_sd, json_line, mean_sd, reference_kappa, search_only  # noqa: E402

from kd_search.service.pareto import hypervolume  # noqa: E402
from kd_search.service.search import Locations, launch, load_optuna_study  # noqa: E402
from kd_search.study_file import load_study  # noqa: E402

# (label, scheduler, sampler or None for the study's own)
CONFIGURATIONS = (("fifo+random", "fifo", "random"), ("fifo+default", "fifo", None),
                  ("mo_asha+default", "mo_asha", None))

Curve = list[tuple[int, float]]  # (epochs consumed so far, feasible hypervolume so far)


def front_curve(study_name: str, storage: str, kappa: float) -> Curve:
    """(epochs consumed, feasible hypervolume) after each finished trial, in finishing order."""
    trials = [t for t in load_optuna_study(study_name, storage).trials if t.datetime_complete is not None]
    trials.sort(key=lambda t: t.datetime_complete)
    curve, epochs, feasible = [], 0, []
    for trial in trials:
        epochs += int(trial.user_attrs.get("epoch", 0))
        if trial.state.name == "COMPLETE" and trial.values[1] <= kappa:
            feasible.append((trial.values[0], trial.values[1]))
        curve.append((epochs, hypervolume(feasible, (0.5, kappa))))
    return curve


def volume_at(curve: Curve, epochs: int) -> float:
    """The hypervolume reached within ``epochs`` epochs (0 before the first finished trial).

    Example:
        >>> volume_at([(4, 0.01), (6, 0.03), (10, 0.05)], 8)
        0.03
    """
    reached = [volume for used, volume in curve if used <= epochs]
    return reached[-1] if reached else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="smoke", help="A study file or a shipped study's name.")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4, help="Epochs per trial (distillation.epochs_total).")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workdir", help="Keep the studies and the figure here (default: a temporary directory).")
    args = parser.parse_args()
    base = load_study(args.study)
    kappa = reference_kappa(parser, base, args.study)
    curves: dict[str, list[Curve]] = {label: [] for label, _, _ in CONFIGURATIONS}
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.workdir or scratch)
        for seed in range(args.seeds):
            for label, scheduler, sampler in CONFIGURATIONS:
                # The search alone: what confirmation would add is the same for every configuration.
                study = search_only(base, name=f"{base.name}-{label.replace('+', '-')}-seed{seed}", seed=seed,
                                   distillation__epochs_total=args.epochs, search__trials=args.trials,
                                   search__scheduler=scheduler, search__sampler=sampler or base.search.sampler)
                locations = Locations.resolve(study, workdir)
                started = time.perf_counter()
                summary = launch(study, locations=locations)
                curve = front_curve(study.name, locations.storage, kappa)
                curves[label].append(curve)
                print(f"seed {seed} {label:16s}: {summary.counts()}, {curve[-1][0]} epochs, hypervolume "
                      f"{curve[-1][1]:.6f} ({time.perf_counter() - started:.0f} s); curve "
                      + " ".join(f"{e}:{v:.4f}" for e, v in curve), flush=True)
        figure_path = workdir / "compute_to_front.png"
        _draw(curves, figure_path, kappa)
        if args.workdir is None:
            figure_path = None  # gone with the temporary directory

    summary: dict[str, dict[str, float | None]] = {}
    common = [min(curves[label][seed][-1][0] for label in curves) for seed in range(args.seeds)]
    for label, runs in curves.items():
        final, final_sd = mean_sd([curve[-1][1] for curve in runs])
        epochs, epochs_sd = mean_sd([float(curve[-1][0]) for curve in runs])
        at_common, at_common_sd = mean_sd([volume_at(curve, common[seed]) for seed, curve in enumerate(runs)])
        summary[label] = {"hypervolume": final, "hypervolume_sd": final_sd, "epochs": epochs,
                          "epochs_sd": epochs_sd, "hypervolume_at_common_epochs": at_common,
                          "hypervolume_at_common_epochs_sd": at_common_sd}
        print(f"{label:16s} hypervolume {format_mean_sd(final, final_sd, 6)} for "
              f"{format_mean_sd(epochs, epochs_sd, 1)} epochs; at the common budget "
              f"{format_mean_sd(at_common, at_common_sd, 6)}")
    fifo, mo = summary["fifo+default"], summary["mo_asha+default"]
    ratios = {"mo_asha_over_fifo_epochs": mo["epochs"] / fifo["epochs"],
              "mo_asha_over_fifo_hypervolume": mo["hypervolume"] / fifo["hypervolume"] if fifo["hypervolume"] else None,
              "default_over_random_hypervolume": (fifo["hypervolume"] / summary["fifo+random"]["hypervolume"]
                                                  if summary["fifo+random"]["hypervolume"] else None)}
    print("ratios: " + ", ".join(f"{k} {v:.2f}" if v is not None else f"{k} n/a" for k, v in ratios.items()))
    json_line({"trials": args.trials, "epochs_per_trial": args.epochs, "seeds": args.seeds, "kappa": kappa,
               "common_epochs": common, "configurations": summary, "ratios": ratios,
               "figure": str(figure_path) if figure_path else None,
               "curves": {label: runs for label, runs in curves.items()}})


def _draw(curves: dict[str, list[Curve]], path: Path, kappa: float) -> None:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for (label, runs), color in zip(curves.items(), ("tab:gray", "tab:blue", "tab:orange"), strict=False):
        for seed, curve in enumerate(runs):
            epochs, volumes = zip(*[(0, 0.0), *curve], strict=True)
            axes.step(epochs, volumes, where="post", color=color, alpha=0.8,
                      label=label if seed == 0 else None)
    axes.set_xlabel("epochs consumed (finished trials)")
    axes.set_ylabel(f"feasible hypervolume from (0.5, kappa={kappa:g})")
    axes.set_title("Compute to front: one line per seed")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
