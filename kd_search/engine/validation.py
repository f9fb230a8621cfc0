"""How the study file's models validate: the strict base every one of them derives from, the
positive number types they share, and the one-line message a validation error becomes.

The models themselves are :mod:`kd_search.engine.spec`'s (the study) and
:mod:`kd_search.engine.search_settings`' (the service's settings in the same file).

Example:
    >>> class Limits(StrictModel):
    ...     trials: PositiveInt = 1
    >>> try:
    ...     Limits.model_validate({"trials": 0})
    ... except ValidationError as error:
    ...     print(format_validation_error("my.yaml", error))
    my.yaml: trials: Input should be greater than 0
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
_UNION_TAGS = {"int", "float", "str", "bool"}


class StrictModel(BaseModel):
    """A part of the study file: unknown keys are errors (a typo is never a silently
    ignored setting) and the parsed value is frozen.

    Example:
        >>> class Part(StrictModel):
        ...     seed: int = 0
        >>> Part.model_validate({"sed": 1})
        Traceback (most recent call last):
        pydantic_core._pydantic_core.ValidationError: 1 validation error for Part
        ...
    """

    # A non-finite number (.inf, .nan) is never a usable setting; reject it here rather
    # than after the teacher is fine-tuned.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _field_path(loc: tuple) -> str:
    # Union members add tags such as "constrained-float" or "literal['bound']" to the
    # location; users know fields, not union members.
    parts = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or "-" in p or p in _UNION_TAGS))]
    return ".".join(parts)


def _message(error: dict) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required field is missing"
    return error["msg"].removeprefix("Value error, ")


def format_validation_error(path: str, error: ValidationError) -> str:
    """A pydantic error as the one line users read: the file, the field, what is wrong.

    Example:
        >>> from kd_search.engine.spec import Study
        >>> try:
        ...     Study.model_validate({"name": "s", "student": {"teacher_layers": [2]}, "sed": 1})
        ... except ValidationError as error:
        ...     print(format_validation_error("my.yaml", error))
        my.yaml: sed: unknown key
    """
    errors = error.errors()
    location = _field_path(errors[0]["loc"])
    # A value that fits no member of a union gets one error per member: say them all.
    messages = [_message(e) for e in errors if _field_path(e["loc"]) == location]
    message = " or ".join(dict.fromkeys(messages))
    return f"{path}: {location}: {message}" if location else f"{path}: {message}"
