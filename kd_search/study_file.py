"""A study file on disk: reading and validating it, the studies shipped with kd-search,
comparison files, and the study file's JSON schema.

The schema itself (what the engine reads) is :mod:`kd_search.engine.spec`; this module is
what the command line, the API and the service use to find and read the files.

The package ships studies (``studies/`` at the top of the repository, installed as
``kd_search/studies/``): wherever a study file is expected, the name of a shipped one
works too (``demo``, ``smoke``, ``paper/sst2_tinybert4l``).

Example:
    >>> study = load_study("smoke")
    >>> study.search.trials
    4
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kd_search.engine.spec import STUDY_NAME_PATTERN, Study, merge_fields, parse_study
from kd_search.engine.validation import format_validation_error
from kd_search.errors import StudyFileError


def load_study(path: str | Path) -> Study:
    """Read and validate a study YAML file (or a shipped study, by name).

    Example:
        >>> load_study("demo").student.teacher_layers
        [2, 4, 6]
    """
    path = resolve_study_file(path)
    return with_absolute_paths(parse_study(_read_yaml(path, "study file"), str(path)))


def _absolute(value: str | None, directory_only: bool = False) -> str | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_absolute() or not (path.is_dir() if directory_only else path.exists()):
        return value  # absolute already, or a hub id, or missing (loading names the error)
    return str(path.resolve())


def with_absolute_paths(study: Study) -> Study:
    """The study with its relative local paths (data files, teacher and student
    directories) made absolute from the working directory, as the command line reads
    them: the search's workers run elsewhere, and the stored study must name the same files.

    Example:
        >>> study = parse_study({"name": "s", "student": {"teacher_layers": [2]}, "teacher": {"model": "."}})
        >>> Path(with_absolute_paths(study).teacher.model).is_absolute()
        True
    """
    task = study.task.model_copy(update={"train_file": _absolute(study.task.train_file),
                                         "eval_file": _absolute(study.task.eval_file)})
    teacher = study.teacher.model_copy(update={"model": _absolute(study.teacher.model, directory_only=True)})
    student = study.student.model_copy(update={"model": _absolute(study.student.model, directory_only=True)})
    return study.model_copy(update={"task": task, "teacher": teacher, "student": student})


def shipped_study_dir() -> Path:
    """The directory of the studies shipped in the package (to copy one and edit it).

    Example:
        >>> shipped_study_dir().joinpath("demo.yaml").is_file()
        True
    """
    import kd_search

    # From a wheel, studies/ is installed into the package (kd_search/studies, plain
    # files: never zipped). In a checkout, editable install or not, it is the top-level
    # studies/ beside kd_search/, the one copy. Found from the package's own files, so a
    # checkout on sys.path never reads another install's copy.
    package = Path(kd_search.__file__).resolve().parent
    installed = package / "studies"
    return installed if installed.is_dir() else package.parent / "studies"


def shipped_studies() -> list[str]:
    """The names of the studies and comparison files shipped in the package, sorted.

    Example:
        >>> [name for name in shipped_studies() if not name.startswith("paper/")]
        ['compare_methods', 'demo', 'smoke']
    """
    root = shipped_study_dir()
    return sorted(path.relative_to(root).with_suffix("").as_posix() for path in root.rglob("*.yaml"))


def resolve_study_file(study: str | Path, relative_to: str | Path = ".") -> Path:
    """The file a study argument names: an existing path first (relative to ``relative_to``),
    else a shipped study by name, with or without ``.yaml``.

    Example:
        >>> resolve_study_file("paper/sst2_tinybert4l.yaml").name
        'sst2_tinybert4l.yaml'
        >>> resolve_study_file("dmeo")
        Traceback (most recent call last):
        kd_search.errors.StudyFileError: dmeo: no such study file or shipped study (shipped: compare_methods, demo, ...)
    """
    path = Path(relative_to) / study
    if path.is_file():
        return path
    name = Path(study).as_posix().removesuffix(".yaml")
    shipped = shipped_studies()
    if name in shipped:
        return shipped_study_dir() / f"{name}.yaml"
    if Path(study).is_absolute():  # an absolute path can only mean a file
        raise StudyFileError(f"{path}: no such study file")
    raise StudyFileError(f"{study}: no such study file or shipped study (shipped: {', '.join(shipped)})")


def _read_yaml(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyFileError(f"{path}: no such {what}") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as error:
        raise StudyFileError(f"{path}: cannot read {what} ({type(error).__name__})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise StudyFileError(f"{path}: not valid YAML{where}") from None
    except RecursionError:  # PyYAML parses nesting recursively: a few hundred levels exhaust the stack
        raise StudyFileError(f"{path}: nested too deeply to be a {what}") from None


class Comparison(BaseModel):
    """A comparison file: distillation methods run on one base study with the same budget.

    ``common`` (the shared budget) and then ``methods[name]`` change the base study's
    fields, merged key by key; every method is run once per seed in ``seeds`` (the
    student's training seed, ``distillation.seed``; the teacher stays the base study's).
    The base study's ``search`` section is ignored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    description: str = ""
    study: str
    seeds: list[int] = Field(min_length=1)
    common: dict[str, Any] = Field(default_factory=dict)
    methods: dict[Annotated[str, Field(pattern=STUDY_NAME_PATTERN)], dict[str, Any]] = Field(min_length=1)


def is_comparison_file(path: str | Path) -> bool:
    """Whether ``path`` holds a comparison file (``study`` and ``methods``) rather than a study.

    Example:
        >>> is_comparison_file("compare_methods"), is_comparison_file("demo")
        (True, False)
    """
    data = _read_yaml(resolve_study_file(path), "study file")
    return isinstance(data, dict) and "methods" in data and "study" in data


def load_comparison(path: str | Path) -> tuple[Comparison, dict[str, Study]]:
    """Read a comparison file (or a shipped one, by name); return it and each method's
    validated study (seed 0 of its list). Its base ``study`` is a path relative to the
    comparison file or the name of a shipped study.

    Example:
        >>> comparison, studies = load_comparison("compare_methods")
        >>> sorted(studies)
        ['fsd', 'minilm', 'pkd', 'rkd', 'tinybert', 'vkd']
    """
    path = resolve_study_file(path)
    data = _read_yaml(path, "comparison file")
    try:
        comparison = Comparison.model_validate(data)
    except ValidationError as error:
        raise StudyFileError(format_validation_error(str(path), error)) from None
    base_path = resolve_study_file(comparison.study, relative_to=path.parent).resolve()
    base = _read_yaml(base_path, "study file")
    if not isinstance(base, dict):
        raise StudyFileError(f"{base_path}: a study file must be a mapping")
    base.pop("search", None)  # a comparison runs each method once per seed, no search
    studies = {}
    for method, changes in comparison.methods.items():
        merged = merge_fields(merge_fields(base, comparison.common), changes)
        merged["name"] = f"{base.get('name', 'study')}-{method}"
        studies[method] = parse_study(merged, f"{path}: methods.{method}")
    return comparison, studies


def study_json_schema() -> str:
    """The JSON schema of the study file, for editors (e.g. the YAML language server).

    Example:
        >>> '"Study"' in study_json_schema()
        True
    """
    return json.dumps(Study.model_json_schema(), indent=2)
