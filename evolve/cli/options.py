"""The `evolve run` options, generated from the settings dataclasses (evolve.config).

A setting is declared once, with its default and help text, in `evolve.config`; this module
turns every field marked for the CLI into a click option whose value defaults to None, so
the command knows exactly which flags were given (they override the config file, and a
resume refuses any that would change the run).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import click

from evolve.config import SECTIONS, RunConfig


@dataclasses.dataclass(frozen=True)
class SettingOption:
    dotted: str  # "iterations" or "scorer.timeout_s"
    flag: str  # "--timeout"
    dest: str  # the click parameter name


def setting_options() -> list[SettingOption]:
    found = []
    for section, cls in [("", RunConfig), *SECTIONS.items()]:
        for f in dataclasses.fields(cls):
            if f.name in SECTIONS or not f.metadata.get("cli", False):
                continue
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            dotted = f"{section}.{f.name}" if section else f.name
            found.append(SettingOption(dotted, flag, dotted.replace(".", "__")))
    return found


def click_type(hint: Any, choices: tuple[str, ...] | None) -> tuple[Any, bool]:
    """(click type, multiple) for a setting's type hint."""
    args = typing.get_args(hint)
    if type(None) in args:
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is tuple:
        return click.STRING, True
    if choices:
        return click.Choice(choices), False
    return {int: click.INT, float: click.FLOAT, str: click.STRING, bool: click.BOOL}.get(hint, click.STRING), False


def add_setting_options(command):
    """Decorate a click command with one option per CLI setting."""
    for option in reversed(setting_options()):
        section, _, name = option.dotted.rpartition(".")
        cls = SECTIONS[section] if section else RunConfig
        spec = {f.name: f for f in dataclasses.fields(cls)}[name]
        hint = typing.get_type_hints(cls)[name]
        kind, multiple = click_type(hint, spec.metadata.get("choices"))
        default = spec.default
        shown = "" if default in (None, (), "") else f" (default: {default})"
        if typing.get_type_hints(cls)[name] is bool:
            command = click.option(f"{option.flag}/--no-{option.flag[2:]}", option.dest, default=None, help=spec.metadata["help"] + shown)(command)
        else:
            command = click.option(option.flag, option.dest, type=kind, multiple=multiple, default=None,
                                   help=spec.metadata["help"] + shown)(command)
    return command


def given_settings(params: dict[str, Any]) -> dict[str, Any]:
    """{dotted key: value} of the setting flags actually given on the command line."""
    given = {}
    for option in setting_options():
        value = params.get(option.dest)
        if value is None or value == ():
            continue
        given[option.dotted] = tuple(value) if isinstance(value, (list, tuple)) else value
    return given


def flag_of(dotted: str) -> str:
    return next(o.flag for o in setting_options() if o.dotted == dotted)
