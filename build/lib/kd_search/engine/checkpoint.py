"""A trial's epoch checkpoint: the student, its training-only helpers and where training is.

Files: ``student.safetensors``, ``<helper>.safetensors`` per helper (width projection,
FSD memory) and ``position.json``, written last so that its presence marks a complete
checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


@dataclass(frozen=True)
class ResumePosition:
    """Where training stands after an epoch: ``stage`` indexes the trial's stages that have
    epochs, ``epoch`` counts the epochs done within it, ``global_epoch`` those done in all.

    Example:
        >>> position = ResumePosition().after_epoch(stage=0, epoch=0, stage_epochs=1, seconds=2.5)
        >>> position
        ResumePosition(stage=1, epoch=0, global_epoch=1, train_seconds=2.5)
        >>> ResumePosition.from_json(position.to_json()) == position
        True
    """

    stage: int = 0
    epoch: int = 0
    global_epoch: int = 0
    train_seconds: float = 0.0

    def after_epoch(self, stage: int, epoch: int, stage_epochs: int, seconds: float) -> ResumePosition:
        """The position once 0-based ``epoch`` of ``stage`` (of ``stage_epochs``) has taken ``seconds``.

        Example:
            >>> ResumePosition().after_epoch(stage=0, epoch=0, stage_epochs=3, seconds=1.0).epoch
            1
        """
        finished = epoch + 1 == stage_epochs
        return ResumePosition(stage + finished, 0 if finished else epoch + 1, self.global_epoch + 1,
                              self.train_seconds + seconds)

    def to_json(self) -> str:
        """The position as ``position.json`` holds it.

        Example:
            >>> ResumePosition(stage=1).to_json()
            '{"stage": 1, "epoch": 0, "global_epoch": 0, "train_seconds": 0.0}'
        """
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ResumePosition:
        """The position ``position.json`` holds.

        Example:
            >>> ResumePosition.from_json('{"stage": 1, "epoch": 0, "global_epoch": 2, "train_seconds": 3.0}').stage
            1
        """
        return cls(**json.loads(text))


def save_checkpoint(directory: Path, student, helpers: dict[str, torch.nn.Module], position: ResumePosition) -> None:
    """Write the student, its training-only helpers and ``position`` into ``directory``.

    Example:
        >>> save_checkpoint(Path(checkpoint_dir), student, {}, ResumePosition())  # doctest: +SKIP
    """
    save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(directory / "student.safetensors"))
    for name, module in helpers.items():
        save_file(module.state_dict(), str(directory / f"{name}.safetensors"))
    (directory / "position.json").write_text(position.to_json())  # last: marks the checkpoint complete


def load_checkpoint(directory: Path, student, helpers: dict[str, torch.nn.Module]) -> ResumePosition:
    """Load the student and the helpers the checkpoint holds; return where training was.

    Example:
        >>> load_checkpoint(Path(checkpoint_dir), student, {}).global_epoch  # doctest: +SKIP
        1
    """
    student.load_state_dict(load_file(str(directory / "student.safetensors")))
    for name, module in helpers.items():
        if (directory / f"{name}.safetensors").is_file():
            module.load_state_dict(load_file(str(directory / f"{name}.safetensors")))
    return ResumePosition.from_json((directory / "position.json").read_text())
