"""README's "Commands" table documents every sub-command of the `kldrift` parser and each of its
options, and lists none that does not exist (read from argparse, not from a list kept here)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from kldrift.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """`kldrift a b` -> the option strings and positional choices of that leaf command."""
    found: dict[str, list[str]] = {}
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if subparsers:
        for name, child in subparsers[0].choices.items():
            found |= _commands(child, (*path, name))
        return found
    words: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.option_strings:
            words.append(max(action.option_strings, key=len))
        elif action.choices:
            words.extend(str(choice) for choice in action.choices)
        elif action.nargs == argparse.REMAINDER:
            words.append("-- ")  # Beam pipeline options after `--`
    found[" ".join(("kldrift", *path))] = words
    return found


def _table_rows() -> dict[str, str]:
    text = README.read_text()
    section = text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `(kldrift [a-z -]+)` \|", line)
        if match:
            rows[match.group(1)] = line
    return rows


def test_the_parser_has_the_commands_a_user_runs() -> None:
    commands = _commands(build_parser())
    # The walk itself works: nested sub-commands and positional choices are found.
    assert {"kldrift run", "kldrift watch", "kldrift config check", "kldrift local kafka"} <= set(
        commands
    )
    assert "stop" in commands["kldrift local kafka"] and "--on-drift" in commands["kldrift watch"]


def test_readme_has_a_row_for_every_command_and_none_other() -> None:
    assert set(_table_rows()) == set(_commands(build_parser()))


def test_each_commands_row_names_every_option() -> None:
    rows = _table_rows()
    missing = {
        command: [word for word in words if f"`{word}" not in rows.get(command, "")]
        for command, words in _commands(build_parser()).items()
    }
    assert not {c: w for c, w in missing.items() if w}, missing
