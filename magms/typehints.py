"""Field types of the option and config dataclasses, resolved the same way on Python 3.9 to 3.12.

The modules use postponed annotations (``from __future__ import annotations``), so a field's type is
a string such as ``"Path | None"``. ``typing.get_type_hints`` evaluates ``X | None`` only from
Python 3.10 on, but these records are also read inside Slicer 5.8, whose Python is 3.9: each arm
of a union is evaluated on its own and the arms are joined with ``typing.Union``.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import typing
from typing import Any

__all__ = ["field_types", "split_optional", "tuple_item"]


def _arms(annotation: str) -> list[str]:
    """``"tuple[int, ...] | None"`` -> ``["tuple[int, ...]", "None"]`` (bars inside brackets stay)."""
    arms, depth, start = [], 0, 0
    for i, char in enumerate(annotation):
        depth += char in "[("
        depth -= char in "])"
        if char == "|" and depth == 0:
            arms.append(annotation[start:i].strip())
            start = i + 1
    return arms + [annotation[start:].strip()]


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Field name -> its type, for a dataclass whose annotations may be postponed strings."""
    namespace = {**vars(typing), **vars(sys.modules[cls.__module__])}
    out = {}
    for field in dataclasses.fields(cls):
        annotation = field.type
        if isinstance(annotation, str):
            arms = [eval(arm, namespace) for arm in _arms(annotation)]  # noqa: S307 - our own source text
            annotation = arms[0] if len(arms) == 1 else typing.Union[tuple(arms)]
        out[field.name] = annotation
    return out


def split_optional(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; any other type -> ``(type, False)``; several other arms -> ``(Any, True)``."""
    if typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint):
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        return (arms[0] if len(arms) == 1 else Any), True
    return hint, False


def tuple_item(hint: Any) -> Any:
    """The item type of ``tuple[X, ...]`` or ``tuple[X, X, X]``; ``Any`` for mixed items."""
    args = typing.get_args(hint)
    same = (len(args) == 2 and args[1] is Ellipsis) or len(set(args)) == 1
    return args[0] if same else Any
