"""Prepare the teacher once: fine-tune it on the task when the study asks, store, reuse.

A fine-tuned teacher is stored as a Hugging Face directory (safetensors) under
``<workdir>/teachers/<key>``, where the key hashes what produced it: the base model,
the fine-tuning settings, the data fingerprint and the seed. Later runs with the same
inputs reuse it; a crash mid-way leaves no half-written teacher (write, then rename).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from kd_search.engine import measures
from kd_search.engine.data import TaskData, batches, inference_batches
from kd_search.engine.models import load_classifier, load_tokenizer, resolve_model
from kd_search.engine.optim import adamw, linear_warmup_schedule
from kd_search.engine.progress import ProgressCallback
from kd_search.engine.spec import Study
from kd_search.files import write_directory

# Fine-tuning fields added after teachers were first stored, with the value every earlier
# teacher was trained under: at that value a field stays out of the key, so an upgrade
# keeps each stored teacher (on a cluster, hours of GPU) instead of fine-tuning it again.
FINE_TUNE_FIELDS_ADDED = {"group_by_length": False}


def teacher_key(study: Study, data: TaskData) -> str:
    """Content key of the teacher the study uses (base model, fine-tuning, data, seed).

    Example:
        >>> len(teacher_key(study, data))  # doctest: +SKIP
        16
    """
    fine_tune = study.teacher.fine_tune
    recipe = {
        "model": study.teacher.model,
        "fine_tune": fine_tune.model_dump(exclude={name for name, value in FINE_TUNE_FIELDS_ADDED.items()
                                                   if getattr(fine_tune, name) == value}) if fine_tune else None,
        "data": data.fingerprint if fine_tune else None,
        "seed": study.seed if fine_tune else None,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def evaluate_classifier(model, split, batch_size: int, device: torch.device) -> torch.Tensor:
    """Logits of ``model`` on every row of ``split``, in row order (float32, on the CPU).

    Rows run in batches of similar length (:func:`~kd_search.engine.data.inference_batches`),
    so little padding is computed; the logits are put back in row order.

    Example:
        >>> evaluate_classifier(model, data.eval, 128, torch.device("cpu")).shape  # doctest: +SKIP
        torch.Size([1000, 2])
    """
    model.eval()
    outputs, order = [], []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for rows, batch in inference_batches(split, batch_size):
            logits = model(input_ids=batch["input_ids"].to(device), token_type_ids=batch["token_type_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits
            outputs.append(logits.float().cpu())
            order.append(rows)
    logits = torch.cat(outputs)
    return torch.empty_like(logits).index_copy_(0, torch.cat(order), logits)


def _fine_tune(study: Study, data: TaskData, device: torch.device, progress: ProgressCallback | None):
    settings = study.teacher.fine_tune
    torch.manual_seed(study.seed)
    model = load_classifier(study.teacher.model, data.num_labels, data.label_names, new_head=True).to(device)
    train = data.train
    if settings.train_limit and settings.train_limit < len(train):
        keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(study.seed))[: settings.train_limit]
        train = train.subset(keep)
    whole_epochs = int(-(-settings.epochs // 1))
    steps_per_epoch = -(-len(train) // settings.batch_size)
    total_steps = int(settings.epochs * steps_per_epoch)
    optimizer = adamw(model.parameters(), settings.learning_rate, settings.weight_decay)
    schedule = linear_warmup_schedule(optimizer, total_steps)
    step = 0
    model.train()
    for epoch in range(whole_epochs):
        for _, batch in batches(train, settings.batch_size, shuffle=True, seed=study.seed + epoch,
                                group_by_length=settings.group_by_length):
            if step >= total_steps:
                break
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if progress:
                progress("fine-tuning teacher", step, total_steps)
    return model


def prepare_teacher(study: Study, data: TaskData, workdir: str | Path, device: torch.device | None = None,
                    progress: ProgressCallback | None = None) -> tuple[str, dict[str, float]]:
    """The teacher's model reference, fine-tuning and storing it first if the study asks.

    Returns the path (or hub id) and a summary (eval accuracy, seconds, reused or not).

    Example:
        >>> path, info = prepare_teacher(study, data, "runs/demo")  # doctest: +SKIP
        >>> info["eval_accuracy"] > 0.78  # doctest: +SKIP
        True
    """
    if study.teacher.fine_tune is None:
        return resolve_model(study.teacher.model), {"reused": True}
    device = device or torch.device("cpu")
    target = Path(workdir) / "teachers" / teacher_key(study, data)
    summary_file = target / "kd_search_teacher.json"
    if summary_file.is_file():
        return str(target), json.loads(summary_file.read_text()) | {"reused": True}
    started = time.perf_counter()
    model = _fine_tune(study, data, device, progress)
    seconds = time.perf_counter() - started
    logits = evaluate_classifier(model, data.eval, study.distillation.eval_batch_size, device)
    summary = {
        "eval_accuracy": measures.accuracy(logits.argmax(dim=1), data.eval.labels),
        "fine_tune_seconds": round(seconds, 1),
        "base_model": study.teacher.model,
    }
    def save(staging: Path) -> None:
        model.cpu().save_pretrained(staging, safe_serialization=True)
        load_tokenizer(study.teacher.model).save_pretrained(staging)
        (staging / "kd_search_teacher.json").write_text(json.dumps(summary, indent=2))

    # Another process may have stored the same teacher first: then keep theirs.
    write_directory(target, save, replace=False)
    return str(target), summary | {"reused": False}
