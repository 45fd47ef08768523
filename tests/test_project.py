"""House rules that keep the project livable: env files agree, the README's commands, DESIGN.md."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name where they differ


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower()


def _extras(pyproject: dict) -> dict[str, list[str]]:
    """The optional dependencies by extra, references to geodino's own extras left out."""
    return {k: [r for r in v if _name(r) != "geodino"] for k, v in pyproject["project"]["optional-dependencies"].items()}


def test_environment_yml_matches_pyproject() -> None:
    """environment.yml holds every dependency and the extras a conda user wants (``distributed`` at least), each with
    pyproject's lower bound; nothing pyproject does not declare."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    core = {CONDA_NAMES.get(_name(r), _name(r)): r for r in pyproject["project"]["dependencies"]}
    optional = {CONDA_NAMES.get(_name(r), _name(r)): r for reqs in _extras(pyproject).values() for r in reqs}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda = {_name(d): d for d in env["dependencies"] if isinstance(d, str) and _name(d) not in ("python", "pip")}
    assert core.keys() <= conda.keys() and {_name(r) for r in _extras(pyproject)["distributed"]} <= conda.keys()
    assert conda.keys() <= core.keys() | optional.keys(), sorted(conda.keys() - core.keys() - optional.keys())
    for name, spec in conda.items():  # same lower bounds
        req = core.get(name) or optional[name]
        assert re.findall(r"[<>=!~]=?[\d.]+", spec) == re.findall(r"[<>=!~]=?[\d.]+", req), name


#: modules that are not the distribution their top-level name says (``dask.distributed`` is distributed's)
_IMPORTED_AS = {"dask.distributed": "distributed"}


def _imports() -> dict[frozenset[str], set[tuple[str, bool]]]:
    """Third-party imports of geodino: the distributions that may provide the module (several for a namespace
    package such as ``pystac``'s) -> {(file, imported at module level outside ``if TYPE_CHECKING``)}."""
    from importlib.metadata import packages_distributions

    owners = packages_distributions()
    found: dict[frozenset[str], set[tuple[str, bool]]] = {}

    def visit(node: ast.AST, rel: str, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                inner = False
            names = [a.name for a in child.names] if isinstance(child, ast.Import) else []
            if isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            for module in names:
                root = module.split(".")[0]
                if root in sys.stdlib_module_names or root == "geodino":
                    continue
                dists = [d for m, d in _IMPORTED_AS.items() if module == m or module.startswith(m + ".")] or owners.get(root)
                assert dists, f"{rel} imports {module}, which no installed distribution provides"
                found.setdefault(frozenset(_name(d).replace("_", "-") for d in dists), set()).add((rel, inner))
            visit(child, rel, inner)

    for path in sorted((ROOT / "geodino").rglob("*.py")):
        visit(ast.parse(path.read_text()), path.relative_to(ROOT).as_posix(), True)
    return found


def test_every_imported_distribution_is_declared() -> None:
    """What geodino imports is a dependency, or an extra imported only inside functions behind a one-line error that
    names ``geodino[extra]``; and every dependency is imported (none left over)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    core = {_name(r) for r in pyproject["project"]["dependencies"]}
    extra_of = {_name(r): extra for extra, reqs in _extras(pyproject).items() if extra not in ("test", "dev") for r in reqs}
    package_text = "\n".join(p.read_text() for p in (ROOT / "geodino").rglob("*.py"))
    used: set[str] = set()
    for dists, where in sorted(_imports().items(), key=lambda kv: sorted(kv[0])):
        files = sorted({f for f, _ in where})
        if dists & core:
            used |= dists & core
            continue
        optional = sorted(dists & extra_of.keys())
        assert optional, f"{files} import {'/'.join(sorted(dists))}, which pyproject.toml does not declare"
        extra = extra_of[optional[0]]
        at_top = sorted(f for f, top in where if top)
        assert not at_top, f"{optional[0]} is in the optional extra [{extra}] but {at_top} import it at module level"
        assert f"geodino[{extra}]" in package_text, f"no error tells users to install geodino[{extra}] for {optional[0]}"
    assert used == core, f"declared but never imported: {sorted(core - used)}"


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


def test_minimum_constraints_pin_every_lower_bound() -> None:
    """constraints/minimum.txt (``make test-min``) pins every dependency and the ``distributed`` extra at exactly
    pyproject's lower bound, torch aside (it comes from TORCH_SPEC)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    bounds = {}
    for req in [*pyproject["project"]["dependencies"], *_extras(pyproject)["distributed"]]:
        (low,) = re.findall(r">=\s*([\d.]+)", req)
        bounds[_name(req)] = low
    pins = {}
    for line in (ROOT / "constraints" / "minimum.txt").read_text().splitlines():
        if line.split("#")[0].strip():
            name, version = line.split("#")[0].strip().split("==")
            pins[name.lower()] = version
    assert pins == {k: v for k, v in bounds.items() if k != "torch"}
    assert "constraints/minimum.txt" in (ROOT / "Makefile").read_text()
