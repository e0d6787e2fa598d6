"""The repository itself: README commands, CI script, packaging bounds, layering."""

from __future__ import annotations

import re
import tomllib

from conftest import REPO


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README must open with a bash block of commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_exactly_two_commands_and_ci_runs_the_second():
    commands = _readme_commands()
    assert len(commands) == 2
    assert "magms demo" in commands[0] or "magms segment" in commands[0]
    assert "pytest" in commands[1]
    ci = (REPO / ".ci" / "run").read_text()
    assert commands[1] in ci.splitlines()


def test_torch_is_bounded_and_installed_pinned():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    torch_req = next(d for d in project["dependencies"] if d.startswith("torch"))
    assert "<" in torch_req, "an open torch range can pull a multi-GB CUDA build"
    assert project["name"] != "magms", "'magms' on PyPI is the reference package"
    assert project["scripts"]["magms"] == "magms.cli:main"
    for command in _readme_commands():
        assert "torch==2.13.0" in command


def test_core_never_imports_slicer_vtk_or_qt():
    for path in (REPO / "magms").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(slicer|vtk|qt|ctk)\b", text, re.M), path


def test_extension_layout():
    for name in ("CMakeLists.txt", "MAGMSSegmenter", "MAGMSTraining", "Resources", "Testing", "README.md"):
        assert (REPO / name).exists(), name
