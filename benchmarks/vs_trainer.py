"""kd-search's search against a Hugging Face ``Trainer`` with Hinton distillation tuned by
``Trainer.hyperparameter_search``, on the same data, teacher, student, epochs and trial budget.

The alternative (a user's ~100 lines): a ``Trainer`` subclass whose ``compute_loss`` is
alpha*CE + (1-alpha)*T^2*KL(teacher_T || student_T) against teacher logits computed once,
searched by ``hyperparameter_search(backend="optuna")`` over the learning rate (log
2e-5..3e-4), alpha (0..0.5) and T (log 1..8), both objectives (accuracy up, sigma down).
A fair user starts it where kd-search starts: the Hinton point the study enqueues (its
alpha, T and learning rate) is the Trainer's first trial too, and the Trainer batches as
kd-search does (rows padded per batch; ``train_sampling_strategy="group_by_length"`` where
the study sets ``group_by_length``).
kd-search: ``launch`` of the study (demo by default). Both start from the same student
(``build_student`` from the same fine-tuned teacher, prepared once and shared) and are
measured by kd-search's own evaluation (accuracy on eval, sigma on the confidence split).

Certification is part of the work: kd-search confirms as its study says
(``search.confirm``, inside the search), and the Trainer loop trains its ``top`` most
accurate feasible trials again with the same confirmation seeds after its search; both
verdicts come from :func:`~kd_search.engine.measures.certify`. ``--no-confirm`` compares
the searches alone.

For each seed (the study's ``seed``: sampler and student training; the teacher stays the
one prepared once), each method is scored by the hypervolume of its feasible points
(sigma <= kappa) from the reference (0.5, kappa), its best feasible and best certified
accuracy, its lowest sigma and its whole wall time (confirmation included). Compute to a
front: the seconds from kd-search's start until its finished trials first hold a
feasible front with at least the Trainer loop's final hypervolume
(``seconds_to_match_trainer``, NaN if never), beside the seconds the Trainer loop took to
reach that front itself (``seconds_to_own_front``).

    .venv/bin/python benchmarks/vs_trainer.py --scale small --seeds 3

With ``--workdir`` a run resumes: seeds already in the workdir's ``per_seed.jsonl`` with
the same settings are read back, not trained again.

The last line is one JSON object with the figures per seed, their mean and sd, the
ratios kd-search/Trainer of the means, and ``ratio_seconds_to_match`` (kd-search's mean
seconds to match over the Trainer's mean wall time; NaN unless it matched on every seed).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch
import torch.nn.functional as F
from _common import json_line, mean_sd, search_only, study_copy
from transformers import Trainer, TrainingArguments

from kd_search.engine.evaluation import evaluate
from kd_search.engine.hyperparameters import default_hyperparameters
from kd_search.engine.measures import certify
from kd_search.engine.models import build_student, load_classifier
from kd_search.engine.spec import Study
from kd_search.engine.teacher_cache import TeacherLayers
from kd_search.engine.trial import TrialSetup, prepare, teacher_outputs
from kd_search.service.pareto import hypervolume
from kd_search.service.search import Locations, launch, load_optuna_study
from kd_search.service.search.confirmation_queue import confirmation_seeds, trials_to_confirm
from kd_search.service.search.records import StudySummary, summarize
from kd_search.study_file import load_study

SCALES = {"demo": {"train_limit": None, "eval_limit": None, "trials": None},
          "small": {"train_limit": 800, "eval_limit": 400, "trials": 6}}


class DistillationSet(torch.utils.data.Dataset):
    """A tokenized split with the teacher's logits of each row beside its inputs; each row
    cut to its own length (``collate`` pads a batch to its longest, as kd-search does)."""

    def __init__(self, split, teacher_logits: torch.Tensor):
        self.split, self.teacher_logits = split, teacher_logits
        self.lengths = split.attention_mask.sum(dim=1).tolist()

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s, n = self.split, self.lengths[i]
        return {"input_ids": s.input_ids[i, :n], "token_type_ids": s.token_type_ids[i, :n],
                "attention_mask": s.attention_mask[i, :n], "labels": s.labels[i], "teacher_logits": self.teacher_logits[i]}


def collate(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """A batch padded (with zeros, at the end) to its longest row."""
    padded = {name: torch.nn.utils.rnn.pad_sequence([row[name] for row in rows], batch_first=True)
              for name in ("input_ids", "token_type_ids", "attention_mask")}
    return padded | {name: torch.stack([row[name] for row in rows]) for name in ("labels", "teacher_logits")}


class HintonTrainer(Trainer):
    """Hinton KD: alpha*CE(labels) + (1-alpha)*T^2*KL(softmax(z_T/T) || softmax(z_S/T)); alpha
    and T come from the Optuna trial (or ``kd`` when trained outside the search), and
    ``evaluate`` measures as kd-search does."""

    def __init__(self, *args, setup: TrialSetup, teacher_train: torch.Tensor, teacher_eval: torch.Tensor,
                 record: list[dict[str, Any]], kd: dict[str, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.setup, self.teacher_train, self.teacher_eval, self.record = setup, teacher_train, teacher_eval, record
        self.kd = kd

    def _kd(self) -> tuple[float, float]:
        params = self.kd or self._trial.params
        return params["alpha"], params["temperature"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher_logits, labels = inputs.pop("teacher_logits"), inputs.pop("labels")
        outputs = model(**inputs)
        alpha, temperature = self._kd()
        hard = F.cross_entropy(outputs.logits, labels)
        soft = F.kl_div(F.log_softmax(outputs.logits / temperature, -1), F.log_softmax(teacher_logits / temperature, -1),
                        log_target=True, reduction="batchmean") * temperature**2
        loss = alpha * hard + (1 - alpha) * soft
        return (loss, outputs) if return_outputs else loss

    def evaluate(self, *args, **kwargs) -> dict[str, float]:
        alpha, temperature = self._kd()
        params = {"alpha": alpha, "temperature": temperature, "prediction_loss": "kl"}
        metrics, _ = evaluate(self.setup, self.model, params, self.teacher_train, self.teacher_eval)
        self.record.append({"number": None if self.kd else self._trial.number,
                            "params": dict(self.kd or self._trial.params), "seed": self.args.seed,
                            "accuracy": metrics["accuracy"], "sigma": metrics["sigma"],
                            "sigma_se": metrics["sigma_se"], "finished_at": time.time()})
        return {"eval_accuracy": metrics["accuracy"], "eval_sigma": metrics["sigma"]}


def hinton_start(study: Study, num_mapped_layers: int) -> dict[str, float] | None:
    """The first prediction-only point the study enqueues, as the Trainer's (alpha, T, learning
    rate); values it leaves out are the study's defaults. None if it enqueues none."""
    defaults = default_hyperparameters(study, num_mapped_layers)
    points = (defaults | point for point in study.search.enqueue)
    params = next((p for p in points if int(p.get("epochs_intermediate", 0)) == 0), None)
    if params is None:
        return None
    return {"alpha": float(params["alpha"]), "temperature": float(params["temperature"]),
            "learning_rate": float(params["learning_rate_prediction"])}


class TrainerLoop:
    """The alternative on one seed: its search, then its confirmation."""

    def __init__(self, setup: TrialSetup, seed: int, epochs: int, out: Path):
        self.setup, self.seed, self.epochs, self.out = setup, seed, epochs, out
        _, self.teacher_train, self.teacher_eval = teacher_outputs(setup, TeacherLayers())
        self.record: list[dict[str, Any]] = []

    def model_init(self, trial=None):
        base_teacher = load_classifier(self.setup.teacher_path, self.setup.data.num_labels)
        return build_student(self.setup.study.student, base_teacher, self.setup.data.num_labels)

    def trainer(self, seed: int, kd: dict[str, float] | None = None) -> HintonTrainer:
        distillation = self.setup.study.distillation
        args = TrainingArguments(
            output_dir=str(self.out), per_device_train_batch_size=distillation.batch_size,
            num_train_epochs=self.epochs, learning_rate=kd["learning_rate"] if kd else 5e-5,
            train_sampling_strategy="group_by_length" if distillation.group_by_length else "random",
            save_strategy="no", eval_strategy="no",
            logging_strategy="no", report_to=[], disable_tqdm=True, remove_unused_columns=False, seed=seed,
            use_cpu=self.setup.device.type == "cpu")
        return HintonTrainer(model_init=self.model_init, args=args, data_collator=collate,
                             train_dataset=DistillationSet(self.setup.data.train, self.teacher_train),
                             setup=self.setup, teacher_train=self.teacher_train, teacher_eval=self.teacher_eval,
                             record=self.record, kd=kd)

    def search(self, trials: int) -> list[dict[str, Any]]:
        """``hyperparameter_search`` from the study's Hinton start; every trial's figures, in order."""

        def hp_space(trial: optuna.Trial) -> dict[str, float]:
            trial.suggest_float("alpha", 0.0, 0.5)
            trial.suggest_float("temperature", 1.0, 8.0, log=True)
            return {"learning_rate": trial.suggest_float("learning_rate", 2e-5, 3e-4, log=True)}

        # hyperparameter_search creates its Optuna study from these arguments: created here
        # first, with the start enqueued, it is loaded and searched from there.
        storage, name = optuna.storages.InMemoryStorage(), "trainer"
        sampler = optuna.samplers.TPESampler(seed=self.seed)
        start = hinton_start(self.setup.study, len(self.setup.pairs))
        if start is not None:
            optuna.create_study(storage=storage, study_name=name, directions=["maximize", "minimize"],
                                sampler=sampler).enqueue_trial(start)
        self.trainer(self.seed).hyperparameter_search(
            hp_space=hp_space, compute_objective=lambda m: (m["eval_accuracy"], m["eval_sigma"]), n_trials=trials,
            direction=["maximize", "minimize"], backend="optuna", sampler=sampler, storage=storage, study_name=name,
            load_if_exists=True)
        return list(self.record)

    def confirm(self, searched: list[dict[str, Any]], kappa: float) -> list[dict[str, Any]]:
        """The ``search.confirm.top`` most accurate feasible trials trained again with
        kd-search's confirmation seeds; each with its verdict."""
        settings = self.setup.study.search.confirm
        feasible = sorted((r for r in searched if r["sigma"] <= kappa), key=lambda r: -r["accuracy"])
        confirmed = []
        for trial in feasible[:settings.top]:
            runs = [trial]
            for seed in confirmation_seeds(self.setup.study, settings.seeds):
                trainer = self.trainer(seed, kd=trial["params"])
                trainer.train()
                trainer.evaluate()
                runs.append(self.record[-1])
            verdict = certify([r["sigma"] for r in runs], [r["sigma_se"] for r in runs], kappa)
            confirmed.append(trial | {"verdict": verdict.verdict.value, "upper_bound": verdict.upper_bound,
                                      "finished_at": runs[-1]["finished_at"]})
        return confirmed


def scores(points: list[tuple[float, float]], kappa: float, seconds: float,
           certified: list[float] | None = None) -> dict[str, float]:
    """Feasible hypervolume from (0.5, kappa), best feasible and best certified accuracy
    (``certified``: the accuracies of certified trials; None when nothing was confirmed),
    lowest sigma, wall time."""
    finite = [(a, s) for a, s in points if not math.isnan(s)]
    feasible = [(a, s) for a, s in finite if s <= kappa]
    return {"hypervolume": hypervolume(feasible, (0.5, kappa)),
            "best_feasible_accuracy": max((a for a, _ in feasible), default=math.nan),
            "best_certified_accuracy": max(certified or [], default=math.nan),
            "certified": len(certified or []),
            "lowest_sigma": min((s for _, s in finite), default=math.nan),
            "feasible": len(feasible), "trials": len(points), "wall_seconds": seconds}


def confirmation_spend(summary: StudySummary, top: int) -> dict[str, int]:
    """kd-search's confirmation trainings, and how many of them went to trials outside the
    final selection (``trials_to_confirm`` at the end): front members confirmed as they
    arrived and passed later, the bets the search lost."""
    final = {t.number for t in trials_to_confirm(summary, top)}
    spent = {t.number: len(t.confirmations) for t in summary.trials}
    return {"confirmations": sum(spent.values()),
            "confirmations_outside_final_top": sum(n for number, n in spent.items() if number not in final)}


def seconds_to_reach(timed_points: list[tuple[float, float, float]], target: float, kappa: float) -> float:
    """Seconds until finished trials ``(seconds, accuracy, sigma)`` first hold a feasible front
    (not empty) whose hypervolume from (0.5, kappa) is at least ``target``; NaN if never."""
    feasible: list[tuple[float, float]] = []
    for seconds, accuracy, sigma in sorted(timed_points):
        if sigma <= kappa:  # False for NaN
            feasible.append((accuracy, sigma))
        if feasible and hypervolume(feasible, (0.5, kappa)) >= target:
            return seconds
    return math.nan


def scaled(base: Study, args: argparse.Namespace, teacher_path: str, cache_dir: Path, seed: int) -> Study:
    """The study a seed runs: the shared fine-tuned teacher, the scale's limits and budget."""
    limits = {f"task__{k}": v for k, v in (("train_limit", args.train_limit), ("eval_limit", args.eval_limit)) if v}
    # The teacher is already fine-tuned: it is used as given (no fine-tune, no dropout).
    copy = search_only if args.no_confirm else study_copy
    return copy(base, name=f"{base.name}-vs-trainer-seed{seed}", seed=seed,
                teacher={"model": teacher_path, "fine_tune": None, "dropout": False},
                distillation__epochs_total=args.epochs, distillation__cache_dir=str(cache_dir),
                search__trials=args.trials, objectives__confidence__kappa=args.kappa, **limits)


def finished_seeds(path: Path, settings: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The figures of seeds an earlier run measured with the same ``settings`` (its
    ``per_seed.jsonl``), so that a long benchmark resumes where it stopped."""
    if not path.exists():
        return {}
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {r["seed"]: {"kd_search": r["kd_search"], "trainer": r["trainer"]}
            for r in records if r.get("settings") == settings}


def summarise(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Mean and sd over seeds (``_common.mean_sd``: the sd of one seed is None); a seed with no
    feasible trial has no best feasible accuracy (NaN) and is left out of that figure's mean,
    which ``{method}_seeds_with_feasible`` makes visible; a figure no seed has is NaN."""
    figures: dict[str, Any] = {}
    for method in ("kd_search", "trainer"):
        figures[f"{method}_seeds_with_feasible"] = sum(seed[method]["feasible"] > 0 for seed in per_seed)
        for name in dict.fromkeys(name for seed in per_seed for name in seed[method]):
            # .get: a seed read back from an older per_seed.jsonl may lack a later figure
            values = [v for seed in per_seed if not math.isnan(v := seed[method].get(name, math.nan))]
            mean, sd = mean_sd(values)
            figures[f"{method}_{name}_mean"], figures[f"{method}_{name}_sd"] = math.nan if mean is None else mean, sd
    for name in ("hypervolume", "best_feasible_accuracy", "best_certified_accuracy", "lowest_sigma", "wall_seconds"):
        trainer = figures[f"trainer_{name}_mean"]
        figures[f"ratio_{name}"] = figures[f"kd_search_{name}_mean"] / trainer if trainer else math.inf
    if "seconds_to_match_trainer" in per_seed[0]["kd_search"]:
        matched = sum(not math.isnan(seed["kd_search"]["seconds_to_match_trainer"]) for seed in per_seed)
        figures["kd_search_seeds_matched"] = matched
        # A mean over the seeds it matched on would flatter it: no ratio unless it matched on all.
        figures["ratio_seconds_to_match"] = (figures["kd_search_seconds_to_match_trainer_mean"]
                                             / figures["trainer_wall_seconds_mean"]
                                             if matched == len(per_seed) else math.nan)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="demo")
    parser.add_argument("--scale", choices=sorted(SCALES), default="demo",
                        help="small: 800 train / 400 eval examples, 6 trials (the same ranking, cheaper)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, help="trials per method and seed [default: the study's]")
    parser.add_argument("--train-limit", type=int)
    parser.add_argument("--eval-limit", type=int)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial, both methods")
    parser.add_argument("--kappa", type=float, help="[default: the study's]")
    parser.add_argument("--workdir", help="keep the shared teacher here and reuse it [default: a temporary dir]")
    parser.add_argument("--no-confirm", action="store_true", help="the searches alone: neither method confirms")
    args = parser.parse_args()
    base = load_study(args.study)
    for name, value in SCALES[args.scale].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.trials = args.trials or base.search.trials
    args.kappa = args.kappa or base.objectives.confidence.fixed_kappa
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    root = Path(args.workdir or tempfile.mkdtemp(prefix="kd-vs-trainer-")).resolve()
    started = time.perf_counter()
    shared = prepare(base, root / "shared")  # the demo's teacher, fine-tuned once
    print(f"teacher {shared.teacher_path} ready ({time.perf_counter() - started:.0f} s)", flush=True)
    settings = {"study": args.study, "scale": args.scale, "confirm": not args.no_confirm, "trials": args.trials,
                "epochs": args.epochs, "train_limit": args.train_limit, "eval_limit": args.eval_limit,
                "kappa": args.kappa}
    finished = finished_seeds(root / "per_seed.jsonl", settings)
    per_seed = []
    for seed in range(args.seeds):
        if seed in finished:  # measured by an earlier run with the same settings: not trained again
            print(f"seed {seed}: figures from {root / 'per_seed.jsonl'}", flush=True)
            per_seed.append(finished[seed])
            continue
        study = scaled(base, args, shared.teacher_path, root / "shared" / "cache", seed)
        workdir = root / f"seed{seed}"
        locations = Locations.resolve(study, workdir / "kd-search")
        started = time.time()
        launch(study, locations=locations)
        kd_seconds = time.time() - started
        optuna_study = load_optuna_study(study.name, locations.storage)
        summary = summarize(optuna_study)
        kd_timed = [(t.datetime_complete.timestamp() - started, *t.values) for t in optuna_study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
        kd = scores([(a, s) for _, a, s in kd_timed], args.kappa, kd_seconds,
                    [t.metric for t in summary.trials if t.certified])
        started = time.time()
        loop = TrainerLoop(prepare(study, workdir / "trainer"), seed, args.epochs, workdir / "trainer" / "out")
        record = loop.search(args.trials)
        confirmed = [] if args.no_confirm else loop.confirm(record, args.kappa)
        hf_seconds = time.time() - started
        hf_timed = [(r["finished_at"] - started, r["accuracy"], r["sigma"]) for r in record]
        hf = scores([(a, s) for _, a, s in hf_timed], args.kappa, hf_seconds,
                    [r["accuracy"] for r in confirmed if r["verdict"] == "certified"])
        kd |= confirmation_spend(summary, study.search.confirm.top)
        hf |= {"confirmations": len(confirmed) * study.search.confirm.seeds,  # trainings: it confirms its final top only
               "confirmations_outside_final_top": 0}
        kd["seconds_to_match_trainer"] = seconds_to_reach(kd_timed, hf["hypervolume"], args.kappa)
        hf["seconds_to_own_front"] = seconds_to_reach(hf_timed, hf["hypervolume"], args.kappa)
        print(f"seed {seed} kd-search: {json.dumps(kd)}", flush=True)
        print(f"seed {seed} trainer:   {json.dumps(hf)}", flush=True)
        per_seed.append({"kd_search": kd, "trainer": hf})
        with open(root / "per_seed.jsonl", "a") as results:  # a seed's figures outlive a later failure
            results.write(json.dumps({"seed": seed, "settings": settings} | per_seed[-1]) + "\n")
    figures = summarise(per_seed)
    json_line(settings | {"seeds": args.seeds, "device": str(shared.device), "per_seed": per_seed} | figures)


if __name__ == "__main__":
    main()
