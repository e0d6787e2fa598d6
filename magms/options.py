"""Each command's options, defined once: default, help, range and choices.

A command's options are a frozen dataclass (:class:`Options`) whose fields carry an
:class:`~magms.fields.Option` in their metadata. From that one definition:

* the CLI flags are generated (:func:`add_arguments`), with the defaults in their help;
* a run is described by a JSON file (``magms train --config run.json``), flags given on the
  command line winning over the file (:func:`from_command_line`), and a resumed training run
  starting from the options of its last sitting (:meth:`Options.recorded`);
* the Slicer modules take their defaults and spin-box ranges, and write the JSON file they pass to
  the child process (:meth:`Options.save`).

Fields shared with a record of the core (``epochs`` of :class:`~magms.config.TrainConfig`) are
declared with :func:`~magms.fields.same_as`, which copies that record's default, help and range.

Nothing here imports torch: the Slicer modules read it before torch may be installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from magms.errors import ConfigError
from magms.fields import Option, check_option_ranges, spec_of
from magms.files import atomic_write_text
from magms.typehints import field_types, split_optional, tuple_item

__all__ = ["Options", "add_arguments", "from_command_line", "read_config"]

_O = TypeVar("_O", bound="Options")


def _item_type(hint: Any) -> Any:
    base, _ = split_optional(hint)
    return tuple_item(base) if typing.get_origin(base) is tuple else base


def _coerce(field: dataclasses.Field, hint: Any, value: Any, where: str) -> Any:
    """A JSON or CLI value as the field's type (lists -> tuples, strings -> paths)."""
    base, optional = split_optional(hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: '{field.name}' must not be null")
    if typing.get_origin(base) is tuple:
        spec = spec_of(field)
        if isinstance(value, str) and spec is not None and spec.separator:
            value = [v.strip() for v in value.split(spec.separator) if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_scalar(field.name, _item_type(hint), v, where) for v in value)
    return _scalar(field.name, base, value, where)


def _scalar(name: str, kind: Any, value: Any, where: str) -> Any:
    if kind is Path:
        if not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"{where}: '{name}' must be a path, got {value!r}")
        return Path(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: '{name}' must be true or false, got {value!r}")
        return value
    if kind in (int, float):
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: '{name}' must be a number, got {value!r}") from None
        if isinstance(value, bool) or (kind is int and number != float(value)):
            raise ConfigError(f"{where}: '{name}' must be a whole number, got {value!r}")
        return number
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: '{name}' must be a string, got {value!r}")
        return value
    return value


class Options:
    """Base of the command option records: JSON in and out, and range checks.

    Subclasses are frozen dataclasses; ``command`` names the CLI command.
    """

    command: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_option_ranges(self)

    @classmethod
    def from_dict(cls: type[_O], data: Mapping[str, Any], where: str = "options") -> _O:
        """Build from JSON values; unknown keys and wrong types are named.

        Raises:
            ConfigError: an unknown key, a missing required option, a value of the wrong type or
                out of range.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"{where}: unknown option(s) {', '.join(map(repr, unknown))} (known: {', '.join(fields)})")
        hints = field_types(cls)
        values = {name: _coerce(fields[name], hints[name], value, where) for name, value in data.items()}
        missing = [n for n, f in fields.items() if values.get(n) is None and _is_required(f)]
        if missing:
            flags = ", ".join(_flag(fields[n]) for n in missing)
            raise ConfigError(f"{where}: {flags} {'is' if len(missing) == 1 else 'are'} required")
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from err

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (paths as strings, tuples as lists)."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, tuple):  # ExportOptions.series is a tuple of paths
                value = [str(v) if isinstance(v, Path) else v for v in value]
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out

    @classmethod
    def load(cls: type[_O], path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None) -> _O:
        """Read a JSON config file (``--config``); ``overrides`` win over its values."""
        return cls.from_dict({**read_config(path), **(overrides or {})}, where=str(path))

    @classmethod
    def recorded(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """Options recorded earlier that ``values`` (config file and flags) build on; none by default.

        ``magms train --resume`` overrides it: the run continues with the options of its last sitting.
        """
        return {}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON file that ``magms <command> --config FILE`` reads."""
        file = Path(path)
        atomic_write_text(file, json.dumps(self.to_dict(), indent=1) + "\n")
        return file

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every option that has a default, with it (the Slicer modules start from these)."""
        return {f.name: f.default for f in dataclasses.fields(cls) if not _is_required(f)}  # type: ignore[arg-type]

    @classmethod
    def spec(cls, name: str) -> Option:
        """The :class:`Option` of field ``name``."""
        return next(spec_of(f) for f in dataclasses.fields(cls) if f.name == name)  # type: ignore[arg-type]


def _is_required(field: dataclasses.Field) -> bool:
    spec = spec_of(field)
    return spec is not None and spec.required


def _flag(field: dataclasses.Field) -> str:
    spec = spec_of(field)
    if spec is not None and spec.flag:
        return spec.flag
    if field.default is True:
        return f"--no-{field.name.replace('_', '-')}"
    return f"--{field.name.replace('_', '-')}"


def _help(field: dataclasses.Field, spec: Option) -> str:
    text = spec.help
    allowed = spec.allowed()
    if allowed is not None and "{choices}" in text:
        text = text.replace("{choices}", ", ".join(allowed))
    if spec.required:
        return text + " (required, here or in --config)"
    if field.default in (None, (), "", False, True) or "(default" in text:
        return text
    shown = ",".join(map(str, field.default)) if isinstance(field.default, tuple) else field.default
    return f"{text} (default: {shown})"


def add_arguments(parser: argparse.ArgumentParser, cls: type[Options]) -> None:
    """Add one flag per option of ``cls``, plus ``--config FILE``.

    Defaults are not given to argparse: a flag left out is absent from the namespace, so that a
    config file's value stands unless the command line overrides it.
    """
    parser.add_argument("--config", type=Path, metavar="FILE", default=None,
                        help=f"a JSON file of {cls.command} options (the names below with _ for -); flags given here win")
    hints = field_types(cls)
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        spec = spec_of(field)
        if spec is None or not spec.cli:
            continue
        kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS, "help": _help(field, spec)}
        base, _ = split_optional(hints[field.name])
        if base is bool:
            kwargs["action"] = "store_false" if field.default is True else "store_true"
        else:
            tuple_nargs = typing.get_origin(base) is tuple and not spec.separator
            kwargs["metavar"] = spec.metavar
            if spec.repeat:
                kwargs["action"] = "append"
            elif tuple_nargs:
                kwargs["nargs"] = "+"
                kwargs["type"] = _item_type(hints[field.name])
            else:
                kwargs["type"] = str if spec.separator else _item_type(hints[field.name])
            allowed = spec.allowed()
            if allowed is not None and not callable(spec.choices):
                kwargs["choices"] = allowed
        parser.add_argument(_flag(field), **kwargs)


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON object of options in ``path``, unchecked (:meth:`Options.from_dict` checks).

    Raises:
        ConfigError: the file cannot be read, is not JSON, or holds something other than an object (named).
    """
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{file}: cannot be read as a JSON config ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: a JSON object of options is expected")
    return data


def from_command_line(cls: type[_O], args: argparse.Namespace) -> _O:
    """The options of a parsed command line: what :meth:`Options.recorded` gives, overridden by the
    ``--config`` values, overridden by the flags given."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    given = {k: v for k, v in vars(args).items() if k in names}
    config = getattr(args, "config", None)
    from_file = read_config(config) if config is not None else {}
    values = {**from_file, **given}
    return cls.from_dict({**cls.recorded(values), **values}, where=str(config) if config is not None else f"magms {cls.command}")
