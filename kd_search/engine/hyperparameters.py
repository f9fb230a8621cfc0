"""The hyperparameters of a trial: names, defaults, valid values, which recipe reads each,
their Optuna distributions and the key that tells two trials' students apart.

One flat namespace serves the study defaults, ``--set`` on the command line, the search
space and the MLflow parameters: ``alpha``, ``beta``, ``gamma``, ``temperature``,
``prediction_loss``, ``weight_decay``, ``layer_weight_<m>`` (m = 1..M over the layer
map), ``learning_rate_<stage>``, ``epochs_<stage>`` and ``weight_<structure loss>``.

A *recipe* is what a trial trains: the stages that get epochs and the loss terms they
add. Each term of the objective (``READERS``) reads some hyperparameters and runs only
in some stages, so a hyperparameter is *read* by a trial only where one of its readers
runs: beta, gamma and the layer weights only when a stage on intermediate layers has
epochs (the layer weights only while beta or gamma weights a term), each structure
loss's weight only with those stages (one reader per loss of the catalog), a stage's
learning rate only when it has epochs. The search suggests a parameter only where the
recipe chosen so far reads it (:func:`suggest`, Optuna's define-by-run), and
:func:`config_key` names a trial's student by the values its recipe reads.

Nothing here imports torch or Optuna at module level: validating a study stays fast.

Example:
    >>> from kd_search.study_file import load_study
    >>> study = load_study("demo")
    >>> params = default_hyperparameters(study, 3) | {"epochs_intermediate": 0, "epochs_prediction": 2}
    >>> sorted(effective(study, params))[:4]
    ['alpha', 'epochs_intermediate', 'epochs_prediction', 'learning_rate_prediction']
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kd_search.engine.hyperparameter_names import (  # noqa: F401 (re-exported with the rest of the namespace)
    INTERMEDIATE_STAGES,
    PREDICTION_LOSS_NAMES,
    PREDICTION_STAGES,
    SPACE_NAME,
    SPACE_NAMES_HELP,
    STAGE_NAMES,
)
from kd_search.engine.structure_catalog import MINILM_LOSSES, STRUCTURE_LOSS_NEEDS
from kd_search.errors import StudyFileError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.trial import Trial

    from kd_search.engine.search_settings import ParameterRange
    from kd_search.engine.spec import Study

Params = dict[str, float | str]
# Two values closer than this, relative, train the same student as far as training can show.
KEY_RELATIVE_PRECISION = 1e-6
KEY_DIGITS = round(-math.log10(KEY_RELATIVE_PRECISION))
@dataclass(frozen=True)
class Reader:
    """One part of training that reads hyperparameters: it runs in the stages of
    ``stages`` that have epochs (None: always), and a parameter other than ``weight``
    is read only while ``weight`` (its term's weight) is above 0."""

    name: str
    reads: Callable[[str], bool]
    stages: tuple[str, ...] | None = None
    weight: str | None = None


def _named(*names: str) -> Callable[[str], bool]:
    return lambda name: name in names


def _layer_weight_or(*names: str) -> Callable[[str], bool]:
    return lambda name: name in names or name.startswith("layer_weight_")


READERS: tuple[Reader, ...] = (
    # The plan of the stages and every stage's optimizer.
    Reader("stages", lambda name: name.startswith("epochs_") or name == "weight_decay"),
    # L = alpha*L_hard + (1-alpha)*L_pred(T) in the stages on predictions (TinyBERT eq. 10, Hinton eq. 2).
    Reader("prediction objective", _named("alpha", "temperature", "prediction_loss"), PREDICTION_STAGES),
    # beta_X, the summed L_pred(T) behind sigma's bound kappa, is measured after every epoch.
    Reader("evaluation", _named("temperature", "prediction_loss")),
    # beta*sum_m lambda_m*(L_hidn+L_emb) and gamma*sum_m lambda_m*L_attn (TinyBERT eq. 7-9).
    Reader("hidden states", _layer_weight_or("beta"), INTERMEDIATE_STAGES, weight="beta"),
    Reader("attention", _layer_weight_or("gamma"), INTERMEDIATE_STAGES, weight="gamma"),
    # One reader per structure loss of the catalog: w_s * L_s in the stages on intermediate layers.
    *(Reader(loss, _named(f"weight_{loss}"), INTERMEDIATE_STAGES) for loss in STRUCTURE_LOSS_NEEDS),
)
# The parameters whose value decides whether others are read: suggested first.
GATES = ("beta", "gamma")


def _stage_runs(study: Study, params: Mapping[str, Any], kinds: tuple[str, ...]) -> bool:
    return any(stage.name in kinds and int(params[f"epochs_{stage.name}"]) > 0 for stage in study.distillation.stages)


def reads(study: Study, params: Mapping[str, Any], name: str) -> bool:
    """Whether a trial with ``params`` (every name, as :func:`default_hyperparameters`)
    reads the hyperparameter ``name``.

    Example:
        >>> from kd_search.study_file import load_study
        >>> study = load_study("demo")
        >>> params = default_hyperparameters(study, 3)
        >>> reads(study, params, "gamma"), reads(study, params | {"epochs_intermediate": 0}, "gamma")
        (True, False)
    """
    if name.startswith("learning_rate_"):
        return int(params[f"epochs_{name.removeprefix('learning_rate_')}"]) > 0
    if name == "alpha" and study.objectives.confidence.kappa == "bound":
        return True  # kappa = bound_gamma * sqrt(beta_X / (|X| (1 - alpha)))
    for reader in READERS:
        if not reader.reads(name) or (reader.stages is not None and not _stage_runs(study, params, reader.stages)):
            continue
        if reader.weight is None or name == reader.weight or float(params[reader.weight]) > 0:
            return True
    return False


def effective(study: Study, params: Mapping[str, Any]) -> Params:
    """The part of ``params`` (every name) that the trial's recipe reads.

    Example:
        >>> from kd_search.study_file import load_study
        >>> study = load_study("demo")
        >>> "beta" in effective(study, default_hyperparameters(study, 3) | {"epochs_intermediate": 0})
        False
    """
    return {name: value for name, value in params.items() if reads(study, params, name)}


def uses_intermediate_layers(study: Study, params: Mapping[str, Any] | None = None) -> bool:
    """Whether a trial with ``params`` trains a stage that reads the teacher's intermediate
    layers; without ``params``, whether any trial of the study may.

    Example:
        >>> from kd_search.engine.spec import parse_study
        >>> study = parse_study({"name": "s", "student": {"teacher_layers": [2]},
        ...                      "distillation": {"stages": [{"name": "prediction"}]}})
        >>> uses_intermediate_layers(study)
        False
    """
    if params is not None:
        return _stage_runs(study, params, INTERMEDIATE_STAGES)
    return any(stage.name in INTERMEDIATE_STAGES and (stage.epochs > 0 or f"epochs_{stage.name}" in study.search.space)
               for stage in study.distillation.stages)


def may_use_attention_scores(study: Study) -> bool:
    """Whether TinyBERT's attention loss may be on in a trial of the study (gamma > 0 or searched).

    Example:
        >>> from kd_search.engine.spec import parse_study
        >>> may_use_attention_scores(parse_study({"name": "s", "student": {"teacher_layers": [2]}}))
        True
    """
    # Attention scores are distilled unless gamma is fixed at 0 and not searched.
    return study.distillation.gamma > 0 or "gamma" in study.search.space


def may_use_minilm(study: Study) -> bool:
    """Whether a MiniLM loss (attention distributions, value relations) may be on in a trial.

    Example:
        >>> from kd_search.engine.spec import parse_study
        >>> may_use_minilm(parse_study({"name": "s", "student": {"teacher_layers": [2]}}))
        False
    """
    # MiniLM's losses are on unless both weights are fixed at 0 and not searched.
    weights = study.distillation.structure
    return any(getattr(weights, name) > 0 or f"weight_{name}" in study.search.space for name in MINILM_LOSSES)


def epoch_budget(study: Study, params: Params) -> Params:
    """``params`` with the last stage's epochs set to what ``distillation.epochs_total``
    leaves after the earlier stages (``params`` itself when the study sets no total).

    Example:
        >>> from kd_search.engine.spec import parse_study
        >>> study = parse_study({"name": "s", "student": {"teacher_layers": [2]},
        ...                      "distillation": {"epochs_total": 2}})
        >>> epoch_budget(study, {"epochs_intermediate": 0, "epochs_prediction": 1})
        {'epochs_intermediate': 0, 'epochs_prediction': 2}
    """
    total, stages = study.distillation.epochs_total, study.distillation.stages
    if total is None:
        return params
    earlier = sum(int(params[f"epochs_{stage.name}"]) for stage in stages[:-1])
    if earlier > total:
        raise StudyFileError(f"the stages before {stages[-1].name!r} train {earlier} epochs, "
                             f"more than distillation.epochs_total ({total})")
    return params | {f"epochs_{stages[-1].name}": total - earlier}


def default_hyperparameters(study: Study, num_mapped_layers: int) -> Params:
    """The study's own hyperparameters, every name of the namespace.

    Example:
        >>> from kd_search.engine.spec import parse_study
        >>> study = parse_study({"name": "s", "student": {"teacher_layers": [2, 4, 6]}})
        >>> default_hyperparameters(study, 3)["layer_weight_2"]
        1.0
    """
    d = study.distillation
    weights = d.layer_weights or [1.0] * num_mapped_layers
    if len(weights) != num_mapped_layers:
        raise StudyFileError(f"distillation.layer_weights: {len(weights)} weights given for "
                             f"{num_mapped_layers} mapped layers")
    params: Params = {"prediction_loss": d.prediction_loss, "alpha": d.alpha, "beta": d.beta, "gamma": d.gamma,
                      "temperature": d.temperature, "weight_decay": d.weight_decay}
    params.update({f"weight_{name}": float(w) for name, w in d.structure.model_dump().items()})
    params.update({f"layer_weight_{m + 1}": float(w) for m, w in enumerate(weights)})
    for stage in d.stages:
        params[f"learning_rate_{stage.name}"] = stage.learning_rate
        params[f"epochs_{stage.name}"] = stage.epochs
    return epoch_budget(study, params)


def parse_value(name: str, value: float | str) -> float | str:
    """One hyperparameter's value from text (``--set``) or a number, checked against its valid values.

    Example:
        >>> parse_value("alpha", "0.25"), parse_value("prediction_loss", "kl")
        (0.25, 'kl')
        >>> parse_value("alpha", 1)
        Traceback (most recent call last):
        kd_search.errors.StudyFileError: alpha must be in [0, 1), got 1.0
    """
    if name == "prediction_loss":
        if value not in PREDICTION_LOSS_NAMES:
            raise StudyFileError(f"prediction_loss must be one of {', '.join(PREDICTION_LOSS_NAMES)}, got {value!r}")
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise StudyFileError(f"{name}: {value!r} is not a number") from None
    if name == "alpha" and not 0 <= number < 1:
        raise StudyFileError(f"alpha must be in [0, 1), got {number}")
    if (name == "temperature" or name.startswith("learning_rate_")) and number <= 0:
        raise StudyFileError(f"{name} must be positive, got {number}")
    if number < 0:
        raise StudyFileError(f"{name} must not be negative, got {number}")
    return number


def with_overrides(study: Study, num_mapped_layers: int, overrides: Mapping[str, float | str] | None = None) -> Params:
    """The study's defaults with ``overrides`` (numbers, or text such as ``--set`` gives);
    unknown names and values of the wrong kind are an error.

    Example:
        >>> from kd_search.study_file import load_study
        >>> with_overrides(load_study("demo"), 3, {"alpha": "0.3"})["alpha"]
        0.3
    """
    params = default_hyperparameters(study, num_mapped_layers)
    overrides = overrides or {}
    for name, value in overrides.items():
        if name not in params:
            raise StudyFileError(f"unknown hyperparameter {name!r} (known: {', '.join(sorted(params))})")
        params[name] = parse_value(name, value)
    budgeted = epoch_budget(study, params)
    for name, value in budgeted.items():
        if name in overrides and value != params[name]:
            raise StudyFileError(f"{name} = {params[name]:g} disagrees with distillation.epochs_total, which "
                                 f"leaves it {value:g} epochs: leave it out")
    return budgeted


def training_params(study: Study, defaults: Params, params: Mapping[str, Any]) -> Params:
    """What a trial trains with: its searched ``params`` over the study's ``defaults``, the
    last stage's epochs from ``distillation.epochs_total`` when the study sets it.

    Example:
        >>> from kd_search.engine.spec import parse_study
        >>> study = parse_study({"name": "s", "student": {"teacher_layers": [2]}})
        >>> training_params(study, {"alpha": 0.5, "beta": 1.0}, {"alpha": 1})
        {'alpha': 1.0, 'beta': 1.0}
    """
    return epoch_budget(study, dict(defaults) | {k: (float(v) if isinstance(v, (int, float)) else v)
                                                 for k, v in params.items()})


def expand_search_space(space: Mapping[str, ParameterRange], num_mapped_layers: int) -> dict[str, ParameterRange]:
    """Expand the shorthand ``layer_weight`` into ``layer_weight_1..M``.

    Example:
        >>> from kd_search.engine.search_settings import ParameterRange
        >>> sorted(expand_search_space({"layer_weight": ParameterRange(low=0, high=1)}, 2))
        ['layer_weight_1', 'layer_weight_2']
    """
    expanded: dict[str, ParameterRange] = {}
    for name, rng in space.items():
        if name == "layer_weight":
            for m in range(1, num_mapped_layers + 1):
                expanded.setdefault(f"layer_weight_{m}", rng)
        else:
            if name.startswith("layer_weight_") and int(name.rsplit("_", 1)[1]) > num_mapped_layers:
                raise StudyFileError(f"search.space.{name}: the layer map has only {num_mapped_layers} layers")
            expanded[name] = rng
    return expanded


def distribution(name: str, rng: ParameterRange) -> BaseDistribution:
    """The Optuna distribution of one search-space entry (``epochs_*`` are integers).

    Example:
        >>> from kd_search.engine.search_settings import ParameterRange
        >>> distribution("alpha", ParameterRange(low=0.0, high=0.5))
        FloatDistribution(high=0.5, log=False, low=0.0, step=None)
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if rng.choices is not None:
        return CategoricalDistribution(rng.choices)
    if name.startswith("epochs_"):
        return IntDistribution(int(rng.low), int(rng.high), log=rng.log, step=int(rng.step or 1))
    return FloatDistribution(rng.low, rng.high, log=rng.log, step=rng.step)


def search_distributions(study: Study, num_mapped_layers: int) -> dict[str, BaseDistribution]:
    """Every searched name (``layer_weight`` expanded) and its Optuna distribution, in the
    order :func:`suggest` asks for them: stage epochs, then the weights that gate others.

    Example:
        >>> from kd_search.study_file import load_study
        >>> list(search_distributions(load_study("demo"), 3))[:3]
        ['epochs_intermediate', 'beta', 'gamma']
    """
    space = expand_search_space(study.search.space, num_mapped_layers)
    rank = {name: (0 if name.startswith("epochs_") else 1 if name in GATES else 2) for name in space}
    return {name: distribution(name, space[name]) for name in sorted(space, key=lambda n: rank[n])}


def _suggest_value(trial: Trial, name: str, dist: BaseDistribution) -> Any:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def suggest(trial: Trial, study: Study, distributions: Mapping[str, BaseDistribution],
            defaults: Params) -> tuple[Params, list[str]]:
    """Suggest, by define-by-run, the searched parameters that the trial's recipe reads;
    return the trial's training parameters and the enqueued names it dropped (fixed on the
    trial by ``enqueue_trial`` but not read by its recipe).

    ``distributions`` come in :func:`search_distributions`' order, so whatever decides
    whether a parameter is read (stage epochs, beta, gamma) is suggested before it.

    Example:
        >>> params, dropped = suggest(optuna_study.ask(), study, distributions, defaults)  # doctest: +SKIP
    """
    params = training_params(study, defaults, {})
    for name, dist in distributions.items():
        if reads(study, params, name):
            params = training_params(study, params, {name: _suggest_value(trial, name, dist)})
    return params, sorted(name for name in enqueued_values(trial) if name not in trial.params)


def enqueued_values(trial: Trial) -> dict[str, Any]:
    """The values ``Study.enqueue_trial`` fixed on ``trial`` (empty for a sampler's proposal).

    Example:
        >>> import optuna
        >>> study = optuna.create_study()
        >>> study.enqueue_trial({"alpha": 0.1})
        >>> enqueued_values(study.ask())
        {'alpha': 0.1}
    """
    # Optuna keeps them in the trial's system attributes, which a Trial no longer exposes.
    return trial.storage.get_trial(trial._trial_id).system_attrs.get("fixed_params", {})


def _rounded(value: float | str) -> float | str:
    if isinstance(value, str):
        return value
    # Scientific notation with d decimals keeps a relative precision of 10^-d.
    return float(f"{float(value):.{KEY_DIGITS}e}")


def config_key(study: Study, params: Mapping[str, Any]) -> str:
    """The effective configuration of a trial: its recipe and the values it reads, rounded
    at relative 1e-6, the prediction losses taken as one at temperature 1. Two trials with
    one key train the same student.

    Example:
        >>> from kd_search.study_file import load_study
        >>> study = load_study("demo")
        >>> hinton = default_hyperparameters(study, 3) | {"epochs_intermediate": 0, "epochs_prediction": 2}
        >>> config_key(study, hinton) == config_key(study, hinton | {"gamma": 0.35, "temperature": 1.0000001})
        True
    """
    values = {name: _rounded(value) for name, value in sorted(effective(study, params).items())}
    if values.get("temperature") == 1.0 and "prediction_loss" in values:
        # KL(p_T || p_S) = CE(p_T, p_S) - H(p_T), and T^2 = 1: at T = 1 the two prediction
        # losses differ by a constant of the teacher's and train the same student.
        values["prediction_loss"] = "soft_ce"
    return json.dumps(values, separators=(",", ":"))
