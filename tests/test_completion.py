"""ravenctl's bash completion offers exactly what ravenctl's parser accepts: every command,
subcommand and option, and the fixed values of options, so a new option cannot be left out of
it unnoticed (or a removed one kept)."""

from __future__ import annotations

import argparse

import pytest

from ravend.cli.ravenctl import parser
from ravend.cli.simulate_command import build_parser as simulator_parser
from tests.helpers.bash_completion import offered


def subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_paths() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every command and subcommand of ravenctl with its parser; simulate's is the simulator's
    own (ravenctl hands it every argument)."""
    paths = {}
    for name, sub in subparsers(parser()).items():
        paths[(name,)] = simulator_parser() if name == "simulate" else sub
        for subname, subsub in subparsers(sub).items():
            paths[(name, subname)] = subsub
    return paths


def option_strings(p: argparse.ArgumentParser) -> set[str]:
    return {o for action in p._actions for o in action.option_strings}


def test_commands_are_offered_at_the_first_word():
    assert set(offered(["ravenctl", ""])) == set(subparsers(parser()))
    assert offered(["ravenctl", "st"]) == ["status"]
    assert set(offered(["ravenctl", "-"])) == option_strings(parser())


@pytest.mark.parametrize("path", sorted(command_paths()), ids=" ".join)
def test_each_command_offers_its_subcommands_and_options(path):
    p = command_paths()[path]
    subcommands = subparsers(p)
    if subcommands:
        assert set(offered(["ravenctl", *path, ""])) == set(subcommands)
    assert set(offered(["ravenctl", *path, "-"])) == option_strings(p)
    if "--config" in option_strings(p):
        # After an option's value, the options again (the value is not taken for a command).
        assert set(offered(["ravenctl", *path, "--config", "x", "-"])) == option_strings(p)


@pytest.mark.parametrize("path", sorted(command_paths()), ids=" ".join)
def test_options_with_fixed_values_offer_those_values(path):
    p = command_paths()[path]
    for action in p._actions:
        if action.option_strings and action.choices:
            option = action.option_strings[-1]
            assert set(offered(["ravenctl", *path, option, ""])) == set(action.choices), option
        if not action.option_strings and action.choices and action.dest == "event":
            assert set(offered(["ravenctl", *path, ""])) == set(action.choices)


def test_kind_offers_every_kind():
    from ravend.protocol.model import Kind

    assert set(offered(["ravenctl", "export", "--kind", ""])) == {k.value for k in Kind}
    assert offered(["ravenctl", "export", "--kind", "sum"]) == [
        "summation_delivered", "summation_received"]


def test_config_completes_file_names(tmp_path, monkeypatch):
    (tmp_path / "ravend.conf").write_text("")
    monkeypatch.chdir(tmp_path)
    assert offered(["ravenctl", "status", "--config", "rav"]) == ["ravend.conf"]
    assert offered(["ravenctl", "status", "-c", "rav"]) == ["ravend.conf"]


def test_options_before_the_command_then_the_command(tmp_path, monkeypatch):
    (tmp_path / "ravend.conf").write_text("")
    monkeypatch.chdir(tmp_path)
    assert offered(["ravenctl", "--con"]) == ["--config"]
    assert offered(["ravenctl", "--config", "rav"]) == ["ravend.conf"]
    assert offered(["ravenctl", "--config", "ravend.conf", "st"]) == ["status"]
    assert "--json" in offered(["ravenctl", "-c", "ravend.conf", "status", "-"])
