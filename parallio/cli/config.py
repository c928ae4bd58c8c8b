"""Options from a configuration file and ``PARALLIO_*`` variables.

Every option of every command can be set three ways; the command line wins
over the environment, which wins over the file, which wins over the
defaults:

* ``--config FILE`` (or ``PARALLIO_CONFIG``): a TOML file whose keys are the
  options' long names (``workers = 4``, ``access-log = "-"``, ``bind =
  ["unix:/run/app.sock"]``; dashes or underscores alike), and the command's
  argument by its name (``app``, ``protocol``, ``directory``). A table named
  after a command (``[wsgi]``) holds settings for that command only. In a
  ``pyproject.toml`` the same lives under ``[tool.parallio]``. A key no
  command knows is an error; one that only other commands know is left
  for them.
* ``PARALLIO_<OPTION>`` variables: ``PARALLIO_WORKERS=4``,
  ``PARALLIO_ACCESS_LOG=-``, ``PARALLIO_BIND="0.0.0.0:8080 unix:/run/a.sock"``
  (repeatable options: values separated by whitespace), flags as
  ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``.

Values from either go through the same checks as on the command line.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from typing import Any, Mapping, Optional, Sequence

__all__ = ["ConfigError", "parse_args"]

_TRUE = frozenset(("1", "true", "yes", "on"))
_FALSE = frozenset(("0", "false", "no", "off", ""))
# Dests that are argparse's own, not options.
_NOT_OPTIONS = frozenset(("help", "version", "command", "default_port"))


class ConfigError(Exception):
    """A configuration value that does not fit its option; the message
    names where it came from."""


def _key(name: str) -> str:
    return name.lstrip("-").replace("-", "_").lower()


class _Option:
    """One argparse action, as the file and the environment set it."""

    def __init__(self, action: argparse.Action) -> None:
        self.action = action
        self.flag = action.nargs == 0  # store_true / store_false / store_const
        self.repeated = isinstance(action, argparse._AppendAction)
        long_names = [name for name in action.option_strings if name.startswith("--")]
        self.name = long_names[0] if long_names else (action.metavar or action.dest)

    def convert(self, value: Any, where: str, by_dest: bool) -> Any:
        """``value`` (TOML's, or a variable's text) as the option's value."""
        action = self.action
        if self.flag:
            if isinstance(value, str):
                text = value.strip().lower()
                if text not in _TRUE | _FALSE:
                    raise ConfigError(f"{where}: {self.name} is a flag: use true or false, "
                                      f"not {value!r}")
                value = text in _TRUE
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: {self.name} is a flag: use true or false")
            # By dest (listing = false) the value is the setting itself; by
            # the flag's name (no-listing = true), true means "as if given".
            if by_dest:
                return value
            return action.const if value else action.default
        if self.repeated:
            items = value.split() if isinstance(value, str) else value
            if not isinstance(items, list):
                raise ConfigError(f"{where}: {self.name} takes a list of values")
            return [self._one(item, where) for item in items]
        return self._one(value, where)

    def _one(self, value: Any, where: str) -> Any:
        action = self.action
        if isinstance(value, bool) or isinstance(value, (list, dict)):
            raise ConfigError(f"{where}: {self.name} takes a value, not {value!r}")
        text = str(value)
        if action.type is not None:
            try:
                result = action.type(text)  # type: ignore[operator]
            except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
                raise ConfigError(f"{where}: {self.name}: {error}") from None
        else:
            result = text
        if action.choices is not None and result not in action.choices:
            choices = ", ".join(map(str, action.choices))
            raise ConfigError(f"{where}: {self.name}: {text!r} is not one of {choices}")
        return result


def _options(parsers: Sequence[argparse.ArgumentParser]) -> dict[str, tuple[_Option, bool]]:
    """key -> (option, whether the key is its dest rather than its name)."""
    found: dict[str, tuple[_Option, bool]] = {}
    for parser in parsers:
        for action in parser._actions:
            if action.dest in _NOT_OPTIONS or isinstance(action, argparse._SubParsersAction):
                continue
            option = _Option(action)
            for name in action.option_strings:
                if name.startswith("--"):
                    found[_key(name)] = (option, False)
            found.setdefault(_key(action.dest), (option, True))
    return found


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as error:
        raise ConfigError(f"--config {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"--config {path}: not valid TOML: {error}") from None
    if os.path.basename(path) == "pyproject.toml":
        table = data.get("tool", {}).get("parallio")
        if not isinstance(table, dict):
            raise ConfigError(f"--config {path}: there is no [tool.parallio] table")
        return table
    return data


def _given_on_command_line(parsers: Sequence[argparse.ArgumentParser],
                           top: argparse.ArgumentParser,
                           argv: Optional[Sequence[str]]) -> set[str]:
    """The dests the command line set: parsed again with every default
    suppressed, only those are left (argv parsed once already, so this
    neither fails nor prints)."""
    for parser in parsers:
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction) and action.dest != "help":
                action.default = argparse.SUPPRESS
        parser._defaults.clear()
    return set(vars(top.parse_args(argv)))


def parse_args(top: argparse.ArgumentParser, commands: Mapping[str, argparse.ArgumentParser],
               argv: Optional[Sequence[str]] = None,
               environ: Mapping[str, str] = os.environ) -> argparse.Namespace:
    """Parse ``argv`` with ``top``, then fill what it left at defaults from
    the configuration file and the environment (see the module docstring).
    The parsers' defaults are spent afterwards: build them anew to parse
    again."""
    argv = list(argv) if argv is not None else None
    args = top.parse_args(argv)
    command = commands[args.command]
    parsers = [top, command]
    options = _options(parsers)
    known_anywhere = set(options) | set(_options(list(commands.values())))
    path = args.config or environ.get("PARALLIO_CONFIG")
    settings: dict[str, Any] = {}  # dest -> value, later layers winning
    if path:
        table = _read_file(path)
        where = f"{path}" + (" [tool.parallio]" if os.path.basename(path) == "pyproject.toml"
                             else "")
        for key, value in table.items():
            if isinstance(value, dict) and key in commands:
                continue
            if _key(key) not in known_anywhere:
                raise ConfigError(f"{where}: unknown option {key!r}")
            if _key(key) in options:
                option, by_dest = options[_key(key)]
                settings[option.action.dest] = option.convert(value, where, by_dest)
        specific = table.get(args.command)
        if isinstance(specific, dict):
            where = f"{where} [{args.command}]"
            for key, value in specific.items():
                if _key(key) not in options:
                    raise ConfigError(f"{where}: {args.command} has no option {key!r}")
                option, by_dest = options[_key(key)]
                settings[option.action.dest] = option.convert(value, where, by_dest)
    for name, value in environ.items():
        if not name.startswith("PARALLIO_") or name == "PARALLIO_CONFIG":
            continue
        # Other PARALLIO_ variables (the test suite's, say) are not options.
        entry = options.get(_key(name[len("PARALLIO_"):]))
        if entry is not None:
            option, by_dest = entry
            settings[option.action.dest] = option.convert(value, name, by_dest)
    if settings:
        given = _given_on_command_line(parsers, top, argv)
        for dest, value in settings.items():
            if dest not in given:
                setattr(args, dest, value)
    return args
