"""The repository itself: README commands, CI script, packaging bounds, layering."""

from __future__ import annotations

import re

import pytest
import tomllib

from conftest import REPO


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README must open with a bash block of commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_exactly_two_commands_and_ci_runs_the_second():
    commands = _readme_commands()
    assert len(commands) == 2
    assert "magms demo" in commands[0] or "magms segment" in commands[0]
    assert "pytest" in commands[1]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci.splitlines()


def test_torch_is_bounded_and_installed_pinned():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    torch_req = next(d for d in project["dependencies"] if d.startswith("torch"))
    assert "<" in torch_req, "an open torch range can pull a multi-GB CUDA build"
    assert project["name"] != "magms", "'magms' on PyPI is the reference package"
    assert project["scripts"]["magms"] == "magms.cli:main"
    for command in _readme_commands():
        assert "torch==2.13.0" in command


def test_core_never_imports_slicer_vtk_or_qt():
    for path in (REPO / "magms").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import|from)\s+(slicer|vtk|qt|ctk)\b", text, re.M), path


def test_extension_layout():
    for name in ("CMakeLists.txt", "MAGMSSegmenter", "MAGMSTraining", "Resources", "Testing", "README.md"):
        assert (REPO / name).exists(), name


def _cli_flags(command: str) -> list[str]:
    from magms.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return [flag for action in sub._actions for flag in action.option_strings if flag.startswith("--") and flag != "--help"]


#: Where each command's options are documented (the README is the short path; the reference is in docs/).
COMMAND_DOCS = {"demo": "demo.md", "segment": "segment.md", "export": "dicom.md", "evaluate": "evaluate.md", "train": "training.md",
                "devices": "speed.md", "serve": "refine.md"}


@pytest.mark.parametrize("command", sorted(COMMAND_DOCS))
def test_the_docs_document_every_flag_of_every_command(command):
    text = (REPO / "docs" / COMMAND_DOCS[command]).read_text(encoding="utf-8")
    missing = [flag for flag in _cli_flags(command) if f"`{flag}" not in text and f"{flag}`" not in text and f" {flag} " not in text]
    assert not missing, f"magms {command}: flags not in docs/{COMMAND_DOCS[command]}: {missing}"


def test_the_readme_is_short_and_every_link_resolves():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 300
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            assert (path.parent / target).exists(), f"{path.name}: link to {target}"


def test_the_docs_give_the_refine_shortcuts_the_module_binds():
    module = (REPO / "MAGMSSegmenter" / "MAGMSSegmenter.py").read_text(encoding="utf-8")
    bound = re.search(r"REFINE_SHORTCUTS = \((.*)\)\n", module)
    assert bound, "MAGMSSegmenter.py: REFINE_SHORTCUTS not found"
    keys = set(re.findall(r'"(Ctrl\+[^"]+)"', bound.group(1)))
    assert len(keys) == 3
    for name in ("README.md", "docs/refine.md", "docs/slicer.md"):
        text = (REPO / name).read_text(encoding="utf-8")
        named = set(re.findall(r"\bCtrl\+(?:Shift\+|Alt\+)?[A-Z]\b", text))
        assert named == keys, f"{name} names the shortcuts {sorted(named)}; the module binds {sorted(keys)}"


def test_training_defaults_are_one_in_the_core_the_cli_and_the_module():
    import ast

    from magms.cli import build_parser
    from magms.commands import TrainOptions
    from magms.config import TrainConfig
    from magms.options import from_command_line

    parsed = from_command_line(TrainOptions, build_parser().parse_args(["train", "--data", "d", "--labels", "brats2013", "--out", "o"]))
    assert parsed.train_config() == TrainConfig()  # the loop's defaults are the core's
    defaults = TrainOptions.defaults()
    assert all(getattr(parsed, name) == value for name, value in defaults.items())
    # the Training module's settings start from the same values, under the same names
    from MAGMSTrainingLib.controller import DEFAULTS, TrainingController

    expected = {"epochs": defaults["epochs"], "max_minutes": defaults["max_minutes"] or 0.0, "patch": defaults["patch"][0],
                "distill": defaults["distill"], "kl_weight": defaults["kl_weight"], "feature_weight": defaults["feature_weight"],
                "backbone": defaults["backbone"], "device": defaults["device"]}
    assert {k: DEFAULTS[k] for k in expected} == expected
    source = (REPO / "MAGMSTraining" / "MAGMSTraining.py").read_text(encoding="utf-8")
    assert "parameterNodeWrapper" not in source and "TRAIN_DEFAULTS" not in source  # no second set of defaults
    # and every setting the panel passes is an option of magms train
    settings_source = ast.parse((REPO / "MAGMSTraining" / "MAGMSTrainingLib" / "controller.py").read_text(encoding="utf-8"))
    method = next(n for n in ast.walk(settings_source) if isinstance(n, ast.FunctionDef) and n.name == "settings")
    keys = {k.value for d in ast.walk(method) if isinstance(d, ast.Dict) for k in d.keys}
    assert keys <= set(defaults) | {"labels"}, keys - set(defaults)
    assert TrainingController.settings  # the method the test read


def _core_imports() -> dict[str, set[str]]:
    """magms module -> the magms modules it imports, at module level or inside a function (a lazy import is
    still an arrow; one under ``if TYPE_CHECKING:`` is not). ``from magms.x import y`` counts as magms.x.y
    when that is a module, else magms.x."""
    import ast

    root = REPO / "magms"
    modules = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and getattr(block.test, "id", "") == "TYPE_CHECKING"
                       for n in ast.walk(block)}  # annotations only: no arrow at run time
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("magms")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("magms") and node.level == 0:
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_the_core_has_no_import_circle():
    """Tarjan's strongly connected components over the import graph: none larger than one module."""
    graph = _core_imports()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not circles, circles


@pytest.mark.parametrize("module, never", [
    ("magms.config", "magms.options"),  # records stored in a bundle, below the CLI's option machinery
    ("magms.bundle", "magms.inference.postprocess"),
    ("magms.labels.schemes", "magms.labels.registry"),
])
def test_the_arrows_the_redesign_removed_stay_removed(module, never):
    assert never not in _core_imports()[module]


def test_neither_training_nor_inference_imports_the_other():
    graph = _core_imports()
    training = {m for m in graph if m.startswith("magms.training")}
    inference = {m for m in graph if m.startswith("magms.inference")}
    assert inference > {"magms.inference", "magms.inference.predictors"} and training
    assert not any(graph[m] & inference for m in training)
    assert not any(graph[m] & training for m in inference)


def test_no_function_is_over_60_lines():
    """A long function reads as its steps once they are named (the trainer as its loop, a use case as its calls)."""
    import ast

    long = []
    for folder in ("magms", "MAGMSCommon", "MAGMSSegmenter", "MAGMSTraining"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long
