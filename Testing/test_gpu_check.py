"""``Testing/benchmarks/gpu_check.sh`` cannot run here (no GPU): check that it parses, that every file it
runs exists, and that every option it passes is one its program takes."""

from __future__ import annotations

import re
import shlex
import subprocess

import tomllib

from conftest import REPO

SCRIPT = REPO / "Testing" / "benchmarks" / "gpu_check.sh"


def _commands() -> list[list[str]]:
    """The script's ``step`` commands and other Python calls, continuation lines joined, as words."""
    text = SCRIPT.read_text(encoding="utf-8").replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#") or '"$PY"' not in line:
            continue
        words = shlex.split(line.split(">", 1)[0].replace('"$PY"', "PY"))
        commands.append(words[words.index("PY"):])
    return commands


def _flags(words: list[str]) -> list[str]:
    return [w for w in words if w.startswith("--")]


def test_script_parses_and_stays_within_eight_minutes():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    limits = [int(n) for n in re.findall(r"^\s*step [\w-]+ (\d+) ", SCRIPT.read_text(encoding="utf-8"), re.M)]
    assert len(limits) == 5 and sum(limits) + 10 <= 8 * 60, limits


def test_every_file_the_script_runs_exists_and_takes_its_options():
    commands = _commands()
    scripts = {}
    for words in commands:
        for word in words:
            if word.startswith("Testing/") and word.endswith(".py"):
                assert (REPO / word).is_file(), word
                scripts[word] = words
    assert set(scripts) >= {"Testing/test_cuda.py", "Testing/benchmarks/gpu_nccl_train.py", "Testing/benchmarks/bench_reference.py",
                            "Testing/benchmarks/bench_engines.py"}
    for path, words in scripts.items():
        if path.startswith("Testing/test_"):
            continue
        source = (REPO / path).read_text(encoding="utf-8")
        after = words[words.index(path) + 1:]
        missing = [flag for flag in _flags(after) if f'"{flag}"' not in source]
        assert not missing, f"{path} takes no {missing}"
    # bench_engines' variants and parts are ones it knows
    engines = scripts["Testing/benchmarks/bench_engines.py"]
    assert set(engines[engines.index("--part") + 1].split(",")) <= {"e2e", "network", "batch", "agreement"}
    assert {v.split(":")[0] for v in engines[engines.index("--variants") + 1].split(",")} == {"eager"}


def test_the_magms_commands_and_pytest_marker_it_uses_exist():
    from magms.cli import build_parser

    devices = next(w for w in _commands() if w[1:4] == ["-m", "magms", "devices"])
    build_parser().parse_args(devices[3:4] + ["--output", "x.json"])  # exits on an unknown option
    markers = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("cuda:") for m in markers)
    assert "pytest.mark.cuda" in (REPO / "Testing" / "test_cuda.py").read_text(encoding="utf-8")
    pytest_call = next(w for w in _commands() if "pytest" in w)
    assert pytest_call[pytest_call.index("-m", 3) + 1] == "cuda"
