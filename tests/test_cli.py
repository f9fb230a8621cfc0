"""The command line starts fast: it imports no heavy library before a command needs one."""

from __future__ import annotations

import ast
import io
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from kd_search.cli import main
from kd_search.cli._options import progress_bar

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "ray", "optuna", "mlflow", "datasets")


def _loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {modules!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True,
                            env=os.environ | {"PYTHONPATH": str(ROOT)})
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


def test_cli_imports_no_heavy_library():
    assert _loaded_after("import kd_search.cli", HEAVY) == []


def test_engine_imports_no_service_library():
    engine = sorted(f"kd_search.engine.{'.'.join(p.relative_to(ROOT / 'kd_search' / 'engine').with_suffix('').parts)}"
                    for p in (ROOT / "kd_search" / "engine").rglob("*.py"))
    code = "import importlib\n" + "".join(f"importlib.import_module({name.removesuffix('.__init__')!r})\n"
                                          for name in engine)
    assert _loaded_after(code, ("ray", "optuna", "mlflow")) == []


def test_help_lists_the_commands(runner):
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "validate" in result.output and "launch" in result.output


def test_printed_commands_repeat_the_locations_that_are_not_default(tmp_path, monkeypatch):
    from kd_search.cli._options import location_args
    from kd_search.service.search import Locations

    monkeypatch.chdir(tmp_path)
    work = (tmp_path / "w").resolve()
    assert location_args(Locations.resolve()) == ""
    assert location_args(Locations.resolve(workdir=work)) == f" --workdir {work}"
    custom = Locations.resolve(workdir=work, storage="postgresql+psycopg://kd:pw@db/optuna",
                               tracking_uri="http://mlflow:5000")
    assert location_args(custom, storage=False) == f" --workdir {work} --tracking-uri http://mlflow:5000"
    assert " --storage 'postgresql+psycopg://kd:***@db/optuna' " in location_args(custom)


def test_printed_kd_search_command_runs_from_any_directory(tmp_path):
    import shlex

    from kd_search.cli._options import self_command

    command = shlex.split(self_command())
    result = subprocess.run([*command, "--version"], cwd=tmp_path, capture_output=True, text=True,
                            env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert result.returncode == 0 and "version" in result.stdout, result


def test_progress_keeps_counts_and_times_whole_at_80_columns():
    screen = io.StringIO()
    with progress_bar(Console(file=screen, width=80)) as update:
        update("fine-tuning teacher", 125, 125)
        update("caching teacher outputs (983.1 MB in /tmp/a-long-work-dir/runs/cache)", 24, 24)
    text = screen.getvalue()
    assert "125/125" in text and "24/24" in text and "…" not in text
    assert "/tmp/a-long-work-dir/runs/cache)" in text  # the long description folds, whole
    assert all(len(line) <= 80 for line in text.splitlines())
