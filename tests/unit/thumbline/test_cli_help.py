"""Every ``--help`` page of the CLI, rendered as a person reads it (typer's CliRunner)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib.metadata import version

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from thumbline.cli.commands import app
from thumbline.settings import Settings

runner = CliRunner()
#: Commands that read no setting at all: no environment section.
NO_SETTINGS = {("schemas", "export")}


def commands() -> Iterator[tuple[tuple[str, ...], object]]:
    def walk(path: tuple[str, ...], command: object) -> Iterator[tuple[tuple[str, ...], object]]:
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            yield path, command
            return
        for name, sub in subcommands.items():
            yield from walk((*path, name), sub)

    yield from walk((), get_command(app))


ALL = sorted(path for path, _ in commands())


def help_of(*path: str) -> str:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def test_there_are_commands_to_check():
    assert ("inbox",) in ALL and ("send", "feedback") in ALL and len(ALL) >= 15


@pytest.mark.parametrize("path", [(), ("send",), ("keys",), *ALL], ids=" ".join)
def test_no_help_page_tags_flags_with_a_type(path):
    assert "<bool>" not in help_of(*path)


@pytest.mark.parametrize("path", ALL, ids=" ".join)
def test_every_option_of_every_command_says_what_it_does(path):
    command = dict(commands())[path]
    missing = [
        p.opts[0]
        for p in command.params  # type: ignore[attr-defined]
        if not getattr(p, "hidden", False) and not (getattr(p, "help", None) or "").strip()
    ]
    assert not missing, f"thumbline {' '.join(path)}: no help for {missing}"


@pytest.mark.parametrize("path", [p for p in ALL if p not in NO_SETTINGS], ids=" ".join)
def test_every_command_that_reads_settings_names_its_variables_and_they_exist(path):
    page = help_of(*path)
    assert "Environment" in page
    named = set(re.findall(r"THUMBLINE_[A-Z0-9_]+\*?", page))
    assert named, page
    fields = {f"THUMBLINE_{name.upper()}" for name in Settings.model_fields}
    for variable in named:
        if variable.endswith("*"):
            assert any(f.startswith(variable[:-1]) for f in fields), variable
        else:
            assert variable in fields, f"{variable} is not a setting"


def test_version_comes_from_the_package_metadata():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"thumbline {version('thumbline')}"


def test_inbox_and_send_spell_the_user_and_session_filters_alike_and_keep_the_old_spelling():
    inbox, send = help_of("inbox"), help_of("send", "feedback")
    for page in (inbox, send):
        assert "--user-id" in page and "--session-id" in page
    assert not re.search(r"--user\b(?!-)", inbox) and not re.search(r"--session\b(?!-)", inbox)
    hidden = {o for p in dict(commands())[("inbox",)].params if p.hidden for o in p.opts}  # type: ignore[attr-defined]
    assert {"--user", "--session"} <= hidden


def test_send_feedback_offers_the_shorthands_a_user_tries():
    page = help_of("send", "feedback")
    for flag in ("--rating", "--score", "--thumb"):
        assert flag in page
