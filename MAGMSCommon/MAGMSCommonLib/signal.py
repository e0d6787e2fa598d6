"""A plain-Python signal: Qt signals on Python objects are unreliable in PythonQt, and the logic has no Qt."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Signal"]


class Signal:
    """``connect`` callables, ``emit`` calls them in order with the emitted arguments."""

    def __init__(self, *types: type) -> None:
        self.types = types
        self._slots: list[Callable[..., Any]] = []

    def connect(self, slot: Callable[..., Any]) -> None:
        self._slots.append(slot)

    def disconnect(self, slot: Callable[..., Any]) -> None:
        self._slots.remove(slot)

    def emit(self, *args: Any) -> None:
        for slot in list(self._slots):
            slot(*args)
