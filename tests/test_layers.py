"""The package's floors: no module imports one above it, and views never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "webhook"

# Lower numbers are lower floors; a module may import only from floors below its own.
FLOORS = {
    "domain": 0, "errors": 1, "json_limits": 1, "secret": 1, "watchdog": 1, "access_log": 1,
    "cpu": 1, "fair_pool": 1,
    "config": 2, "metrics": 2, "capped": 2, "signature": 2, "logs": 2, "deadlines": 2,
    "dlcs_documents": 2, "named_query": 2, "manifest_json": 2, "body_deadline": 2,
    "sqlite_pool": 2,
    "db": 3, "schemas": 3, "answer_schemas": 3, "manifest": 3, "storage": 3, "dlcs": 3, "sns": 3,
    "server_settings": 3,
    "model_base": 4, "listing_schemas": 4, "startup": 4, "file_store": 4, "s3_store": 4,
    "devdlcs.documents": 3, "devdlcs.assets": 3, "devdlcs.server": 4,
    "deliveries": 5,
    "models": 6,
    "paintings": 7,
    "devdlcs": 8, "devdlcs.run": 8, "devdlcs.__main__": 9,
    "rebuild": 8, "reading": 8, "completion_call": 8, "failures": 8, "listing": 8, "stores": 8,
    "openapi_operations": 8,
    "intake": 9,
    "registration": 10, "maintenance": 10,
    "service": 11,
    "openapi": 12, "routes.http": 12, "routes.console_session": 12,
    "routes": 13, "cli": 13,
    "__init__": 14,
}
VIEWS = {"routes.console", "routes.deliveries", "routes.docs", "routes.health",
         "routes.manifests", "routes.metrics", "routes.sns", "routes.webhooks"}


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    return "__init__" if name == "__init__" else name.removesuffix(".__init__")


def _floor(name: str) -> int:
    if name in FLOORS:
        return FLOORS[name]
    return FLOORS[name.split(".")[0]]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("webhook"):
            if node.module == "webhook":
                found.update(alias.name for alias in node.names)
            else:
                found.add(node.module.removeprefix("webhook."))
        elif isinstance(node, ast.Import):
            found.update(alias.name.removeprefix("webhook.") for alias in node.names
                         if alias.name.startswith("webhook."))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_no_module_imports_one_above_it(path):
    name = _module_name(path)
    if name == "routes":
        return  # the package registers its views: it sits above them
    above = sorted(imported for imported in _imports(path)
                   if imported != "routes" and _floor(imported) >= _floor(name)
                   and not (name == "__init__" and imported in ("cli", "routes")))
    assert above == [], f"{name} (floor {_floor(name)}) imports {above}"


@pytest.mark.parametrize("path", [p for p in MODULES if _module_name(p) in VIEWS],
                         ids=lambda p: _module_name(p))
def test_views_do_not_import_each_other(path):
    assert not (_imports(path) & VIEWS)


def test_every_module_has_a_floor():
    unknown = [_module_name(p) for p in MODULES
               if _module_name(p) not in FLOORS and _module_name(p).split(".")[0] not in FLOORS]
    assert unknown == []
