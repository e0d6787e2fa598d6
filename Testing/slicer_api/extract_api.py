#!/usr/bin/env python3
"""Extract the API name lists of the supported 3D Slicer releases, for ``Testing/test_slicer_api.py``.

The Slicer-side code (MAGMSCommon/, MAGMSSegmenter/, MAGMSTraining/) runs inside 3D Slicer 5.8 and
5.10, while the tests run on the PyPI ``slicer-core`` of a newer Slicer. This script reads, for each
release, the names its Python can call: from the release's own sources and those of the VTK and CTK
it builds with, read from local git mirrors (``git ls-tree`` / ``git cat-file``, no work tree needed),
and Qt 5.15 from PyQt5's introspection. It writes one file per release beside itself,
``slicer-<tag>.api.json.gz``, which the test reads; the test never needs the mirrors.

Usage (from the repository root; Python 3.9+, standard library only)::

    python Testing/slicer_api/extract_api.py                    # every release, default mirrors
    python Testing/slicer_api/extract_api.py --release v5.8.1   # one release
    python Testing/slicer_api/extract_api.py --qt-python /path/to/python --qt-path /tmp/pyqt5

Qt class lists come from PyQt5 5.15 run in a child process (``--qt-python``, default this Python;
``--qt-path`` is prepended to its ``PYTHONPATH``), e.g. after
``pip install --target /tmp/pyqt5 PyQt5==5.15.11``. PyQt5 is needed only to regenerate, never by the
project or the test. Without PyQt5 the script stops, unless ``--no-pyqt`` is given: then Qt's own
classes are left out (the Q_PROPERTYs, slots, signals and Q_INVOKABLEs of CTK's and Slicer's Qt classes
still come from their headers, but not what those inherit from Qt), and the test skips receivers of
Qt's classes.

Mirrors (bare git directories; override with the options of the same names):

* ``--slicer-git``  github.com/Slicer/Slicer: the release tags.
* ``--vtk-git``     github.com/Kitware/VTK (upstream). Slicer builds VTK from its fork
  github.com/Slicer/VTK at a branch named ``slicer-v<version>-<upstream short hash>-<n>`` that adds a
  few patches on top of that upstream commit; the fork's commits are read from ``--vtk-fork-git``
  when that mirror has them, else the upstream commit named in the branch name is read.
* ``--ctk-git``     github.com/commontk/CTK: the commit ``SuperBuild/External_CTK.cmake`` pins.
* ``--vtkaddon-git`` github.com/Slicer/vtkAddon: the commit ``SuperBuild.cmake`` pins
  (``Slicer_Remote_Add(vtkAddon ... GIT_TAG``); its classes are in Python's ``slicer`` namespace.

What is read where (the pins are parsed from the release's SuperBuild files; ``FALLBACK_PINS``
below is used only where parsing fails, and the output's ``sources`` says which was used):

* Slicer C++ headers under Libs/, Base/ and Modules/Loadable/ (not Testing/ folders, not
  Base/CLI/), Slicer's Python package Base/Python/slicer/.
* VTK headers of the modules the release builds: the modules of VTK's default groups (StandAlone,
  Rendering), of the Qt group and those the release enables in External_VTK.cmake, with their
  dependencies; modules marked EXCLUDE_WRAP (not in Python) and those that are off (MPI, ...) are left
  out, as are ThirdParty/, Examples/, Testing/ folders and Remote modules (not in the VTK tree).
* CTK headers of the libraries Slicer enables: Libs/Core, Widgets, DICOM, Visualization/VTK,
  Scripting/Python, ImageProcessing/ITK (not PluginFramework, XNAT, CommandLineModules).
* vtkAddon headers of its top folder.

Per C++ class: where it comes from (``from``: Slicer, vtkAddon, VTK, CTK or Qt), the header that
declares it (``file``), its base classes and the public members Python can reach:

* declarations at class level (``Name(...)`` of a public section), the methods that macros declare
  (every function-like macro whose name has a lower-case letter, e.g. vtkSetMacro, vtkBooleanMacro,
  vtkTypeMacro, vtkMRMLCopyContentMacro, is expanded from its ``#define`` in the same sources, so
  ``vtkBooleanMacro(X, int)`` gives ``XOn``/``XOff``), code in ``#ifndef __VTK_WRAP__`` left out;
* Qt: ``Q_PROPERTY`` names (``properties``) with their READ/WRITE methods, slots, signals,
  ``Q_INVOKABLE`` methods, and the methods PythonQt decorators add (``*PythonQtDecorators.h``:
  ``foo(qSlicerCoreApplication* app, ...)`` and ``static_qSlicerCoreApplication_foo(...)`` add
  ``foo`` to qSlicerCoreApplication). For a class with ``Q_OBJECT`` PythonQt exposes only those:
  its other public methods are listed apart, as ``hidden``;
* enumerators declared in the class (``constants``).

Qt classes (QtCore, QtGui, QtWidgets, QtPrintSupport, QtNetwork, QtMultimedia,
QtMultimediaWidgets, the modules Slicer's PythonQt wraps; QtUiTools has no PyQt5 module) come from
PyQt5: own methods and signals, enumerators, meta-object properties, bases.

Python: module-level names (and the methods of module-level classes, as ``module.Class``) of
slicer.util, slicer.i18n, slicer.ScriptedLoadableModule and slicer.parameterNodeWrapper; ``slicer``
holds its submodules and the attributes the application sets (``slicer.app`` ...).

The output is sorted JSON, gzip'ed with no timestamp: regenerating gives the same bytes.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RELEASES = ("v5.8.1", "v5.10.0")
DEFAULT_MIRRORS = {
    "slicer_git": "/work/.mirror/Slicer+Slicer/repo",
    "vtk_git": "/work/.mirror/Kitware+VTK/repo",
    "vtk_fork_git": "/work/.mirror/Slicer+VTK/repo",
    "ctk_git": "/work/.mirror/commontk+CTK/repo",
    "vtkaddon_git": "/work/.mirror/Slicer+vtkAddon/repo",
}
#: Used only when the SuperBuild files cannot be parsed: (VTK fork branch, upstream VTK commit, CTK commit,
#: vtkAddon commit).
FALLBACK_PINS = {
    "v5.8.1": ("slicer-v9.2.20230607-1ff325c54-2", "1ff325c54", "82cae5781621845486bad2697aed095f04cfbe76",
               "b5aa0615a6486b6bdceeb13bd59c2fb9f89cce42"),
    "v5.10.0": ("slicer-v9.5.2-2025-09-16-7c0494a68", "7c0494a68", "dd4caeae7e979cf441e44ee85d3b0780120d113d",
                "b1fa5034077fc04b10457fe25004c65af6091a37"),
}
QT_MODULES = ("QtCore", "QtGui", "QtWidgets", "QtPrintSupport", "QtNetwork", "QtMultimedia", "QtMultimediaWidgets")
CTK_LIBS = ("Libs/Core/", "Libs/Widgets/", "Libs/DICOM/", "Libs/Visualization/VTK/", "Libs/Scripting/Python/",
            "Libs/ImageProcessing/ITK/")
SLICER_PYTHON = {  # module name -> files (relative to Base/Python/)
    "slicer.util": ("slicer/util.py",),
    "slicer.i18n": ("slicer/i18n.py",),
    "slicer.ScriptedLoadableModule": ("slicer/ScriptedLoadableModule.py",),
    "slicer.parameterNodeWrapper": ("slicer/parameterNodeWrapper/",),
}


# --- git ------------------------------------------------------------------------------------------


class Git:
    """Read-only access to a bare git directory."""

    def __init__(self, gitdir: str) -> None:
        self.gitdir = gitdir

    def run(self, *args: str, input: bytes | None = None) -> bytes:
        return subprocess.run(["git", "--git-dir", self.gitdir, *args], input=input, capture_output=True, check=True).stdout

    def commit(self, rev: str) -> str | None:
        """The full hash of ``rev``'s commit, None when this mirror lacks it."""
        try:
            return self.run("rev-parse", "--verify", "--quiet", rev + "^{commit}").decode().strip() or None
        except subprocess.CalledProcessError:
            return None

    def show(self, rev: str, path: str) -> str:
        return self.run("show", f"{rev}:{path}").decode("utf-8", "replace")

    def files(self, rev: str) -> dict[str, str]:
        """path -> blob hash of every file at ``rev``."""
        out = {}
        for line in self.run("ls-tree", "-r", "--full-tree", rev).decode("utf-8", "replace").splitlines():
            meta, _, path = line.partition("\t")
            parts = meta.split()
            if len(parts) == 3 and parts[1] == "blob":
                out[path] = parts[2]
        return out

    def blobs(self, hashes: list[str]) -> dict[str, str]:
        """blob hash -> text, read in one ``git cat-file --batch``."""
        unique = sorted(set(hashes))
        data = self.run("cat-file", "--batch", input="".join(h + "\n" for h in unique).encode())
        out, pos = {}, 0
        for h in unique:
            end = data.index(b"\n", pos)
            header = data[pos:end].split()
            size = int(header[2])
            out[h] = data[end + 1:end + 1 + size].decode("utf-8", "replace")
            pos = end + 1 + size + 1
        return out


# --- pins -----------------------------------------------------------------------------------------


def vtk_pin(slicer: Git, tag: str) -> tuple[str, str]:
    """(fork commit hash, fork branch name) of the VTK that ``tag`` builds by default."""
    cmake = slicer.show(tag, "SuperBuild/External_VTK.cmake")
    top = slicer.show(tag, "CMakeLists.txt")
    major = re.search(r'set\(_default_vtk_major_version\s+"(\d+)"\)', top)
    minor = re.search(r'set\(_default_vtk_minor_version\s+"(\d+)"\)', top)
    wanted = {major.group(1) if major else "9"}
    if major and minor:
        wanted.add(f"{major.group(1)}.{minor.group(1)}")
    condition = None
    for line in cmake.splitlines():
        cond = re.search(r'if\(.*STREQUAL\s+"([\d.]+)"\)', line)
        if cond:
            condition = cond.group(1)
        pin = re.search(r'set\(_git_tag\s+"([0-9a-f]{40})"\)\s*#\s*(\S+)', line)
        if pin and condition in wanted:
            return pin.group(1), pin.group(2)
    raise ValueError(f"{tag}: no VTK pin found in SuperBuild/External_VTK.cmake")


def ctk_pin(slicer: Git, tag: str) -> str:
    cmake = slicer.show(tag, "SuperBuild/External_CTK.cmake")
    pin = re.search(r'Slicer_\$\{proj\}_GIT_TAG\s+"([0-9a-f]{40})"', cmake)
    if not pin:
        raise ValueError(f"{tag}: no CTK pin found in SuperBuild/External_CTK.cmake")
    return pin.group(1)


def vtkaddon_pin(slicer: Git, tag: str) -> str:
    cmake = slicer.show(tag, "SuperBuild.cmake")
    pin = re.search(r"Slicer_Remote_Add\(vtkAddon\b[^)]*?GIT_TAG\s+([0-9a-f]{40})", cmake, re.S)
    if not pin:
        raise ValueError(f"{tag}: no vtkAddon pin found in SuperBuild.cmake")
    return pin.group(1)


def upstream_of(branch: str) -> str:
    """``slicer-v9.5.2-2025-09-16-7c0494a68`` -> ``7c0494a68``: the upstream commit a fork branch starts from."""
    found = re.findall(r"-([0-9a-f]{7,40})(?=-|$)", branch)
    if not found:
        raise ValueError(f"no upstream hash in VTK branch name {branch!r}")
    return found[-1]


# --- C/C++ headers --------------------------------------------------------------------------------

_COMMENT_OR_STRING = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
_WRAP_DEFINED = {"__VTK_WRAP__", "__VTK_WRAP_PYTHON__", "__WRAP__"}
_KEYWORDS = set("""
alignas alignof and asm auto bool break case catch char class const const_cast constexpr continue decltype default
delete do double dynamic_cast else enum explicit export extern false float for friend goto if inline int long mutable
namespace new noexcept not nullptr operator or private protected public register reinterpret_cast return short signed
sizeof static static_assert static_cast struct switch template this throw true try typedef typeid typename union
unsigned using virtual void volatile while override final emit slots signals Q_SLOTS Q_SIGNALS defined
""".split())


def _strip(text: str) -> str:
    """Comments out, strings and characters emptied, continued lines joined."""
    text = text.replace("\\\r\n", " ").replace("\\\n", " ")

    def keep(m: re.Match) -> str:
        s = m.group(0)
        return " " if s[0] == "/" else ('""' if s[0] == '"' else "0")

    return _COMMENT_OR_STRING.sub(keep, text)


def _condition(expr: str) -> bool | None:
    """True/False for the conditions that decide what VTK's Python wrapper sees (and ``#if 0``), else None."""
    expr = expr.strip()
    if expr in ("0", "1"):
        return expr == "1"
    unknown = []

    def defined(m: re.Match) -> str:
        name = m.group(1)
        if name in _WRAP_DEFINED:
            return " True "
        if "WRAP" in name and name.startswith("__"):
            return " False "
        unknown.append(name)
        return " None "

    py = re.sub(r"\bdefined\s*\(?\s*(\w+)\s*\)?", defined, expr)
    if unknown or re.search(r"\b(?!True\b|False\b|None\b)[A-Za-z_]\w*", py):
        return None
    py = py.replace("&&", " and ").replace("||", " or ")
    py = re.sub(r"!(?!=)", " not ", py)
    try:
        return bool(eval(py, {"__builtins__": {}}, {}))  # only True/False/and/or/not/parentheses are left
    except Exception:  # noqa: BLE001 - anything else is not ours to decide
        return None


def preprocess(text: str) -> tuple[str, dict[str, tuple[list[str], str]]]:
    """The header's code outside the branches VTK's Python wrapper does not see, with every
    preprocessor line removed, and the function-like macros it defines: name -> (params, body)."""
    lines = _strip(text).split("\n")
    out, macros = [], {}
    stack: list[dict] = []  # {'cur': True/False/None, 'taken': bool, 'unknown': bool}
    for line in lines:
        d = re.match(r"\s*#\s*(\w+)(.*)", line)
        if not d:
            if all(s["cur"] is not False for s in stack):
                out.append(line)
            continue
        word, rest = d.group(1), d.group(2)
        if word in ("if", "ifdef", "ifndef"):
            if word == "ifdef":
                rest = f"defined({rest.strip()})"
            elif word == "ifndef":
                rest = f"!defined({rest.strip()})"
            v = _condition(rest)
            stack.append({"cur": v, "taken": v is True, "unknown": v is None})
        elif word == "elif" and stack:
            top = stack[-1]
            v = False if top["taken"] else _condition(rest)
            top["cur"], top["taken"], top["unknown"] = v, top["taken"] or v is True, top["unknown"] or v is None
        elif word == "else" and stack:
            top = stack[-1]
            top["cur"] = False if top["taken"] else (None if top["unknown"] else True)
        elif word == "endif" and stack:
            stack.pop()
        elif word == "define" and all(s["cur"] is not False for s in stack):
            m = re.match(r"\s*(\w+)\(([^)]*)\)(.*)", rest)
            if m:
                macros[m.group(1)] = ([p.strip() for p in m.group(2).split(",") if p.strip()], m.group(3))
        out.append("")
    return "\n".join(out), macros


def _match_close(text: str, start: int, open_: str, close: str) -> int:
    """Index of the bracket closing the one at ``start`` (len(text) if unbalanced)."""
    depth = 0
    for i in range(start, len(text)):
        c = text[i]
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i
    return len(text)


def _split_args(text: str) -> list[str]:
    """Split at commas outside (), <>, {} and []."""
    parts, depth, cur = [], 0, []
    for c in text:
        if c in "(<{[":
            depth += 1
        elif c in ")>}]":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


_INVOCATION = re.compile(r"\b([A-Za-z_]\w*)\s*\(")


def expand(text: str, macros: dict[str, list[tuple[list[str], str]]], depth: int = 0) -> str:
    """Expand, recursively, the function-like macros whose name has a lower-case letter (vtkSetMacro,
    vtkTypeMacro, ...); ALL_CAPS macros (export, deprecation and wrapping hints) are left as they are."""
    if depth > 8:
        return text
    out, pos = [], 0
    for m in _INVOCATION.finditer(text):
        name = m.group(1)
        if m.start() < pos or name not in macros or not re.search(r"[a-z]", name):
            continue
        close = _match_close(text, m.end() - 1, "(", ")")
        args = _split_args(text[m.end():close])
        bodies = []
        for params, body in macros[name]:
            for p, a in zip(params, args):
                body = re.sub(rf"(?<!#)#(?!#)\s*\b{re.escape(p)}\b", '""', body) if "#" in body else body
                body = re.sub(rf"\b{re.escape(p)}\b", lambda _m, a=a: a, body)
            body = re.sub(r"\s*##\s*", "", body)
            bodies.append(expand(body, macros, depth + 1))
        out.append(text[pos:m.start()])
        out.append(" ; ".join(bodies) + " ; ")
        pos = close + 1
    out.append(text[pos:])
    return "".join(out)


_CLASS = re.compile(r"\b(class|struct)\b")
_CLASS_HEAD = re.compile(r"^\s*(?:\w+\s*(?:\([^()]*\))?\s+|\[\[[^\]]*\]\]\s*)*(?!final\b)(\w+)\s*(?:final\s*)?(?::(.*))?$", re.S)
_MEMBER_TOKEN = re.compile(r"""
    (?P<access>\b(?:public|protected|private)\b\s*(?P<slot>\b(?:slots|Q_SLOTS)\b\s*)?:(?!:))
  | (?P<signals>\b(?:signals|Q_SIGNALS)\b\s*:(?!:))
  | (?P<call>~?\b[A-Za-z_]\w*)\s*\(
  | (?P<open>\() | (?P<close>\)) | (?P<end>;) | (?P<eq>=)
  | (?P<invokable>\bQ_INVOKABLE\b)
""", re.X)


def _flatten(body: str, constants: set[str]) -> str:
    """The class body at its own level: nested braces (inline bodies, nested classes) replaced by ``;``;
    the enumerators of the class's enums go to ``constants``."""
    out, pos = [], 0
    while True:
        i = body.find("{", pos)
        if i < 0:
            out.append(body[pos:])
            break
        close = _match_close(body, i, "{", "}")
        before = body[pos:i]
        stmt = re.split(r"[;}]", before)[-1] if before else ""
        enum = re.search(r"\benum\b(?:\s+(?:class|struct)\b)?\s*(\w*)", stmt)
        if enum:
            if enum.group(1):  # the enum type is a class attribute in VTK's Python too
                constants.add(enum.group(1))
            for item in _split_args(body[i + 1:close]):
                m = re.match(r'[\s;"]*([A-Za-z_]\w*)', item)
                if m:
                    constants.add(m.group(1))
        out.append(before)
        out.append(" ; ")
        pos = close + 1
    text = "".join(out)
    return re.sub(r"\[\[.*?\]\]", " ", text)


def parse_members(body: str, struct: bool, class_name: str = "") -> dict:
    """Public members of a class body (already macro-expanded)."""
    constants: set[str] = set()
    flat = _flatten(body, constants)
    access = "public" if struct else "private"
    section = "normal"
    invokable = seen_eq = False
    depth = 0
    methods, visible, properties, slot_args = set(), set(), set(), []
    qobject = bool(re.search(r"\bQ_OBJECT\b", flat))
    statement = 0  # where the current declaration starts
    closed = False  # a parenthesis group has closed in it (what follows is a trailing hint macro)
    for m in _MEMBER_TOKEN.finditer(flat):
        kind = m.lastgroup if m.lastgroup != "slot" else "access"
        if depth > 0:
            if kind in ("open", "call"):
                depth += 1
            elif kind == "close":
                depth -= 1
                closed = closed or depth == 0
            continue
        if kind in ("access", "signals", "end"):
            statement, closed = m.end(), False
        if kind == "access":
            access = m.group(0).split()[0].rstrip(":").strip()
            section = "slots" if m.group("slot") else "normal"
        elif kind == "signals":
            access, section = "public", "signals"
        elif kind == "invokable":
            invokable = True
        elif kind in ("end",):
            invokable = seen_eq = False
        elif kind == "eq":
            seen_eq = True
        elif kind == "open":
            depth = 1
        elif kind == "call":
            name = m.group("call")
            close = _match_close(flat, m.end() - 1, "(", ")")
            args = flat[m.end():close]
            depth = 1
            if name == "Q_PROPERTY":
                p = re.match(r"(.*?)\b(\w+)\s+(?:READ|MEMBER)\b(.*)", args, re.S)
                if p:
                    properties.add(p.group(2))
                    for accessor in re.findall(r"\b(?:READ|WRITE)\s+(\w+)", p.group(3)):
                        methods.add(accessor)
                continue
            if not re.search(r"[a-z]", name):
                # ALL_CAPS: a hint or export macro, unless a type precedes it (vtkAlgorithm's
                # ``static vtkInformationIntegerKey* INPUT_PORT();``)
                before = re.sub(r"\b(?:[A-Z][A-Z0-9_]*|static|virtual|inline|Q_INVOKABLE)\b", " ", flat[statement:m.start()])
                if closed or not re.search(r"[A-Za-z_]\w*", before):
                    continue
            if (seen_eq or access != "public" or name.startswith("~") or name in _KEYWORDS or name == class_name
                    or name.startswith("vtk") and name.endswith("Macro")):
                continue
            methods.add(name)
            if section in ("slots", "signals") or invokable:
                visible.add(name)
                if section == "slots":
                    slot_args.append((name, args))
    return {"methods": methods, "visible": visible, "properties": properties, "constants": constants,
            "qobject": qobject, "slot_args": slot_args}


def parse_header(text: str, macros: dict[str, list[tuple[list[str], str]]]) -> list[dict]:
    """The classes a (preprocessed) header defines."""
    classes, pos = [], 0
    while True:
        m = _CLASS.search(text, pos)
        if not m:
            break
        pos = m.end()
        if (re.search(r"\b(enum|friend)\s*$", text[max(0, m.start() - 20):m.start()])
                or re.search(r"[<,]\s*$", text[max(0, m.start() - 5):m.start()])):
            continue
        brace, semi = text.find("{", m.end()), text.find(";", m.end())
        if brace < 0 or (0 <= semi < brace):
            continue
        head = _CLASS_HEAD.match(text[m.end():brace])
        if not head or head.group(1) in _KEYWORDS:
            continue
        name = head.group(1)
        bases = []
        for base in _split_args(head.group(2) or ""):
            base = re.sub(r"\b(public|protected|private|virtual)\b", " ", base)
            base = re.sub(r"<.*>", "", base, flags=re.S).strip()
            if base:
                bases.append(base.split("::")[-1].strip())
        close = _match_close(text, brace, "{", "}")
        body = expand(text[brace + 1:close], macros)
        info = parse_members(body, m.group(1) == "struct", name)
        type_macro = re.search(r"\bvtk(?:Abstract)?TypeMacro\s*\(\s*\w+\s*,\s*([\w:]+)", text[brace + 1:close])
        if not bases and type_macro:
            bases = [type_macro.group(1).split("::")[-1]]
        info.update(name=name, bases=bases)
        classes.append(info)
        pos = close + 1
    return classes


def decorator_methods(info: dict) -> dict[str, set[str]]:
    """What a PythonQt decorator class adds: class -> method names."""
    added: dict[str, set[str]] = {}
    for name, args in info["slot_args"]:
        if name.startswith(("new_", "delete_")):
            continue
        static = re.match(r"static_([A-Za-z0-9]+)_(\w+)$", name)
        if static:
            added.setdefault(static.group(1), set()).add(static.group(2))
            continue
        first = re.match(r"\s*(?:const\s+)?([A-Za-z_]\w*)\s*\*", args)
        if first:
            added.setdefault(first.group(1), set()).add(name)
    return added


def read_headers(git: Git, rev: str, paths: list[str]) -> dict[str, str]:
    files = git.files(rev)
    blobs = git.blobs([files[p] for p in paths])
    return {p: blobs[files[p]] for p in paths}


def preprocess_all(files: dict[str, str]) -> tuple[dict[str, str], dict[str, list[tuple[list[str], str]]]]:
    """Preprocessed text of each header, and the function-like macros they define (name -> definitions)."""
    code, macros = {}, {}
    for path in sorted(files):
        code[path], defined = preprocess(files[path])
        for name, definition in defined.items():
            if definition not in macros.setdefault(name, []):
                macros[name].append(definition)
    return code, macros


def collect_classes(code: dict[str, str], macros: dict[str, list[tuple[list[str], str]]]) -> dict[str, dict]:
    """Classes of the preprocessed headers ``code`` (path -> text)."""
    classes: dict[str, dict] = {}
    decorations: dict[str, set[str]] = {}
    for path in sorted(code):
        for info in parse_header(code[path], macros):
            if path.endswith("PythonQtDecorators.h") or info["name"].endswith("PythonQtDecorators"):
                for cls, names in decorator_methods(info).items():
                    decorations.setdefault(cls, set()).update(names)
                continue
            record = classes.setdefault(info["name"], {"bases": [], "methods": set(), "hidden": set(),
                                                       "properties": set(), "constants": set(), "files": set()})
            for b in info["bases"]:
                if b not in record["bases"] and b != info["name"]:
                    record["bases"].append(b)
            if info["qobject"]:
                record["methods"] |= info["visible"]
                record["hidden"] |= info["methods"] - info["visible"]
            else:
                record["methods"] |= info["methods"]
            record["properties"] |= info["properties"]
            record["constants"] |= info["constants"]
            record["files"].add(path)
    for cls, names in decorations.items():
        record = classes.setdefault(cls, {"bases": [], "methods": set(), "hidden": set(), "properties": set(),
                                          "constants": set(), "files": set()})
        record["methods"] |= names
    for record in classes.values():
        record["hidden"] -= record["methods"]
    return classes


# --- file selection -------------------------------------------------------------------------------


def slicer_headers(files: dict[str, str]) -> list[str]:
    return sorted(p for p in files if p.endswith(".h") and p.startswith(("Libs/", "Base/", "Modules/Loadable/"))
                  and "/Testing/" not in p and not p.startswith("Base/CLI/"))


def ctk_headers(files: dict[str, str]) -> list[str]:
    return sorted(p for p in files if p.endswith(".h") and p.startswith(CTK_LIBS) and "/Testing/" not in p)


def _vtk_module_file(text: str) -> dict[str, list[str]]:
    keys, cur = {}, None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            cur = line.strip()
            keys.setdefault(cur, [])
        elif cur:
            keys[cur].append(line.strip())
    return keys


def vtk_headers(git: Git, rev: str, slicer: Git, tag: str) -> tuple[list[str], list[str]]:
    """Headers of the VTK modules the release builds and wraps, and the module names."""
    files = git.files(rev)
    module_files = [p for p in files
                    if p.endswith("/vtk.module") and not p.startswith(("ThirdParty/", "Examples/", "Testing/", "Utilities/", "Remote/"))
                    and "/Testing/" not in p and "/Examples/" not in p]
    texts = git.blobs([files[p] for p in module_files])
    modules = {}
    for p in module_files:
        keys = _vtk_module_file(texts[files[p]])
        name = (keys.get("NAME") or [""])[0]
        if name:
            modules[name] = {"dir": p[: -len("vtk.module")], "keys": keys}
    cmake = slicer.show(tag, "SuperBuild/External_VTK.cmake")
    yes = {"VTK::" + n for n in re.findall(r"-DVTK_MODULE_ENABLE_VTK_(\w+):\w+=(?:YES|WANT)", cmake)}
    no = {"VTK::" + n for n in re.findall(r"-DVTK_MODULE_ENABLE_VTK_(\w+):\w+=(?:NO|DONT_WANT)", cmake)}
    groups = {"StandAlone", "Rendering"} | set(re.findall(r"-DVTK_GROUP_ENABLE_(\w+):\w+=YES", cmake))

    def possible(name: str) -> bool:
        keys = modules[name]["keys"]
        cond = " ".join(keys.get("CONDITION", []))
        return name not in no and (not cond or "VTK_WRAP_PYTHON" in cond or cond.startswith("NOT "))

    enabled = {n for n, m in modules.items() if possible(n) and (n in yes or groups & set(m["keys"].get("GROUPS", [])))}
    todo = list(enabled)
    while todo:
        keys = modules[todo.pop()]["keys"]
        for dep in keys.get("DEPENDS", []) + keys.get("PRIVATE_DEPENDS", []):
            if dep in modules and dep not in enabled and possible(dep):
                enabled.add(dep)
                todo.append(dep)
    wrapped = sorted(n for n in enabled if "EXCLUDE_WRAP" not in modules[n]["keys"])
    owner = {m["dir"]: n for n, m in modules.items()}

    def module_of(path: str) -> str | None:
        dirs = [d for d in owner if path.startswith(d)]
        return owner[max(dirs, key=len)] if dirs else None

    keep = set(wrapped)
    headers = sorted(p for p in files if p.endswith(".h") and "/Testing/" not in p and module_of(p) in keep)
    return headers, wrapped


# --- Qt through PyQt5 -----------------------------------------------------------------------------

_QT_PROBE = r"""
import importlib, json, sys
mods = sys.argv[1].split(",")
out = {}
try:
    from PyQt5 import QtCore
except ImportError as err:
    print(json.dumps({"error": str(err)})); sys.exit(0)
seen = {}
for modname in mods:
    try:
        mod = importlib.import_module("PyQt5." + modname)
    except ImportError:
        continue
    for name in dir(mod):
        obj = getattr(mod, name)
        if isinstance(obj, type) and name.startswith("Q") and obj.__module__.startswith("PyQt5"):
            seen.setdefault(name, (modname, obj))
def own(cls):
    methods, constants = set(), set()
    for k, v in vars(cls).items():
        if k.startswith("_") or k in ("staticMetaObject", "pyqtConfigure"):
            continue
        if isinstance(v, type):
            continue
        if callable(v) or type(v).__name__ in ("pyqtSignal", "methoddescriptor", "method_descriptor", "builtin_function_or_method"):
            methods.add(k)
        else:
            constants.add(k)
    return methods, constants
for name, (modname, cls) in sorted(seen.items()):
    methods, constants = own(cls)
    for k, v in vars(cls).items():  # nested classes (enum types, e.g. Qt.AlignmentFlag) are not separate classes here
        if isinstance(v, type) and not k.startswith("_"):
            constants.add(k)
    props = []
    mo = getattr(cls, "staticMetaObject", None)
    if mo is not None and mo.className() == name:
        props = [mo.property(i).name() for i in range(mo.propertyOffset(), mo.propertyCount())]
        props = [p if isinstance(p, str) else bytes(p).decode() for p in props]
    bases = [b.__name__ for b in cls.__bases__ if b.__module__.startswith("PyQt5")]
    if "exec_" in methods:
        methods.add("exec")
    if "print_" in methods:
        methods.add("print")
    out[name] = {"bases": bases, "methods": sorted(methods), "constants": sorted(constants),
                 "properties": sorted(props), "module": modname}
from PyQt5.QtCore import PYQT_VERSION_STR, QT_VERSION_STR
print(json.dumps({"classes": out, "pyqt": PYQT_VERSION_STR, "qt": QT_VERSION_STR}))
"""


def qt_classes(python: str, path: str | None) -> tuple[dict, str]:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
    env["QT_QPA_PLATFORM"] = "offscreen"
    result = subprocess.run([python, "-c", _QT_PROBE, ",".join(QT_MODULES)], capture_output=True, text=True, env=env)
    if result.returncode:
        raise RuntimeError(f"the PyQt5 probe failed under {python}:\n{result.stderr}")
    data = json.loads(result.stdout)
    if "error" in data:
        raise RuntimeError(f"PyQt5 cannot be imported by {python}: {data['error']}")
    return data["classes"], f"PyQt5 {data['pyqt']} (Qt {data['qt']}): {', '.join(QT_MODULES)}"


# --- Slicer's Python ------------------------------------------------------------------------------


def python_names(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """Module-level public names of a Python file, and the members of its module-level classes."""
    names: set[str] = set()
    classes: dict[str, set[str]] = {}

    def visit(body: list) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, ast.ClassDef):
                names.add(node.name)
                members = classes.setdefault(node.name, set())
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        members.add(item.name)
                    elif isinstance(item, ast.Assign):
                        members |= {t.id for t in item.targets if isinstance(t, ast.Name)}
                    elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        members.add(item.target.id)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                visit(node.orelse)
                for handler in node.handlers:
                    visit(handler.body)

    visit(ast.parse(text).body)
    return {n for n in names if not n.startswith("__")}, classes


def slicer_python(git: Git, tag: str) -> dict[str, list[str]]:
    files = git.files(tag)
    out: dict[str, set[str]] = {}
    for module, parts in SLICER_PYTHON.items():
        names: set[str] = set()
        for part in parts:
            paths = sorted(p for p in files if p.startswith("Base/Python/" + part) and p.endswith(".py") and "/tests/" not in p)
            for path in paths:
                found, classes = python_names(git.show(tag, path))
                if path.endswith("__init__.py") or not part.endswith("/"):
                    names |= found
                else:  # a package: __init__ star-imports its modules (parameterNodeWrapper)
                    names |= {n for n in found if not n.startswith("_")}
                for cls, members in classes.items():
                    out.setdefault(f"{module}.{cls}", set()).update(members)
        out[module] = names
    top = {p.split("/")[2].removesuffix(".py") for p in files
           if p.startswith("Base/Python/slicer/") and (p.endswith(".py") or p.count("/") > 3) and "/tests/" not in p}
    top.discard("__init__")
    init = git.show(tag, "Base/Python/slicer/__init__.py")
    top |= set(re.findall(r'_createModule\("slicer\.(\w+)"', init))
    for path in sorted(p for p in files if p.endswith(".py") and p.startswith(("Base/Python/", "Modules/Scripted/"))):
        text = git.show(tag, path)
        top |= set(re.findall(r'setattr\(slicer,\s*"(\w+)"', text))
        top |= set(re.findall(r"^\s*slicer\.(\w+)\s*=[^=]", text, re.M))
    out["slicer"] = top
    return {k: sorted(v) for k, v in out.items()}


# --- one release ----------------------------------------------------------------------------------


def extract(tag: str, args: argparse.Namespace, qt: tuple[dict, str] | None) -> dict:
    slicer, vtk, fork, ctk = Git(args.slicer_git), Git(args.vtk_git), Git(args.vtk_fork_git), Git(args.ctk_git)
    addon = Git(args.vtkaddon_git)
    sources = {}
    slicer_commit = slicer.commit(tag)
    sources["Slicer"] = f"{args.slicer_url} {tag} = {slicer_commit}"
    try:
        fork_hash, branch = vtk_pin(slicer, tag)
        upstream = upstream_of(branch)
        how = f"pinned in SuperBuild/External_VTK.cmake: github.com/Slicer/VTK {fork_hash} ({branch})"
    except ValueError as err:
        branch, upstream, _ = FALLBACK_PINS[tag]
        fork_hash = None
        how = f"FALLBACK_PINS ({err})"
    if fork_hash and fork.commit(fork_hash):
        vtk_git, vtk_rev = fork, fork.commit(fork_hash)
        vtk_note = f"{how}; read at the fork's commit {vtk_rev}"
    else:
        vtk_git, vtk_rev = vtk, vtk.commit(upstream)
        vtk_note = (f"{how}; the fork mirror lacks that commit, so read upstream github.com/Kitware/VTK at {vtk_rev} "
                    f"(the commit the branch starts from; the fork adds a few patches on top)")
    try:
        ctk_rev = ctk_pin(slicer, tag)
        ctk_note = f"pinned in SuperBuild/External_CTK.cmake: github.com/commontk/CTK {ctk_rev}"
    except ValueError as err:
        ctk_rev = FALLBACK_PINS[tag][2]
        ctk_note = f"FALLBACK_PINS ({err}): github.com/commontk/CTK {ctk_rev}"
    try:
        addon_rev = vtkaddon_pin(slicer, tag)
        addon_note = f"pinned in SuperBuild.cmake: github.com/Slicer/vtkAddon {addon_rev}"
    except ValueError as err:
        addon_rev = FALLBACK_PINS[tag][3]
        addon_note = f"FALLBACK_PINS ({err}): github.com/Slicer/vtkAddon {addon_rev}"
    sources["VTK"] = vtk_note
    sources["CTK"] = ctk_note
    sources["vtkAddon"] = addon_note

    slicer_files = slicer.files(tag)
    slicer_h = read_headers(slicer, tag, slicer_headers(slicer_files))
    vtk_paths, vtk_modules = vtk_headers(vtk_git, vtk_rev, slicer, tag)
    vtk_h = read_headers(vtk_git, vtk_rev, vtk_paths)
    ctk_h = read_headers(ctk, ctk_rev, ctk_headers(ctk.files(ctk_rev)))
    addon_h = read_headers(addon, addon_rev, sorted(p for p in addon.files(addon_rev) if p.endswith(".h") and "/" not in p))
    print(f"{tag}: {len(slicer_h)} Slicer, {len(vtk_h)} VTK ({len(vtk_modules)} modules), {len(ctk_h)} CTK, "
          f"{len(addon_h)} vtkAddon headers", file=sys.stderr)
    sources["VTK modules"] = " ".join(m.removeprefix("VTK::") for m in vtk_modules)
    sources["headers"] = ("Slicer: Libs/, Base/ (not Base/CLI/), Modules/Loadable/; CTK: " + ", ".join(CTK_LIBS)
                          + "; vtkAddon: top folder; VTK: the folders of the modules above; no Testing/ folders")

    # macros: VTK's for all; CTK's for CTK and Slicer; Slicer's for Slicer
    vtk_code, vtk_macros = preprocess_all(vtk_h)
    ctk_code, ctk_macros = preprocess_all(ctk_h)
    slicer_code, slicer_macros = preprocess_all(slicer_h)
    addon_code, addon_macros = preprocess_all(addon_h)

    def merged(*tables: dict) -> dict:
        out: dict = {}
        for table in tables:
            for name, definitions in table.items():
                out.setdefault(name, [])
                out[name] += [d for d in definitions if d not in out[name]]
        return out

    classes: dict[str, dict] = {}
    origin = {}
    for label, code, macros in (("VTK", vtk_code, vtk_macros), ("CTK", ctk_code, merged(vtk_macros, ctk_macros)),
                                ("vtkAddon", addon_code, merged(vtk_macros, addon_macros)),
                                ("Slicer", slicer_code, merged(vtk_macros, addon_macros, ctk_macros, slicer_macros))):
        for name, record in collect_classes(code, macros).items():
            if name in classes:  # declared in two sources (a decorator of another library's class): add members
                for key in ("methods", "hidden", "properties", "constants"):
                    classes[name][key] |= record[key]
                continue
            classes[name] = record
            origin[name] = label
    if qt is not None:
        qt_found, qt_note = qt
        sources["Qt"] = qt_note
        for name, record in qt_found.items():
            if name in classes:
                continue
            classes[name] = {"bases": record["bases"], "methods": set(record["methods"]), "hidden": set(),
                             "properties": set(record["properties"]), "constants": set(record["constants"])}
            origin[name] = "Qt"
    else:
        sources["Qt"] = "not extracted (--no-pyqt): no Qt classes"
    sources["Python"] = "Base/Python/slicer/ at " + tag

    out_classes = {}
    for name in sorted(classes):
        record = classes[name]
        entry = {"from": origin[name], "bases": record["bases"], "methods": sorted(record["methods"])}
        for key in ("hidden", "properties", "constants"):
            if record[key]:
                entry[key] = sorted(record[key])
        if record.get("files"):
            entry["file"] = sorted(record["files"])[0]
        out_classes[name] = entry
    return {"release": tag, "sources": sources, "classes": out_classes, "python": slicer_python(slicer, tag)}


def write(data: dict, path: Path) -> None:
    raw = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(raw)
    path.write_bytes(buf.getvalue())
    print(f"wrote {path} ({len(buf.getvalue())} bytes, {len(data['classes'])} classes)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", action="append", choices=RELEASES, help="default: all")
    for key, value in DEFAULT_MIRRORS.items():
        parser.add_argument("--" + key.replace("_", "-"), dest=key, default=value)
    parser.add_argument("--slicer-url", default="github.com/Slicer/Slicer")
    parser.add_argument("--qt-python", default=sys.executable)
    parser.add_argument("--qt-path", default=None, help="prepended to PYTHONPATH of --qt-python (e.g. a pip --target folder)")
    parser.add_argument("--no-pyqt", action="store_true", help="leave Qt classes out (the test then skips Qt receivers)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    qt = None if args.no_pyqt else qt_classes(args.qt_python, args.qt_path)
    for tag in args.release or RELEASES:
        write(extract(tag, args, qt), args.out / f"slicer-{tag}.api.json.gz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
