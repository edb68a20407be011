"""The ``bloodcell`` shell: a lazy command table, fast --help/--version, one-sentence errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from bloodcell._version import __version__
from bloodcell.cli import main as cli_main

PROBE = """
import json, sys
sys.argv = ["bloodcell", *json.loads(sys.argv[1])]
from bloodcell.cli.main import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print("\\nPROBE " + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""
HEAVY = ("torch", "numpy", "PIL", "fastapi", "uvicorn", "timm")


def _probe(*args: str) -> tuple[str, int, list[str]]:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(args))], capture_output=True, text=True,
                          timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    output, _, probe = done.stdout.rpartition("\nPROBE ")
    result = json.loads(probe)
    return output + done.stderr, result["code"], result["modules"]


#: The shell and the shared option declarations (light: no heavy import), which are not commands.
SHELL = ("bloodcell.cli.main", "bloodcell.cli.options", "bloodcell.cli.choices")


def _command_modules(modules: list[str]) -> list[str]:
    return [m for m in modules if m.startswith("bloodcell.cli.") and m not in SHELL]


@pytest.mark.parametrize("args", [["--version"], ["--help"], []], ids=["version", "help", "no-args"])
def test_version_and_help_import_no_command_module_and_no_torch(args):
    output, code, modules = _probe(*args)
    assert code == (0 if args else 2)
    assert _command_modules(modules) == []
    assert [m for m in modules if m.split(".")[0] in HEAVY] == []
    if args == ["--version"]:
        assert output.strip() == f"bloodcell {__version__}"
    else:
        for name, (_, help_line) in cli_main.COMMANDS.items():
            assert f"  {name} " in output, name
        assert "Datasets: registry" in output


def test_one_command_help_imports_only_that_command():
    output, code, modules = _probe("interpolate", "--help")
    assert code == 0 and "ALPHA" in output
    assert _command_modules(modules) == ["bloodcell.cli.interpolate"]


def test_a_mistyped_command_is_a_usage_error_with_a_suggestion():
    done = subprocess.run([sys.executable, "-m", "bloodcell", "serv"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Did you mean 'serve'" in done.stderr and "Traceback" not in done.stderr


def test_python_dash_m_bloodcell_answers_the_version():
    done = subprocess.run([sys.executable, "-m", "bloodcell", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"bloodcell {__version__}"


EXPECTED = {
    "groups": {"data", "models", "detector", "review", "samples", "users"},
    "commands": {"predict", "export", "calibrate-ood", "train", "tune", "interpolate", "serve", "evaluate",
                 "benchmark", "demo", "count", "adapt", "reproduce"},
}


def test_the_table_keeps_every_command_name():
    assert set(cli_main.COMMANDS) == EXPECTED["groups"] | EXPECTED["commands"]


@pytest.mark.parametrize("name", sorted(cli_main.COMMANDS))
def test_every_command_resolves_and_has_the_help_of_the_table(name):
    command = cli_main.load_command(name)
    assert command.name == name
    is_group = hasattr(command, "list_commands")
    assert is_group == (name in EXPECTED["groups"])
    table_help = cli_main.COMMANDS[name][1]
    assert (command.help or "").splitlines()[0] == table_help, "update the one-line help in COMMANDS"
    result = CliRunner().invoke(cli_main.app, [name, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"Usage: bloodcell {name}" in result.output or f"Usage: root {name}" in result.output


def _tmp_command(tmp_path, monkeypatch, body: str) -> None:
    module = f"bloodcell_tmp_command_{tmp_path.name}"  # a fresh module per test
    (tmp_path / f"{module}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli_main.COMMANDS, "boom", (f"{module}:boom", "A command added in one line."))


def test_a_bloodcell_error_is_one_red_sentence_and_exit_1(tmp_path, monkeypatch, capsys):
    _tmp_command(tmp_path, monkeypatch, (
        "from bloodcell.errors import DataError\n"
        "def boom():\n"
        "    '''A command added in one line.'''\n"
        "    raise DataError('the manifest names 3 images that are not in the folder')\n"
    ))
    monkeypatch.setattr(sys, "argv", ["bloodcell", "boom"])
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.strip() == "Error: the manifest names 3 images that are not in the folder"
    assert "Traceback" not in err


def test_a_new_command_is_one_line_in_the_table(tmp_path, monkeypatch):
    _tmp_command(tmp_path, monkeypatch, (
        "import typer\n"
        "def boom(times: int = typer.Option(1, help='How often.')):\n"
        "    '''A command added in one line.'''\n"
        "    typer.echo('boom' * times)\n"
    ))
    listing = CliRunner().invoke(cli_main.app, ["--help"], env={"COLUMNS": "200"})
    assert "boom" in listing.output and "A command added in one line." in listing.output
    ran = CliRunner().invoke(cli_main.app, ["boom", "--times", "2"])
    assert ran.exit_code == 0 and ran.output.strip() == "boomboom"
