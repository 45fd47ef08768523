"""House rules that keep the project livable: env files agree, the README's commands, DESIGN.md."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name where they differ


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pip_deps = {CONDA_NAMES.get(_name(r), _name(r)): r for r in pyproject["project"]["dependencies"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda = {_name(d): d for d in env["dependencies"] if isinstance(d, str) and _name(d) not in ("python", "pip")}
    assert conda.keys() == pip_deps.keys()
    for name, req in pip_deps.items():  # same lower bounds
        assert re.findall(r"[<>=!~]=?[\d.]+", conda[name]) == re.findall(r"[<>=!~]=?[\d.]+", req), name


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one() -> None:
    head = (ROOT / "README.md").read_text().splitlines()[:25]
    assert any("make demo" in line for line in head) and any("make test" in line for line in head)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test TORCH_SPEC=torch==2.13.0" in ci


def test_design_md_names_every_module_and_modules_stay_small() -> None:
    design = (ROOT / "DESIGN.md").read_text()
    for module in sorted((ROOT / "geodino").rglob("*.py")):
        rel = module.relative_to(ROOT).as_posix()
        if module.name != "__init__.py":
            assert rel in design, f"DESIGN.md does not say what {rel} owns"
        assert len(module.read_text().splitlines()) <= 400, f"{rel} is over 400 lines: split it by concern"
