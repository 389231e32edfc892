"""The documented commands exist: every `registry ...` line in the README, docs/operations.md
and the commands' own Example lines names a real command and only options it takes.

Documentation that drifts from the CLI is how an operator's backup script breaks on the
night it is needed; this test makes such drift a red CI run.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from registry.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", ROOT / "docs" / "operations.md", ROOT / "docs" / "interoperability.md",
             ROOT / "docs" / "fhir.md", ROOT / "docs" / "statistical-export.md"]  # fmt: skip
SHELL_OPERATORS = {"&&", "||", "|", ";", ">", ">>", "<", "2>", "&"}
ROOT_COMMAND = typer.main.get_command(app)
Command = type(ROOT_COMMAND).__mro__[1]  # typer's (vendored) click Command


def _segments(line: str) -> list[list[str]]:
    """Each simple command of a shell line, as tokens (comments dropped, operators split)."""
    line = re.sub(r"\$\([^)]*\)", "X", line).replace(";", " ; ")  # a $(...) substitution is one word
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote: prose, not a command
        return []
    segments, current = [], []
    for token in tokens:
        if token in SHELL_OPERATORS:
            segments.append(current)
            current = []
        else:
            current.append(token)
    return [*segments, current]


def _invocations(line: str) -> list[list[str]]:
    """The arguments after `registry` of every registry invocation on a line."""
    found = []
    for tokens in _segments(line):
        while tokens and re.fullmatch(r"[A-Z_]+=\S*", tokens[0]):  # leading VAR=value assignments
            tokens = tokens[1:]
        for i, token in enumerate(tokens):
            if (i == 0 and token == "registry") or token.endswith("bin/registry"):
                found.append(tokens[i + 1 :])
                break
    return found


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, arguments) of every registry invocation in code blocks, inline code and Example lines."""
    commands = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        in_block = False
        for number, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith("```"):
                in_block = not in_block
                continue
            where = f"{document.name}:{number}"
            if in_block:
                commands += [(where, args) for args in _invocations(line)]
            else:
                for span in re.findall(r"`(registry [^`]+)`", line):
                    commands += [(where, args) for args in _invocations(span)]
    for name, command in _leaves(ROOT_COMMAND, ()):
        for example in re.findall(r"Examples?: (.+)", command.help or ""):
            commands += [(f"registry {name} (Example)", args) for args in _invocations(example)]
    return commands


def _leaves(group: Command, path: tuple[str, ...]) -> list[tuple[str, Command]]:
    if not hasattr(group, "commands"):
        return [(" ".join(path), group)]
    return [leaf for name, sub in group.commands.items() for leaf in _leaves(sub, (*path, name))]


def _options(command: Command) -> dict[str, bool]:
    """Each option of ``command`` and whether it takes a value."""
    names = {"--help": False}
    for parameter in command.params:
        takes_value = not (getattr(parameter, "is_flag", False) or getattr(parameter, "count", False))
        names.update((opt, takes_value) for opt in (*parameter.opts, *parameter.secondary_opts) if opt.startswith("-"))
    return names


def unknown_parts(args: list[str]) -> list[str]:
    """What in ``args`` the CLI would not accept: an unknown command or option."""
    command: Command = ROOT_COMMAND
    problems = []
    rest = list(args)
    while rest:
        token = rest.pop(0)
        if token == "--":
            break
        if token.startswith("-") and len(token) > 1 and not re.fullmatch(r"-\d+", token):
            name, _, value = token.partition("=")
            options = _options(command)
            if name not in options:
                problems.append(f"option {name} of `{command.name}`")
            elif options[name] and not value and rest:
                rest.pop(0)  # the option's value
            continue
        if hasattr(command, "commands"):  # a group
            if token not in command.commands:
                problems.append(f"command {token!r}")
                break
            command = command.commands[token]
    return problems


COMMANDS = documented_commands()


def test_the_documents_show_many_commands():
    # The extraction itself must work, or every case below would pass vacuously.
    assert len(COMMANDS) > 60
    assert any(args[:2] == ["db", "upgrade"] for _, args in COMMANDS)


@pytest.mark.parametrize(("where", "args"), COMMANDS, ids=[f"{w}: {' '.join(a)}"[:90] for w, a in COMMANDS])
def test_documented_command_exists(where, args):
    assert unknown_parts(args) == [], f"{where}: registry {' '.join(args)}"


@pytest.mark.parametrize(
    ("args", "problems"),
    [
        (["db", "upgrade"], []),
        (["--database", "sqlite:///x.db", "summary"], []),
        (["db", "downgrade", "--yes", "--", "-1"], []),
        (["report", "--archive", "reports", "--colour"], ["option --colour of `report`"]),
        (["bakup", "out"], ["command 'bakup'"]),
    ],
)
def test_unknown_commands_and_options_are_caught(args, problems):
    assert unknown_parts(args) == problems


def test_the_interoperability_table_names_every_field_as_the_exports_do():
    """docs/interoperability.md's field table: every sheet column once, with the REDCap field and ODM item the
    exports write (a new column, or a renamed one, fails here until the table says where it goes)."""
    from registry.interchange import odm, redcap
    from registry.sheets import SHEETS_BY_NAME

    text = (ROOT / "docs" / "interoperability.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)\.(\w+)` \| `(\w+)` \| `([^`]+)` \|", text, flags=re.MULTILINE)
    expected = [
        (f.form, f.column.name, f.name,
         "SubjectData/@SubjectKey" if f.column.name == "study_id" else odm.item_oid(SHEETS_BY_NAME[f.form], f.column))
        for f in redcap.FIELDS
    ]  # fmt: skip
    assert rows == expected
