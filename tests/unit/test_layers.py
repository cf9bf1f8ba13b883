"""The dependency rule of docs/architecture.md, checked by reading every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "hpo_service"

# layer -> imports it must never make (prefix match on the imported module name)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "hpo_service/domain": ("hpo_service.db", "hpo_service.api", "hpo_service.workers", "hpo_service.orchestration",
                           "hpo_service.scheduling", "hpo_service.sampling", "fastapi", "sqlalchemy", "ray",
                           "optuna", "httpx"),
    "hpo_service/scheduling": ("hpo_service.db", "hpo_service.api", "hpo_service.workers",
                               "hpo_service.orchestration", "hpo_service.sampling", "fastapi", "sqlalchemy",
                               "ray", "optuna", "httpx"),
    "hpo_service/sampling": ("hpo_service.db", "hpo_service.api", "hpo_service.workers",
                             "hpo_service.orchestration", "fastapi", "sqlalchemy", "ray", "httpx"),
    "hpo_service/db": ("hpo_service.api", "hpo_service.orchestration", "hpo_service.workers", "fastapi"),
    "hpo_service/orchestration": ("hpo_service.api", "fastapi", "httpx"),
    "hpo_service/api": ("hpo_service.db.repositories", "hpo_service.db.models", "sqlalchemy"),
    # The dashboard is served by the API layer and reads through orchestration's DashboardService.
    "hpo_service/dashboard": ("hpo_service.db", "hpo_service.workers", "sqlalchemy", "httpx"),
    "hpo_service/workers": ("hpo_service.db", "hpo_service.orchestration", "hpo_service.api", "sqlalchemy",
                            "fastapi"),
    "hpo_service/cli.py": ("hpo_service.orchestration", "hpo_service.db.repositories", "hpo_service.db.models"),
    "trainers": ("hpo_service.db", "hpo_service.api", "hpo_service.orchestration", "hpo_service.client",
                 "sqlalchemy", "fastapi", "httpx"),
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules_under(relative: str) -> list[Path]:
    target = ROOT / relative
    return [target] if target.is_file() else sorted(target.rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_respect_the_dependency_rule(layer: str) -> None:
    modules = modules_under(layer)
    assert modules, f"{layer} has no modules"
    violations = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in modules
        for name in sorted(imports_of(path))
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[layer])
    ]
    assert not violations, "\n".join(violations)


def test_optuna_appears_only_in_sampling() -> None:
    offenders = [
        str(path.relative_to(ROOT)) for path in PACKAGE.rglob("*.py")
        if "sampling" not in path.parts and any(n.split(".")[0] == "optuna" for n in imports_of(path))
    ]
    assert not offenders
