"""What the shipped code imports is what `pip install .` installs.

`python3 dev.py serve` installs the project without its test extras, so a module the gateway imports at
run time but that only the test extras bring (the intake's SMTP server once was one) works in every test
and stops `serve` on a fresh machine. Each third-party import of the shipped packages must come from a
runtime dependency or from what one of them requires.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SHIPPED = PYPROJECT["tool"]["mypy"]["packages"]
TOP_LEVEL_FILES = ["wsgi.py", "gunicorn.conf.py"]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _third_party_imports() -> dict[str, str]:
    """Top-level module -> the first shipped file importing it."""
    files = [file for package in SHIPPED for file in sorted((ROOT / package).rglob("*.py"))]
    files += [ROOT / name for name in TOP_LEVEL_FILES]
    found: dict[str, str] = {}
    for file in files:
        for name in _imports(file):
            if name in sys.stdlib_module_names or name in SHIPPED or name == "__future__":
                continue
            found.setdefault(name, str(file.relative_to(ROOT)))
    return found


def _installed_by_runtime() -> set[str]:
    """The canonical names of the runtime dependencies and everything they require, as installed here."""
    seen: set[str] = set()
    todo = [Requirement(line) for line in PYPROJECT["project"]["dependencies"]]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            nested = Requirement(line)
            extras = requirement.extras or {""}
            if nested.marker is None or any(nested.marker.evaluate({"extra": extra}) for extra in extras):
                todo.append(nested)
    return seen


def test_every_import_of_the_shipped_code_is_a_runtime_dependency() -> None:
    runtime = _installed_by_runtime()
    providers = metadata.packages_distributions()
    missing = {
        module: (where, providers.get(module))
        for module, where in _third_party_imports().items()
        if not any(canonicalize_name(dist) in runtime for dist in providers.get(module, [module]))
    }
    assert not missing, f"imported at run time but not installed by `pip install .`: {missing}"


def test_the_runtime_dependencies_are_listed_once() -> None:
    names = [canonicalize_name(Requirement(line).name) for line in PYPROJECT["project"]["dependencies"]]
    assert not {name for name in names if names.count(name) > 1}
