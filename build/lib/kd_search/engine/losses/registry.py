"""The structure losses' functions, each registered once against its name in the catalog
(:mod:`kd_search.engine.structure_catalog`), as torchdistill registers its losses.

A registered function takes ``(student, teacher, inputs)``: the last mapped layer's
hidden states of both, or the lists over every mapped layer when the catalog says
``layers="mapped"``, and the :class:`StructureInputs` the objective shares.

Example:
    >>> import kd_search.engine.losses.structure  # registers every structure loss
    >>> from kd_search.engine.structure_catalog import STRUCTURE_LOSSES
    >>> tuple(STRUCTURE_TERMS) == STRUCTURE_LOSSES
    True
    >>> register_structure_loss("fsd_typo")
    Traceback (most recent call last):
    ...
    ValueError: 'fsd_typo' is not a structure loss of the catalog
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from kd_search.engine.losses.minilm import SelfAttentionPair
from kd_search.engine.structure_catalog import STRUCTURE_LOSS_NEEDS


class StructureInputs(NamedTuple):
    """What the structure losses read besides hidden states: the attention mask over
    tokens, the width projection (PKD), FSD's (student, teacher) memories and the last
    mapped layer's self-attention (MiniLM); the catalog says which loss needs which."""

    mask: torch.Tensor
    projection: Callable[[torch.Tensor], torch.Tensor] | None = None
    memories: tuple[torch.Tensor, torch.Tensor] | None = None
    attention: SelfAttentionPair | None = None


StructureTerm = Callable[[Any, Any, StructureInputs], torch.Tensor]
STRUCTURE_TERMS: dict[str, StructureTerm] = {}


def register_structure_loss(name: str) -> Callable[[StructureTerm], StructureTerm]:
    """Decorator: ``function`` is the structure loss ``name`` of the catalog (once per name).

    Example:
        >>> STRUCTURE_TERMS["rkd_angle"].__name__
        '_rkd_angle'
    """
    if name not in STRUCTURE_LOSS_NEEDS:
        raise ValueError(f"{name!r} is not a structure loss of the catalog")

    def register(function: StructureTerm) -> StructureTerm:
        if name in STRUCTURE_TERMS:
            raise ValueError(f"structure loss {name!r} is registered twice")
        STRUCTURE_TERMS[name] = function
        return function

    return register
