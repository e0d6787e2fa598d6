"""A record's field, with how it is offered to people: default, help, range, choices.

The records of the core (:mod:`magms.config`) and each command's options (:mod:`magms.options`)
declare their fields with :func:`option`, so that the CLI, a config file, the Slicer modules and the
bundle share one default, one help line and one range per setting. Nothing here knows of argparse.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from magms.errors import ConfigError

__all__ = ["Option", "option", "same_as", "spec_of", "check_option_ranges"]


@dataclasses.dataclass(frozen=True)
class Option:
    """How one field is offered to people.

    Args:
        help: one line for ``--help``, tooltips and the README.
        flag: the CLI flag (default: ``--field-name``; ``--no-field-name`` for a bool that is on).
        choices: the allowed values, or a function giving them (a registry's keys).
        minimum, maximum: the range of a number (inclusive, unless ``exclusive_maximum``).
        metavar: the placeholder in ``--help``.
        separator: a tuple given as one comma-separated word (``--slots flair,t1c``).
        repeat: a tuple given by repeating the flag (``--input a=1 --input b=2``).
        cli: False for options only a config file or a program sets.
        required: the option has no default; the user gives it (flag or config file).
    """

    help: str
    flag: str | None = None
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_maximum: bool = False
    metavar: str | None = None
    separator: str | None = None
    repeat: bool = False
    cli: bool = True
    required: bool = False

    def allowed(self) -> tuple[str, ...] | None:
        if self.choices is None:
            return None
        return tuple(self.choices() if callable(self.choices) else self.choices)


def option(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:  # noqa: A002 - argparse's word
    """A dataclass field with its :class:`Option`.

    Without ``default`` the option is required. Its field still defaults to None, so that records
    can inherit fields in any order (``dataclass(kw_only=True)`` needs Python 3.10; Slicer 5.8 has
    3.9); :meth:`Options.from_dict` refuses a record that lacks it.
    """
    required = default is dataclasses.MISSING
    spec = Option(help=help, required=required, **kwargs)
    return dataclasses.field(default=None if required else default, metadata={"option": spec})


def same_as(record: type, name: str, **changes: Any) -> Any:
    """A field with the default, help and range of ``record``'s field ``name`` (``changes`` override)."""
    source = next(f for f in dataclasses.fields(record) if f.name == name)
    spec = dataclasses.replace(source.metadata["option"], **changes)
    return dataclasses.field(default=source.default, metadata={"option": spec})


def spec_of(field: dataclasses.Field) -> Option | None:
    return field.metadata.get("option")


def check_option_ranges(record: Any) -> None:
    """Check every field of ``record`` against its :class:`Option` range and choices.

    Raises:
        ConfigError: the first value out of range or not among the choices, naming the option.
    """
    for field in dataclasses.fields(record):
        spec, value = spec_of(field), getattr(record, field.name)
        if spec is None or value is None:
            continue
        allowed = spec.allowed()
        values = value if isinstance(value, tuple) else (value,)
        if allowed is not None and any(v not in allowed for v in values):
            raise ConfigError(f"{field.name} must be one of {', '.join(allowed)}, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if spec.minimum is not None and value < spec.minimum:
            raise ConfigError(f"{field.name} must be >= {spec.minimum:g}, got {value}")
        if spec.maximum is not None and (value >= spec.maximum if spec.exclusive_maximum else value > spec.maximum):
            relation = "<" if spec.exclusive_maximum else "<="
            raise ConfigError(f"{field.name} must be {relation} {spec.maximum:g}, got {value}")
