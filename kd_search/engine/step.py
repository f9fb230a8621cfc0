"""One stage's training: its plan, the distillation objective it assembles, one epoch of steps.

A :class:`StagePlan` fixes, before training, what a stage reads (the teacher's
intermediate layers, its predictions, attention scores and value vectors) and the
objective's terms and weights. :func:`distillation_loss` assembles the whole objective
of one batch from the plan in one call; :func:`train_epoch` runs the steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kd_search.engine.data import TokenizedSplit, batches
from kd_search.engine.hyperparameters import INTERMEDIATE_STAGES, PREDICTION_STAGES
from kd_search.engine.losses import (
    SelfAttentionPair,
    intermediate_objective,
    prediction_distillation,
    prediction_objective,
    structure_objective,
)
from kd_search.engine.losses.prediction import PredictionLoss
from kd_search.engine.models import capture_values
from kd_search.engine.optim import adamw, linear_warmup_schedule
from kd_search.engine.progress import ProgressCallback
from kd_search.engine.spec import Study
from kd_search.engine.structure_catalog import MINILM_LOSSES, STRUCTURE_LOSSES
from kd_search.engine.teacher_cache import TeacherBatch
from kd_search.errors import NonFiniteLossError

# On a GPU the finiteness flag is read every this many steps (reading it syncs the host).
NONFINITE_CHECK_EVERY_CUDA = 50


@dataclass(frozen=True, eq=False)
class StagePlan:
    """One stage with epochs: what it reads and the objective's terms and weights.

    L = alpha*L_hard + (1-alpha)*L_pred(T)                          (stages on predictions)
      + beta*sum_m lambda_m*(L_hidn+L_emb) + gamma*sum_m lambda_m*L_attn
      + sum_s w_s*L_s                                  (stages on intermediate layers)

    ``pairs`` is the layer map (1-based student, teacher layers); ``projection`` the
    learned width projection (None for equal widths); ``memories`` FSD's (student,
    teacher) memories when a memory loss is on.
    """

    name: str
    epochs: int
    learning_rate: float
    weight_decay: float
    intermediate: bool
    prediction: bool
    pairs: tuple[tuple[int, int], ...]
    layer_weights: tuple[float, ...]
    beta: float
    gamma: float
    structure_weights: dict[str, float]
    alpha: float
    temperature: float
    prediction_loss: PredictionLoss
    projection: torch.nn.Module | None = None
    memories: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def self_attention(self) -> bool:
        """Whether MiniLM's losses read the last mapped layer's attention scores and values."""
        return any(self.structure_weights[name] > 0 for name in MINILM_LOSSES)

    @property
    def attention_scores(self) -> bool:
        """Whether the student must return attention scores (TinyBERT's L_attn or MiniLM)."""
        return self.intermediate and (self.gamma > 0 or self.self_attention)

    @property
    def value_layers(self) -> list[int]:
        """The student layers whose value vectors are captured (MiniLM's last mapped layer)."""
        return [self.pairs[-1][0]] if self.intermediate and self.self_attention else []

    def optimization(self, student: torch.nn.Module, helpers: dict[str, torch.nn.Module], steps_per_epoch: int,
                     epochs_done: int = 0) -> Optimization:
        """AdamW over the student (and, in stages on intermediate layers, the training-only
        ``helpers``) with BERT's schedule over the stage, advanced past ``epochs_done``.

        Example:
            >>> optimization = plan.optimization(student, {}, steps_per_epoch=4)  # doctest: +SKIP
        """
        parameters = list(student.parameters()) + [p for module in helpers.values() if self.intermediate
                                                   for p in module.parameters()]
        optimizer = adamw(parameters, self.learning_rate, self.weight_decay)
        schedule = linear_warmup_schedule(optimizer, self.epochs * steps_per_epoch)
        for _ in range(epochs_done * steps_per_epoch):  # resume: the schedule where it was
            schedule.step()
        return Optimization(parameters, optimizer, schedule)


@dataclass
class Optimization:
    """A stage's trained parameters (their gradients are clipped), optimizer and schedule."""

    parameters: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler


def plan_stages(study: Study, params: dict[str, float | str], pairs: list[tuple[int, int]],
                projection: torch.nn.Module | None = None,
                memories: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[StagePlan]:
    """The plans of the study's stages that have epochs under ``params`` (flat names), in order.

    Example:
        >>> from kd_search.engine.hyperparameters import default_hyperparameters
        >>> from kd_search.engine.spec import parse_study
        >>> study = parse_study({"name": "s", "student": {"teacher_layers": [2]}})
        >>> plans = plan_stages(study, default_hyperparameters(study, 1), [(1, 2)])
        >>> [(p.name, p.intermediate, p.prediction, p.attention_scores) for p in plans]
        [('intermediate', True, False, True), ('prediction', False, True, False)]
    """
    distill = prediction_distillation(str(params["prediction_loss"]))
    return [
        StagePlan(
            name=stage.name, epochs=int(params[f"epochs_{stage.name}"]),
            learning_rate=params[f"learning_rate_{stage.name}"], weight_decay=params["weight_decay"],
            intermediate=stage.name in INTERMEDIATE_STAGES, prediction=stage.name in PREDICTION_STAGES,
            pairs=tuple(pairs), layer_weights=tuple(params[f"layer_weight_{m}"] for m in range(1, len(pairs) + 1)),
            beta=params["beta"], gamma=params["gamma"],
            structure_weights={name: params[f"weight_{name}"] for name in STRUCTURE_LOSSES},
            alpha=params["alpha"], temperature=params["temperature"], prediction_loss=distill,
            projection=projection, memories=memories,
        )
        for stage in study.distillation.stages if int(params[f"epochs_{stage.name}"]) > 0
    ]


def distillation_loss(plan: StagePlan, outputs, target: TeacherBatch, batch: dict[str, torch.Tensor],
                      student_values: dict[int, torch.Tensor]) -> torch.Tensor:
    """The stage's whole objective on one batch: the student's ``outputs`` (with hidden
    states and attention scores as the plan asks) against the teacher's ``target``.

    Example:
        >>> loss = distillation_loss(plan, student(**inputs), teacher.batch(rows, batch, device), batch, {})  # doctest: +SKIP
    """
    loss = torch.zeros((), device=outputs.logits.device)
    if plan.intermediate:
        student_layers = [s for s, _ in plan.pairs]
        student_hidden = [outputs.hidden_states[0]] + [outputs.hidden_states[m] for m in student_layers]
        tinybert_attention = plan.gamma > 0
        loss = loss + intermediate_objective(
            student_hidden, target.hidden,
            [outputs.attentions[m - 1] for m in student_layers] if tinybert_attention else None,
            [target.scores[t] for _, t in plan.pairs] if tinybert_attention else None,
            plan.layer_weights, plan.beta, plan.gamma, plan.projection, plan.projection)
        student_last, teacher_last = plan.pairs[-1]
        attention = SelfAttentionPair(outputs.attentions[student_last - 1], target.scores[teacher_last],
                                      student_values[student_last],
                                      target.values[teacher_last]) if plan.self_attention else None
        loss = loss + structure_objective(student_hidden, target.hidden, batch["attention_mask"],
                                          plan.structure_weights, plan.projection, plan.memories, attention)
    if plan.prediction:
        loss = loss + prediction_objective(outputs.logits, target.logits, batch["labels"], plan.alpha,
                                           plan.temperature, plan.prediction_loss)
    return loss


def train_epoch(plan: StagePlan, student: torch.nn.Module, teacher, split: TokenizedSplit, optimization: Optimization, *,
                batch_size: int, shuffle_seed: int, epoch: int, device: torch.device,
                group_by_length: bool = False, progress: ProgressCallback | None = None) -> float:
    """One epoch of ``plan``'s stage over ``split`` (0-based ``epoch`` within the stage);
    returns the mean training loss. ``teacher`` gives each batch's targets (cache or model);
    ``group_by_length`` batches rows of similar length (:func:`~kd_search.engine.data.batches`).

    Example:
        >>> train_epoch(plan, student, teacher, data.train, optimization, batch_size=32,
        ...             shuffle_seed=0, epoch=0, device=torch.device("cpu"))  # doctest: +SKIP
        0.7312
    """
    optimizer, schedule = optimization.optimizer, optimization.schedule
    steps = -(-len(split) // batch_size)
    check_every = NONFINITE_CHECK_EVERY_CUDA if device.type == "cuda" else 1
    loss_sum = torch.zeros((), device=device)
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    student.train()
    epoch_batches = batches(split, batch_size, shuffle=True, seed=shuffle_seed, group_by_length=group_by_length)
    for step, (rows, batch) in enumerate(epoch_batches):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        target = teacher.batch(rows, batch, device, with_intermediate=plan.intermediate)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"), \
                capture_values(student, plan.value_layers) as student_values:
            outputs = student(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                              attention_mask=batch["attention_mask"], output_hidden_states=plan.intermediate,
                              output_attentions=plan.attention_scores)
            loss = distillation_loss(plan, outputs, target, batch, student_values)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(optimization.parameters, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.detach()
        nonfinite |= ~torch.isfinite(loss.detach())
        if (step + 1) % check_every == 0 and bool(nonfinite):
            raise NonFiniteLossError(f"non-finite loss in stage {plan.name!r}, epoch {epoch + 1}, step {step + 1}")
        if progress:
            progress(f"{plan.name} epoch {epoch + 1}/{plan.epochs}", step + 1, steps)
    if bool(nonfinite) or not math.isfinite(float(loss_sum)):
        raise NonFiniteLossError(f"non-finite loss in stage {plan.name!r}, epoch {epoch + 1}")
    return float(loss_sum) / steps

