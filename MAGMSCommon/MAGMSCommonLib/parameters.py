"""A module's settings on its parameter node (saved with the scene), typed, written only when changed.

The modules keep their settings as plain parameters of the module's ``vtkMRMLScriptedModuleNode``
instead of binding widgets through ``parameterNodeWrapper``: the wrapper pushes every value back
into every connected widget whenever the node is modified (also by a node-reference write),
rewrites a path field as ``"."`` when it is empty, resets spin-box ranges that carry no range
annotation, and on Slicer 5.8 cannot disconnect (Base/Python/slicer/parameterNodeWrapper/wrapper.py).
Here the controller decides what the view shows, and tests run on ``slicer-core`` without Qt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["Parameters"]


class Parameters:
    """Typed get/set of named parameters of a ``vtkMRMLScriptedModuleNode``.

    Args:
        node: the module's parameter node.
        defaults: name -> default value; its type is the parameter's type (bool, int, float, str).
    """

    def __init__(self, node, defaults: Mapping[str, Any]) -> None:
        self.node = node
        self.defaults = dict(defaults)

    def get(self, name: str) -> Any:
        default = self.defaults[name]
        text = self.node.GetParameter(name)
        if not text:
            return default
        if isinstance(default, bool):
            return text == "true"
        try:
            return type(default)(text) if default is not None else text
        except ValueError:
            return default

    def set(self, name: str, value: Any) -> bool:
        """Store ``value``; returns False (and does not modify the node) when it is unchanged."""
        if name not in self.defaults:
            raise KeyError(f"unknown parameter {name!r}")
        text = ("true" if value else "false") if isinstance(value, bool) else "" if value is None else str(value)
        if self.node.GetParameter(name) == text:
            return False
        self.node.SetParameter(name, text)
        return True

    def values(self) -> dict[str, Any]:
        return {name: self.get(name) for name in self.defaults}
