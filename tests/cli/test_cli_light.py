"""The CLI starts at once and speaks one vocabulary: no heavy import before a command works, one
spelling per option (old ones as hidden aliases with a note), flags as flags, scoring options everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.core import TyperArgument, TyperGroup, TyperOption
from typer.testing import CliRunner

from bloodcell.cli import main as cli_main
from bloodcell.cli.options import DEPRECATED_INPUTS, DEPRECATED_OPTIONS, SCORING_COMMANDS

HEAVY = ("torch", "timm", "sklearn", "onnx", "onnxruntime", "cv2", "sqlalchemy", "alembic", "fhir")
IMPORTED = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))
"""


def _heavy_after_importing(module: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", IMPORTED, module], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [name for name in json.loads(done.stdout) if name in HEAVY]


@pytest.mark.parametrize("name", sorted(cli_main.COMMANDS))
def test_a_command_module_imports_no_heavy_library(name):
    module = cli_main.COMMANDS[name][0].partition(":")[0]
    assert _heavy_after_importing(module) == [], f"{module} imports them at module level: move them into the function"


def test_models_list_imports_no_torch_and_lists_the_catalog():
    from bloodcell.models.catalog import CATALOG

    probe = ("import json, sys; sys.argv = ['bloodcell', 'models', 'list']\n"
             "from bloodcell.cli.main import main\n"
             "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
             "print('PROBE ' + json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "250"})
    assert done.returncode == 0, done.stderr
    listing, _, modules = done.stdout.rpartition("PROBE ")
    assert [m for m in json.loads(modules) if m in HEAVY] == []
    for entry in CATALOG:
        assert entry.name in listing
    assert "23.52M" in listing  # resnet50's parameters with 8 classes, from the catalog


def _leaves() -> list[tuple[str, object]]:
    """(command path, click command) of every command and sub-command."""
    ctx = None
    leaves = []
    for name in cli_main.COMMANDS:
        command = cli_main.load_command(name)
        if isinstance(command, TyperGroup):
            leaves += [(f"{name} {sub}", command.get_command(ctx, sub)) for sub in command.list_commands(ctx)]
        else:
            leaves.append((name, command))
    return leaves


LEAVES = _leaves()


@pytest.mark.parametrize(("path", "command"), LEAVES, ids=[path for path, _ in LEAVES])
def test_every_command_speaks_the_one_vocabulary(path, command):
    options = [p for p in command.params if isinstance(p, TyperOption)]
    names = {opt for p in options if not p.hidden for opt in p.opts + p.secondary_opts}
    assert "--out" not in names, f"{path}: an output is spelt --output/-o"
    for option in options:
        if set(option.opts) & set(DEPRECATED_OPTIONS):  # reproduce's --report: a flag (write the page), no path
            assert option.is_flag, f"{path}: an output is spelt --output/-o, not {option.opts}"
        if option.name in ("output", "out"):
            assert sorted(option.opts) == ["--output", "-o"], f"{path}: {option.opts}"
        if option.bare_type() == "bool":
            assert option.is_flag, f"{path}: {option.opts} takes no value, so it must be a flag"
    if path in SCORING_COMMANDS:
        assert {"--engine", "--threads", "--tta"} <= names, path
    assert not names & set(DEPRECATED_INPUTS), f"{path}: the main input is positional"


def test_the_main_inputs_are_positional_and_flags_show_as_flags():
    commands = dict(LEAVES)
    assert [p.name for p in commands["adapt"].params if isinstance(p, TyperArgument)] == ["cells"]
    for sub in ("review export", "review apply"):
        assert [p.name for p in commands[sub].params if isinstance(p, TyperArgument)] == ["counts"]
    help_text = CliRunner().invoke(cli_main.app, ["predict", "--help"], env={"COLUMNS": "200"}).output
    assert "--tta " in help_text and "<bool>" not in help_text


@pytest.mark.parametrize(("args", "note"), [
    (["data", "check", "nosuch", "--report", "r.json"], "--report is deprecated; use --output"),
    (["data", "check", "nosuch", "--report=r.json"], "--report is deprecated; use --output"),
    (["tune", "--out", "t", "--config", "missing.toml"], "--out is deprecated; use --output"),
])
def test_an_old_option_spelling_still_works_with_a_note(args, note, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli_main.app, args)
    assert note in result.stderr
    assert result.exit_code != 2 and "No such option" not in result.output  # parsed: the command itself answered


def test_an_old_input_option_becomes_the_positional_input(tmp_path):
    result = CliRunner().invoke(cli_main.app, ["adapt", "--cells", str(tmp_path / "mine"), "-o", str(tmp_path / "a.safetensors")])
    assert "--cells is deprecated" in result.stderr
    assert "mine: folder not found" in str(result.exception)


def test_undeprecate_leaves_values_after_a_double_dash_alone():
    command = cli_main.load_command("predict")
    rewritten = cli_main.undeprecate(None, command, ["--out", "x.csv", "--", "--out"])
    assert rewritten == ["--output", "x.csv", "--", "--out"]


def test_an_old_spelling_that_is_the_commands_own_option_is_left_alone(capsys):
    command = cli_main.load_command("reproduce")  # its --report is a flag of its own (the HTML page)
    assert cli_main.undeprecate(None, command, ["all", "--report"]) == ["all", "--report"]
    assert capsys.readouterr().err == ""
