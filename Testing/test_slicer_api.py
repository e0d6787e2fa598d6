"""Gate: the Slicer-side code calls only what every supported 3D Slicer release has.

The Slicer-side code (every ``.py`` under MAGMSCommon/, MAGMSSegmenter/, MAGMSTraining/) runs inside
Slicer 5.8 and 5.10, while the other tests run it on the PyPI ``slicer-core`` of a newer Slicer: a
method 5.8 lacks (``vtkSegment::SetTerminology`` came in v5.10.0) passes them and fails for 5.8 users.
This test reads the API lists that ``Testing/slicer_api/extract_api.py`` extracted from each
release's sources (Slicer, the VTK, CTK and vtkAddon it builds with, Qt 5.15 through PyQt5) and
committed beside it; it needs no Slicer, no mirror and no network.

Each Slicer-side file is parsed with ``ast``. Rules, checked for every release in ``RELEASES``:

* ``slicer.X``, ``vtk.vtkX``, ``qt.QX``, ``ctk.ctkX``: X is a class of that library (``slicer``: of
  Slicer or vtkAddon) or, for ``slicer``, one of its Python names (``app``, ``mrmlScene``,
  ``util`` ...); ``slicer.util.x`` (also ``from slicer.util import x``; likewise slicer.i18n,
  slicer.ScriptedLoadableModule, slicer.parameterNodeWrapper) is a name of that Python module.
* Known receivers: the class of ``slicer.vtkMRMLSegmentationNode()``, ``vtk.vtkMatrix4x4()``,
  ``qt.QTimer()`` (a local name or ``self.x`` bound only to such calls), of annotated parameters
  (``node: slicer.vtkMRMLScalarVolumeNode``), of ``slicer.app`` / ``slicer.mrmlScene`` /
  ``slicer.dicomDatabase``, of ``self.ui.<name>`` (the ``.ui`` file that ``loadUI`` reads), and
  classes themselves (``slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY``). A call must name a method
  of that class or of a base; for a QObject class, what PythonQt exposes: slots, signals,
  ``Q_INVOKABLE`` and decorator methods (its other public C++ methods are not callable from Python),
  every method of Qt's own classes (PyQt5 5.15 stands for PythonQt's Qt wrappers), and never a
  Qt property, because PythonQt looks properties up first (``label.text`` is the text;
  ``label.text()`` calls a string). Other attributes read or written on a known QObject receiver,
  and upper-case ones read on a VTK receiver, must be a member too (writing a name that is no Qt
  property does nothing in PythonQt);
  ``w.connect("signal(...)", ...)`` must name a signal or slot of the class.
* Unknown receivers: a name that starts with an upper-case letter (VTK/MRML C++ style; the project's
  Python uses camelCase and snake_case) must be a method of some class of the release; and a name
  that a class of Slicer, vtkAddon or CTK has in the newest release but lacked in an older one, where
  no class of those libraries declared it yet (vtkMRMLColorTableNode::RemoveColor: in v5.8.1 only a
  VTK class has a RemoveColor), is flagged with the classes that gained it. Names that start with a
  lower-case letter are not checked on unknown receivers: they are mostly Python builtins
  (``list.append``, ``dict.get``) and the project's own methods, and the type is not known.
* Any finding is waived when the enclosing function also contains ``hasattr(<x>, "Name")`` (the way
  the code branches by release), or the call's line has a ``# slicer-api: <reason>`` comment.

Receivers bound to other modules (``subprocess.Popen``, ``sitk.WriteImage``, the project's own
modules, ``importlib.import_module(...)``), ``self``/``cls`` and ``super()`` are not checked.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import gzip
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
API_DIR = Path(__file__).resolve().parent / "slicer_api"
SLICER_SIDE = ("MAGMSCommon", "MAGMSSegmenter", "MAGMSTraining")
#: The supported releases, oldest first (files ``slicer_api/slicer-<release>.api.json.gz``).
RELEASES = ("v5.8.1", "v5.10.0")
ALLOW_COMMENT = re.compile(r"#\s*slicer-api:\s*\S")

#: What PythonQt adds to every QObject wrapper beyond the class's own members (PythonQt's instance
#: wrapper and its QObject decorators: connect/disconnect take a signal signature string).
PYTHONQT_QOBJECT = frozenset({"connect", "disconnect", "className", "help", "delete", "inherits", "children", "parent",
                              "setParent", "findChild", "findChildren", "property", "setProperty",
                              "dynamicPropertyNames", "tr", "metaObject", "blockSignals", "signalsBlocked"})
#: What VTK's Python wrapping adds to every vtkObjectBase.
VTK_PYTHON = frozenset({"GetAddressAsString", "override"})
#: Runtime attributes of the ``slicer`` module with a known class (set by the application / DICOM module).
SLICER_GLOBALS = {"app": "qSlicerApplication", "mrmlScene": "vtkMRMLScene", "dicomDatabase": "ctkDICOMDatabase"}
#: The Python modules of Slicer whose names are checked (keys of the API files' ``python``).
SLICER_PY_MODULES = ("slicer.util", "slicer.i18n", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper")
#: Which library each Python namespace holds, and the prefix its class names start with.
NAMESPACES = {"slicer": (("Slicer", "vtkAddon"), ""), "vtk": (("VTK",), "vtk"), "qt": (("Qt",), "Q"), "ctk": (("CTK",), "ctk")}
#: Unknown receivers: only gains by classes of these libraries are flagged (VTK's and Qt's own gains
#: would make every common name suspect; their calls are checked where the receiver is known).
GAINED_FROM = ("Slicer", "vtkAddon", "CTK")

#: Findings on the current code that are reviewed and accepted: (path, name) -> reason. Keep it short;
#: prefer ``hasattr`` feature checks or a ``# slicer-api:`` comment at the call.
ALLOWED: dict[tuple[str, str], str] = {}


# --- the API lists --------------------------------------------------------------------------------


class Api:
    """One release's lists, with member sets resolved through the base classes."""

    def __init__(self, data: dict) -> None:
        self.release = data["release"]
        self.classes: dict[str, dict] = data["classes"]
        self.python: dict[str, set[str]] = {k: set(v) for k, v in data["python"].items()}
        self.sources = data["sources"]
        self.has_qt = any(r.get("from") == "Qt" for r in self.classes.values())  # False: extracted with --no-pyqt
        self.all_methods = set()
        for record in self.classes.values():
            self.all_methods.update(record["methods"])

    # cached per instance on purpose: load_apis() makes one Api per release, kept for the whole session
    @functools.cache  # noqa: B019
    def ancestors(self, name: str) -> tuple[str, ...]:
        """``name`` and its bases, nearest first, those present in the lists only."""
        out, todo = [], [name]
        while todo:
            cls = todo.pop(0)
            if cls in out or cls not in self.classes:
                continue
            out.append(cls)
            todo.extend(self.classes[cls]["bases"])
        return tuple(out)

    @functools.cache  # noqa: B019 (as ancestors: a few instances that live for the session)
    def members(self, name: str, key: str) -> frozenset:
        return frozenset(m for cls in self.ancestors(name) for m in self.classes[cls].get(key, ()))

    def is_qobject(self, name: str) -> bool:
        return "QObject" in self.ancestors(name)

    def callable_names(self, name: str) -> frozenset:
        extra = PYTHONQT_QOBJECT if self.is_qobject(name) else VTK_PYTHON if "vtkObjectBase" in self.ancestors(name) else frozenset()
        return self.members(name, "methods") | extra

    def attribute_names(self, name: str) -> frozenset:
        return self.callable_names(name) | self.members(name, "properties") | self.members(name, "constants")

    def where(self, cls: str, member: str) -> str:
        """Which class of ``cls``'s chain declares ``member`` (for messages)."""
        for c in self.ancestors(cls):
            record = self.classes[c]
            if any(member in record.get(k, ()) for k in ("methods", "properties", "constants", "hidden")):
                return c
        return cls

    def in_namespace(self, namespace: str, name: str) -> bool:
        sources, _ = NAMESPACES[namespace]
        return name in self.classes and self.classes[name].get("from") in sources


@functools.cache
def load_apis() -> tuple[Api, ...]:
    apis = []
    for release in RELEASES:
        path = API_DIR / f"slicer-{release}.api.json.gz"
        with gzip.open(path, "rt", encoding="utf-8") as f:
            apis.append(Api(json.load(f)))
    return tuple(apis)


@functools.cache
def declared(release: str, sources: tuple[str, ...]) -> frozenset:
    """Method names that classes of ``sources`` declare themselves in ``release``."""
    api = next(a for a in load_apis() if a.release == release)
    return frozenset(m for record in api.classes.values() if record.get("from") in sources for m in record["methods"])


@functools.cache
def gained(name: str) -> dict[str, tuple[str, ...]]:
    """Release -> the classes of GAINED_FROM that have ``name`` (declared by themselves or by a base of
    GAINED_FROM) in the newest release but not in that one, where no class of GAINED_FROM declared
    ``name`` yet (else a call with an unknown receiver most likely means that older method)."""
    apis = load_apis()
    newest = apis[-1]
    out = {}
    for api in apis[:-1]:
        if name in declared(api.release, GAINED_FROM):
            continue
        classes = tuple(sorted(
            cls for cls, record in newest.classes.items()
            if record.get("from") in GAINED_FROM and cls in api.classes and name not in api.callable_names(cls)
            and any(name in newest.classes[c]["methods"] for c in newest.ancestors(cls)
                    if newest.classes[c].get("from") in GAINED_FROM)))
        if classes:
            out[api.release] = classes
    return out


def having(api: Api, name: str, limit: int = 6) -> str:
    """The classes of ``api`` that declare ``name``, for messages."""
    classes = sorted(c for c, record in api.classes.items() if name in record["methods"])
    return ", ".join(classes[:limit]) + (f" and {len(classes) - limit} more" if len(classes) > limit else "") or "none"


# --- the checker ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Finding:
    path: str
    line: int
    name: str
    release: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.name}: {self.release}: {self.message}"


# inferred types: ("instance", Class), ("class", Class), ("module", "slicer.util"), ("foreign", module)
INSTANCE, CLASS, MODULE, FOREIGN = "instance", "class", "module", "foreign"
API_MODULES = ("slicer", "vtk", "qt", "ctk", *SLICER_PY_MODULES)


def ui_widgets(path: Path) -> dict[str, str]:
    """objectName -> class of the widgets, layouts and actions of a Qt Designer file."""
    out = {}
    for element in ET.parse(path).getroot().iter():
        name = element.get("name")
        if element.tag in ("widget", "layout") and name and element.get("class"):
            out[name] = element.get("class")
        elif element.tag == "action" and name:
            out[name] = "QAction"
    return out


def ui_classes(path: Path) -> set[str]:
    return {e.get("class") for e in ET.parse(path).getroot().iter() if e.tag in ("widget", "layout") and e.get("class")}


class _Scope:
    """Names bound in one function (or module) body, and what they are known to be."""

    def __init__(self, node: ast.AST, parent: _Scope | None) -> None:
        self.node, self.parent = node, parent
        self.types: dict[str, tuple | None] = {}
        self.guards: set[str] = set()  # names of hasattr(x, "Name") checks in this function


class FileChecker:
    def __init__(self, path: Path, apis: tuple[Api, ...], display: str | None = None) -> None:
        self.path = path
        self.display = display or str(path)
        self.text = path.read_text(encoding="utf-8")
        self.lines = self.text.splitlines()
        self.tree = ast.parse(self.text, str(path))
        self.apis = apis
        self.findings: list[Finding] = []
        self.imports: dict[str, str] = {}  # local name -> module path (or module.name for from-imports)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self.imports[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                for alias in node.names:
                    self.imports[alias.asname or alias.name] = f"{module}.{alias.name}"
        self.ui = self._ui_file()
        self.class_attrs: dict[ast.ClassDef, dict[str, tuple | None]] = {}
        self.scopes: dict[ast.AST, _Scope] = {}
        self.parents: dict[ast.AST, ast.AST] = {}
        for parent in ast.walk(self.tree):
            for child in ast.iter_child_nodes(parent):
                self.parents[child] = parent

    # -- helpers

    def _ui_file(self) -> dict[str, str] | None:
        """The widgets of the .ui file this module loads (``slicer.util.loadUI(self.resourcePath("UI/X.ui"))``)."""
        for node in ast.walk(self.tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "resourcePath"
                    and node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).endswith(".ui")):
                ui = self.path.parent / "Resources" / node.args[0].value
                if ui.is_file():
                    return ui_widgets(ui)
        return None

    def report(self, node: ast.AST, name: str, release: str, message: str, scope: _Scope | None) -> None:
        first, last = node.lineno, getattr(node, "end_lineno", node.lineno) or node.lineno
        if any(ALLOW_COMMENT.search(self.lines[i - 1]) for i in range(first, last + 1) if i - 1 < len(self.lines)):
            return
        s = scope
        while s is not None and not isinstance(s.node, ast.Module):
            if name in s.guards:
                return
            s = s.parent
        if (self.display, name) in ALLOWED:
            return
        line = node.end_lineno or node.lineno  # the line of the name itself, for chains spread over lines
        self.findings.append(Finding(self.display, line, name, release, message))

    def module_of(self, expr: ast.AST) -> str | None:
        """The API module an expression names (``slicer``, ``slicer.util``, ``vtk`` ...), if any."""
        if isinstance(expr, ast.Name):
            module = self.imports.get(expr.id)
            return module if module in API_MODULES else None
        if isinstance(expr, ast.Attribute):
            base = self.module_of(expr.value)
            if base == "slicer" and f"slicer.{expr.attr}" in SLICER_PY_MODULES:
                return f"slicer.{expr.attr}"
        return None

    def foreign(self, expr: ast.AST) -> bool:
        """A name bound by an import of a non-API module (stdlib, numpy, the project's own modules)."""
        return isinstance(expr, ast.Name) and expr.id in self.imports and self.imports[expr.id] not in API_MODULES \
            and not self.imports[expr.id].startswith(tuple(m + "." for m in API_MODULES))

    def annotation_type(self, ann: ast.AST | None) -> tuple | None:
        if ann is None:
            return None
        if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
            try:
                ann = ast.parse(ann.value, mode="eval").body
            except SyntaxError:
                return None
        if isinstance(ann, ast.BinOp) and isinstance(ann.op, ast.BitOr):  # X | None
            parts = [p for p in (ann.left, ann.right) if not (isinstance(p, ast.Constant) and p.value is None)]
            return self.annotation_type(parts[0]) if len(parts) == 1 else None
        if isinstance(ann, ast.Subscript) and isinstance(ann.value, (ast.Name, ast.Attribute)) and \
                (getattr(ann.value, "id", None) or getattr(ann.value, "attr", None)) == "Optional":
            return self.annotation_type(ann.slice)
        if isinstance(ann, ast.Attribute):
            module = self.module_of(ann.value)
            if module in NAMESPACES and self.is_class(module, ann.attr):
                return (INSTANCE, ann.attr)
        return None

    def is_class(self, namespace: str, name: str) -> bool:
        return any(api.in_namespace(namespace, name) for api in self.apis)

    # -- type inference

    def lookup(self, name: str, scope: _Scope | None) -> tuple | None:
        s = scope
        while s is not None:
            if name in s.types:
                return s.types[name]
            s = s.parent
        if name in self.imports:
            module = self.imports[name]
            if module in API_MODULES:
                return (MODULE, module)
            return (FOREIGN, module)
        return None

    def infer(self, expr: ast.AST, scope: _Scope | None, cls: ast.ClassDef | None) -> tuple | None:
        if isinstance(expr, ast.Name):
            return self.lookup(expr.id, scope)
        if isinstance(expr, ast.Call):
            func = expr.func
            if isinstance(func, ast.Attribute):
                module = self.module_of(func.value)
                if module in NAMESPACES and self.is_class(module, func.attr):
                    return (INSTANCE, func.attr)
                if isinstance(func.value, ast.Name) and self.imports.get(func.value.id) == "importlib" and func.attr == "import_module":
                    return (FOREIGN, "importlib.import_module()")
            if isinstance(func, ast.Name) and func.id == "getattr" and len(expr.args) >= 2 and \
                    isinstance(expr.args[1], ast.Constant) and self.module_of(expr.args[0]) == "slicer":
                if expr.args[1].value in SLICER_GLOBALS:
                    return (INSTANCE, SLICER_GLOBALS[expr.args[1].value])
            return None
        if isinstance(expr, ast.Attribute):
            module = self.module_of(expr.value)
            if module == "slicer" and expr.attr in SLICER_GLOBALS:
                return (INSTANCE, SLICER_GLOBALS[expr.attr])
            if module in NAMESPACES and self.is_class(module, expr.attr):
                return (CLASS, expr.attr)
            if self.module_of(expr) is not None:
                return (MODULE, self.module_of(expr))
            if isinstance(expr.value, ast.Name) and expr.value.id == "self" and cls is not None:
                return self.class_attrs.get(cls, {}).get(expr.attr)
            if self.ui is not None and isinstance(expr.value, ast.Attribute) and expr.value.attr == "ui" and \
                    isinstance(expr.value.value, ast.Name) and expr.value.value.id == "self" and expr.attr in self.ui:
                return (INSTANCE, self.ui[expr.attr])
            return None
        if isinstance(expr, ast.IfExp):
            body, other = self.infer(expr.body, scope, cls), self.infer(expr.orelse, scope, cls)
            if isinstance(expr.orelse, ast.Constant) and expr.orelse.value is None:
                return body
            return body if body == other else None
        return None

    def _bind(self, types: dict, target: ast.AST, value: tuple | None, value_node: ast.AST | None, scope, cls) -> None:
        """Record an assignment: a name bound to two different things (or to an unknown) is unknown."""
        if isinstance(target, ast.Name):
            if target.id in types and types[target.id] != value:
                types[target.id] = None
            else:
                types[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            values = value_node.elts if isinstance(value_node, (ast.Tuple, ast.List)) and len(value_node.elts) == len(target.elts) else None
            for i, t in enumerate(target.elts):
                v = self.infer(values[i], scope, cls) if values else None
                self._bind(types, t, v, values[i] if values else None, scope, cls)
        elif isinstance(target, ast.Starred):
            self._bind(types, target.value, None, None, scope, cls)

    def _own_nodes(self, node: ast.AST):
        """The nodes of a function/module body, not descending into nested functions, lambdas and classes."""
        todo = list(ast.iter_child_nodes(node))
        while todo:
            n = todo.pop()
            yield n
            if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                todo.extend(ast.iter_child_nodes(n))

    def build_scope(self, node: ast.AST, parent: _Scope | None, cls: ast.ClassDef | None) -> _Scope:
        scope = _Scope(node, parent)
        params: dict[str, tuple | None] = {}
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            for arg in a.posonlyargs + a.args + a.kwonlyargs + ([a.vararg] if a.vararg else []) + ([a.kwarg] if a.kwarg else []):
                params[arg.arg] = self.annotation_type(arg.annotation)
        scope.types = dict(params)
        for _ in range(2):  # twice: a name may be bound from another one bound later in the text
            assigned: dict[str, tuple | None] = {}
            for n in self._own_nodes(node):
                if isinstance(n, ast.Assign):
                    v = self.infer(n.value, scope, cls)
                    for t in n.targets:
                        self._bind(assigned, t, v, n.value, scope, cls)
                elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
                    v = self.annotation_type(n.annotation) or (self.infer(n.value, scope, cls) if n.value else None)
                    self._bind(assigned, n.target, v, None, scope, cls)
                elif isinstance(n, (ast.AugAssign, ast.NamedExpr, ast.For, ast.AsyncFor, ast.comprehension)):
                    self._bind(assigned, n.target, None, None, scope, cls)
                elif isinstance(n, ast.withitem) and n.optional_vars is not None:
                    self._bind(assigned, n.optional_vars, None, None, scope, cls)
                elif isinstance(n, ast.ExceptHandler) and n.name:
                    assigned[n.name] = None
                elif isinstance(n, (ast.Import, ast.ImportFrom)):
                    for alias in n.names:
                        local = alias.asname or alias.name.split(".")[0]
                        assigned[local] = self.lookup(local, None)
                elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    assigned[n.name] = None
                elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "hasattr" and \
                        len(n.args) == 2 and isinstance(n.args[1], ast.Constant) and isinstance(n.args[1].value, str):
                    scope.guards.add(n.args[1].value)
            types = dict(params)
            for name, value in assigned.items():
                types[name] = value if name not in params or params[name] == value else None
            scope.types = types
        return scope

    def build_class_attrs(self, cls: ast.ClassDef, module_scope: _Scope) -> None:
        """``self.x``: its annotation (``self.x: slicer.vtkMRMLTableNode | None = None``), else the one known
        thing it is bound to in the class's methods (``None`` aside)."""
        values: dict[str, list] = {}
        annotated: dict[str, tuple] = {}
        for item in cls.body:
            if not isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            scope = self.build_scope(item, module_scope, cls)
            for n in self._own_nodes(item):
                targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AnnAssign) else []
                for t in targets:
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                        if isinstance(n, ast.AnnAssign) and self.annotation_type(n.annotation):
                            annotated[t.attr] = self.annotation_type(n.annotation)
                        elif isinstance(n.value, ast.Constant) and n.value.value is None:
                            values.setdefault(t.attr, [])
                        elif n.value is not None:
                            values.setdefault(t.attr, []).append(self.infer(n.value, scope, None))
                    elif isinstance(t, (ast.Tuple, ast.List)):
                        for e in t.elts:
                            if isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name) and e.value.id == "self":
                                values.setdefault(e.attr, []).append(None)
        attrs = {k: v[0] if v and all(x == v[0] for x in v) else None for k, v in values.items()}
        self.class_attrs[cls] = {**attrs, **annotated}

    # -- the checks

    def run(self) -> list[Finding]:
        module_scope = self.build_scope(self.tree, None, None)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ClassDef):
                self.build_class_attrs(node, module_scope)
        self._check_imports()
        self._visit(self.tree, module_scope, None)
        return self.findings

    def _visit(self, node: ast.AST, scope: _Scope, cls: ast.ClassDef | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                self._visit(child, scope, child)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inner = self.build_scope(child, scope, cls)
                self._visit(child, inner, cls)
            else:
                if isinstance(child, ast.Call):
                    self._check_call(child, scope, cls)
                elif isinstance(child, ast.Attribute):
                    parent = self.parents.get(child)
                    if not (isinstance(parent, ast.Call) and parent.func is child):
                        self._check_attribute(child, scope, cls)
                self._visit(child, scope, cls)

    def _check_imports(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in ("slicer", *SLICER_PY_MODULES):
                for alias in node.names:
                    for api in self.apis:
                        if node.module == "slicer":
                            ok = alias.name in api.python["slicer"] or f"slicer.{alias.name}" in api.python \
                                or api.in_namespace("slicer", alias.name)
                        else:
                            ok = alias.name in api.python.get(node.module, ())
                        if not ok:
                            self.findings.append(Finding(self.display, node.lineno, alias.name, api.release,
                                                         f"{node.module} has no {alias.name!r}"))

    def _check_module_attribute(self, node: ast.Attribute, module: str, scope, call: bool) -> None:
        name = node.attr
        for api in self.apis:
            if module in NAMESPACES:
                sources, prefix = NAMESPACES[module]
                if module == "slicer":
                    ok = name in api.python["slicer"] or f"slicer.{name}" in api.python or api.in_namespace("slicer", name) \
                        or name.startswith("_")
                    what = f"slicer.{name} is neither a class of Slicer/vtkAddon nor a name of the slicer module"
                elif not name.startswith(prefix) or not prefix:
                    continue  # vtk.VTK_FLOAT, qt's module-level functions: not listed
                elif module == "qt" and not api.has_qt:
                    continue
                else:
                    ok = api.in_namespace(module, name)
                    what = f"{module}.{name}: no such class in {'/'.join(sources)}"
            else:
                ok = name in api.python.get(module, ())
                what = f"{module} has no {name!r}"
            if not ok:
                self.report(node, name, api.release, what, scope)

    def _check_member(self, node: ast.Attribute, kind: str, cls_name: str, scope, call: bool, call_node=None) -> None:
        name = node.attr
        for api in self.apis:
            if cls_name not in api.classes:
                if not (cls_name.startswith("Q") and not api.has_qt):
                    self.report(node, name, api.release, f"class {cls_name} does not exist in this release", scope)
                continue
            if kind == CLASS:  # static methods, enumerators, nested enums
                ok = name in api.attribute_names(cls_name)
                if not ok:
                    self.report(node, name, api.release, f"{cls_name} has no member {name!r} (nor its bases)", scope)
                continue
            qobject = api.is_qobject(cls_name)
            props = api.members(cls_name, "properties")
            if call:
                if qobject and name in props:
                    self.report(node, name, api.release, f"{name!r} is a Qt property of {api.where(cls_name, name)}: "
                                f"PythonQt returns its value, so calling it fails; use .{name} without a call", scope)
                elif name not in api.callable_names(cls_name):
                    hidden = name in api.members(cls_name, "hidden")
                    why = (f"{api.where(cls_name, name)}::{name} is a public C++ method but no slot, signal or Q_INVOKABLE: "
                           "PythonQt does not expose it") if hidden else f"{cls_name} has no method {name!r} (nor its bases)"
                    self.report(node, name, api.release, why, scope)
                elif name == "connect" and qobject and call_node is not None and call_node.args and \
                        isinstance(call_node.args[0], ast.Constant) and isinstance(call_node.args[0].value, str):
                    signal = call_node.args[0].value.split("(")[0].strip()
                    if signal not in api.callable_names(cls_name):
                        self.report(node, name, api.release,
                                    f"{cls_name} has no signal {signal!r} for connect({call_node.args[0].value!r})", scope)
            else:
                if name not in api.attribute_names(cls_name) or (qobject and name in api.members(cls_name, "hidden")
                                                                 and name not in props):
                    self.report(node, name, api.release, f"{cls_name} has no attribute {name!r} (no property, method or "
                                f"enumerator of it or its bases)", scope)

    def _check_call(self, node: ast.Call, scope: _Scope, cls) -> None:
        func = node.func
        if not isinstance(func, ast.Attribute):
            return
        receiver = func.value
        module = self.module_of(receiver)
        if module is not None:
            self._check_module_attribute(func, module, scope, call=True)
            return
        if isinstance(receiver, ast.Name) and receiver.id in ("self", "cls"):
            return
        if isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Name) and receiver.func.id == "super":
            return
        if self.foreign(receiver):
            return
        if (isinstance(receiver, ast.Attribute) and receiver.attr == "ui" and isinstance(receiver.value, ast.Name)
                and receiver.value.id == "self" and self.ui is not None and func.attr not in self.ui):
            return  # self.ui.<name> as an attribute: checked in _check_attribute
        kind = self.infer(receiver, scope, cls)
        if kind is not None and kind[0] in (INSTANCE, CLASS):
            self._check_member(func, kind[0], kind[1], scope, call=True, call_node=node)
            return
        if kind is not None:
            return  # a module of another library, or a project module
        name = func.attr
        if not name[:1].isupper():
            return
        for api in self.apis:
            if name not in api.all_methods:
                self.report(func, name, api.release, f"no class of this release has a method {name!r} (receiver of "
                            f"unknown class; in {self.apis[-1].release}: {having(self.apis[-1], name)})", scope)
                continue
            classes = gained(name).get(api.release)
            if classes:
                self.report(func, name, api.release,
                            f"{', '.join(classes)} lack{'s' if len(classes) == 1 else ''} {name!r} here but "
                            f"{'has' if len(classes) == 1 else 'have'} it in {self.apis[-1].release}; the receiver's "
                            f"class is not known: guard with hasattr(<obj>, {name!r}) or mark the line "
                            f"'# slicer-api: <reason>'", scope)

    def _check_attribute(self, node: ast.Attribute, scope: _Scope, cls) -> None:
        module = self.module_of(node.value)
        if module is not None:
            if self.module_of(node) is None:
                self._check_module_attribute(node, module, scope, call=False)
            return
        value = node.value
        if (self.ui is not None and isinstance(value, ast.Attribute) and value.attr == "ui"
                and isinstance(value.value, ast.Name) and value.value.id == "self"):
            if node.attr not in self.ui:
                for api in self.apis:
                    self.report(node, node.attr, api.release, "no widget of that name in the module's .ui file", scope)
            return
        kind = self.infer(value, scope, cls)
        if kind is None or kind[0] not in (INSTANCE, CLASS):
            return
        if kind[0] == INSTANCE and not any(api.is_qobject(kind[1]) for api in self.apis) and not node.attr[:1].isupper():
            return  # a VTK object's lower-case attributes: Python-side additions, not checked
        if isinstance(node.ctx, ast.Store) and kind[0] == INSTANCE and not any(api.is_qobject(kind[1]) for api in self.apis):
            return
        self._check_member(node, kind[0], kind[1], scope, call=False)


def slicer_side_files() -> list[Path]:
    return sorted(p for folder in SLICER_SIDE for p in (REPO / folder).rglob("*.py"))


def check_file(path: Path, display: str | None = None) -> list[Finding]:
    """The findings for one file against every release in RELEASES."""
    return FileChecker(path, load_apis(), display).run()


def check_repository() -> list[Finding]:
    findings = []
    for path in slicer_side_files():
        findings += check_file(path, str(path.relative_to(REPO)))
    return sorted(set(findings), key=lambda f: (f.path, f.line, f.name, f.release))


# --- tests ----------------------------------------------------------------------------------------


def test_api_lists_are_there_and_know_what_we_know():
    """The committed lists hold what the releases' sources say (vtkSegment.h at both tags)."""
    old, new = load_apis()
    assert (old.release, new.release) == ("v5.8.1", "v5.10.0")
    # Libs/vtkSegmentationCore/vtkSegment.h: SetTerminology/GetTerminology appear in v5.10.0 only
    assert {"SetTerminology", "GetTerminology", "HasTerminology"} <= set(new.classes["vtkSegment"]["methods"])
    assert not {"SetTerminology", "GetTerminology", "HasTerminology"} & old.callable_names("vtkSegment")
    # ... while the static GetTerminologyEntryTagName is on vtkSegment in both
    for api in (old, new):
        assert "GetTerminologyEntryTagName" in api.classes["vtkSegment"]["methods"]
        assert "GetSegmentation" in api.callable_names("vtkMRMLSegmentationNode")
        assert {"GetName", "AddObserver", "SafeDownCast"} <= api.callable_names("vtkMRMLSegmentationNode")  # inherited
        assert "setCurrentNodeID" in api.callable_names("qMRMLNodeComboBox")  # a slot
        assert "nodeTypes" in api.members("qMRMLNodeComboBox", "properties")
        assert "currentPathChanged" in api.callable_names("ctkPathLineEdit")  # a signal
        assert "testingEnabled" in api.callable_names("qSlicerApplication")  # a PythonQt decorator's static_
        assert "itemData" in api.callable_names("QComboBox") and "text" in api.members("QLabel", "properties")
        assert "EXTENT_REFERENCE_GEOMETRY" in api.members("vtkSegmentation", "constants")
        assert {"loadUI", "childWidgetVariables", "VTKObservationMixin", "pip_install"} <= api.python["slicer.util"]
        assert {"app", "mrmlScene", "modules"} <= api.python["slicer"]
        assert api.sources["Slicer"].split()[1] == api.release


def test_ui_classes_exist_in_every_release():
    """A .ui file with a widget class a release lacks does not load there."""
    problems = []
    for ui in sorted(p for folder in SLICER_SIDE for p in (REPO / folder).rglob("*.ui")):
        for name in sorted(ui_classes(ui)):
            for api in load_apis():
                if name not in api.classes and (api.has_qt or not name.startswith("Q")):
                    problems.append(f"{ui.relative_to(REPO)}: {name}: {api.release} has no such class")
    assert not problems, "\n".join(problems)


def test_slicer_side_calls_exist_in_every_supported_release():
    findings = check_repository()
    assert not findings, (
        f"{len(findings)} call(s) that a supported Slicer release does not have (file:line: name: release: why):\n"
        + "\n".join(map(str, findings)))


def _planted(tmp_path: Path, code: str, name: str = "planted.py") -> list[Finding]:
    path = tmp_path / name
    path.write_text(code, encoding="utf-8")
    return check_file(path)


def test_gate_finds_a_call_the_oldest_release_lacks(tmp_path):
    findings = _planted(tmp_path, 'def f(segment):\n    segment.SetTerminology("x")\n')
    assert [(f.name, f.line, f.release) for f in findings] == [("SetTerminology", 2, "v5.8.1")], findings
    text = str(findings[0])
    assert text.startswith(f"{tmp_path / 'planted.py'}:2: SetTerminology: v5.8.1: ") and "vtkSegment" in text, text


def test_gate_waives_a_feature_checked_or_marked_call(tmp_path):
    assert _planted(tmp_path, 'def f(segment):\n    if hasattr(segment, "SetTerminology"):\n'
                              '        segment.SetTerminology("x")\n') == []
    assert _planted(tmp_path, 'def f(segment):\n    segment.SetTerminology("x")  # slicer-api: 5.10 only, f is\n') == []


def test_gate_flags_a_name_a_slicer_class_gained_even_where_other_classes_have_it(tmp_path):
    """vtkMRMLColorTableNode::RemoveColor is new in v5.10.0 (Libs/MRML/Core/vtkMRMLColorTableNode.h);
    in v5.8.1 only a VTK class has a RemoveColor, so an unknown receiver may well be a color table."""
    findings = _planted(tmp_path, "def f(colorNode):\n    colorNode.RemoveColor(3)\n")
    assert [(f.name, f.line, f.release) for f in findings] == [("RemoveColor", 2, "v5.8.1")], findings
    assert "vtkMRMLColorTableNode" in findings[0].message, findings


def test_gate_checks_known_receivers(tmp_path):
    code = ("import qt\n"
            "import slicer\n"
            "import vtk\n"
            "def f():\n"
            "    segment = slicer.vtkSegment()\n"
            "    segment.GetNameX()\n"
            "    node: slicer.vtkMRMLSegmentationNode = slicer.vtkMRMLSegmentationNode()\n"
            "    node.GetSegmentation().GetNumberOfSegments()\n"
            "    slicer.vtkSegmentation.NO_SUCH_EXTENT\n"
            "    timer = qt.QTimer()\n"
            "    timer.setIntervalX(3)\n"
            "    vtk.vtkNoSuchFilter()\n"
            "    slicer.app.noSuchSlot()\n")
    findings = _planted(tmp_path, code)
    assert sorted({(f.name, f.line) for f in findings}) == [
        ("GetNameX", 6), ("NO_SUCH_EXTENT", 9), ("noSuchSlot", 13), ("setIntervalX", 11), ("vtkNoSuchFilter", 12)], findings
    assert {f.release for f in findings} == set(RELEASES)


def test_gate_finds_a_missing_qt_method_on_a_ui_widget(tmp_path):
    (tmp_path / "Resources" / "UI").mkdir(parents=True)
    shutil.copy(REPO / "MAGMSSegmenter" / "Resources" / "UI" / "MAGMSSegmenter.ui", tmp_path / "Resources" / "UI" / "Planted.ui")
    code = ("import slicer\n"
            "class PlantedWidget:\n"
            "    def setup(self):\n"
            '        uiWidget = slicer.util.loadUI(self.resourcePath("UI/Planted.ui"))\n'
            "        self.ui = slicer.util.childWidgetVariables(uiWidget)\n"
            '        self.ui.bundlePathLineEdit.setCurrentPath("x")\n'
            '        self.ui.bundlePathLineEdit.setNoSuchPath("x")\n'
            "        self.ui.statusLabel.text()\n"
            '        self.ui.bundlePathLineEdit.connect("noSuchSignal(QString)", print)\n')
    findings = _planted(tmp_path, code)
    got = sorted({(f.name, f.line) for f in findings})
    assert got == [("connect", 9), ("setNoSuchPath", 7), ("text", 8)], findings
    assert {f.release for f in findings} == set(RELEASES)
    assert any("ctkPathLineEdit has no method 'setNoSuchPath'" in str(f) for f in findings), findings
    assert any("Qt property" in str(f) for f in findings if f.name == "text"), findings


def test_gate_finds_a_missing_slicer_util_function(tmp_path):
    findings = _planted(tmp_path, "import slicer\nfrom slicer.util import noSuchHelper\n\ndef f():\n"
                                  "    slicer.util.noSuchFunction()\n    slicer.noSuchClass()\n")
    got = sorted((f.name, f.line, f.release) for f in findings)
    assert got == sorted((n, line, r) for n, line in (("noSuchHelper", 2), ("noSuchFunction", 5), ("noSuchClass", 6))
                         for r in RELEASES), findings
    assert "slicer.util has no 'noSuchFunction'" in str(next(f for f in findings if f.name == "noSuchFunction"))


if __name__ == "__main__":  # print every finding on the current code
    for finding in check_repository():
        print(finding)
    pytest.main([__file__, "-q"])
