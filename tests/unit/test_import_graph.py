"""The apps import one way: `curation` <- `sampling` <- the `/v1/` adapter (`winnow.lightly`).

Read from the source with `ast`, so the test needs no database and sees imports inside functions too:
a function-level import of a project module is how a circle hides, so there are none.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("curation", "sampling", "winnow")
# Lower layers never import higher ones. `winnow` itself (settings, urls, accounts) wires the apps together.
LAYERS = {"curation": 0, "sampling": 1, "winnow.lightly": 2}
# Django-free cores: pure functions over arrays, files and values, shared by client, server and workers.
DJANGO_FREE = ("sampling.samplers", "winnow.client", "winnow.values")
SERVER_ONLY = ("django", "rest_framework", "celery", "curation", "sampling")
# The edge of the domain apps: their REST views and serializers, the only modules there that speak HTTP. Every other
# module of curation and sampling (services, models, tasks, pages) takes plain values and raises
# curation.errors.DomainError, which the API maps to its 4xx shape.
EDGE = ("curation.api", "sampling.api")
HTTP_FRAMEWORK = ("rest_framework", "drf_spectacular")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(path: Path, module: str) -> list[tuple[str, bool, int]]:
    """(imported module, at module level?, line) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    # Imports under `if TYPE_CHECKING:` never run.
    type_only = {
        id(inner)
        for node in tree.body
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from curation import storage` imports the module curation.storage.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        out.extend((name, id(node) in top_level, node.lineno) for name in dict.fromkeys(names))
    return out


def _owner(module: str) -> str | None:
    for layer in sorted(LAYERS, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def _under(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_apps_import_one_way():
    wrong = []
    for module, path in MODULES.items():
        source = _owner(module)
        if source is None:
            continue
        for target, _, line in _imports(path, module):
            owner = _owner(target)
            if owner is not None and LAYERS[owner] > LAYERS[source]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({source}) imports {target} ({owner})")
    assert not wrong, "imports that run the wrong way:\n" + "\n".join(wrong)


def test_no_function_level_imports_of_project_modules():
    """Inside the apps (curation, sampling, the /v1/ adapter)."""
    hidden = [
        f"{path.relative_to(ROOT)}:{line} imports {target} inside a function"
        for module, path in MODULES.items()
        for target, top, line in _imports(path, module)
        # In the apps; AppConfig.ready() is where Django wants an app's late imports. (The project package's
        # Celery and app-loading hooks import models late, as Django requires.)
        if not top and target in MODULES and _owner(module) is not None and not module.endswith(".apps")
    ]
    assert not hidden, "function-level imports hide circles; untie the circle instead:\n" + "\n".join(hidden)


def test_module_level_graph_has_no_cycles():
    graph = {
        module: {t for t, top, _ in _imports(path, module) if top and t in MODULES and t != module}
        for module, path in MODULES.items()
    }
    # A package's __init__ importing its own submodules is how a package exposes its API, not a circle.
    for module in graph:
        graph[module] = {
            t for t in graph[module] if not (MODULES[module].name == "__init__.py" and t.startswith(module + "."))
        }
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("core", DJANGO_FREE)
def test_cores_import_no_server_code(core):
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for module, path in MODULES.items()
        if _under(module, (core,))
        for target, _, line in _imports(path, module)
        if _under(target, SERVER_ONLY) and not _under(target, (core,))
    ]
    assert not wrong, f"{core} must run without Django and the server apps:\n" + "\n".join(wrong)


def _http_imports(modules: dict[str, Path]) -> list[str]:
    return [
        f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{line} imports {target}"
        for module, path in modules.items()
        if _under(module, ("curation", "sampling")) and not _under(module, EDGE)
        for target, _, line in _imports(path, module)
        if _under(target, HTTP_FRAMEWORK)
    ]


def test_services_never_import_the_rest_framework():
    assert "curation.tagging" in MODULES and "sampling.tagging" in MODULES
    wrong = _http_imports(MODULES)
    assert not wrong, "services take plain values and raise DomainError, not DRF's exceptions:\n" + "\n".join(wrong)


def test_the_checker_sees_a_service_importing_the_rest_framework(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from rest_framework.exceptions import ValidationError\n")
    assert _http_imports({"curation.probe": probe}) == ["probe.py:1 imports rest_framework.exceptions"]
    assert _http_imports({"curation.api.probe": probe, "sampling.api": probe}) == []


def test_the_checker_sees_a_wrong_way_import(tmp_path):
    """The checks above can fail: a curation module importing sampling is caught."""
    probe = tmp_path / "probe.py"
    probe.write_text("from sampling.models import SamplingRun\n\ndef f():\n    from curation import storage\n")
    found = _imports(probe, "curation.probe")
    assert ("sampling.models", True, 1) in found
    assert ("curation.storage", False, 4) in found
    assert LAYERS[_owner("sampling.models")] > LAYERS[_owner("curation.probe")]


def test_every_task_a_service_enqueues_by_name_resolves_in_a_fresh_process():
    """Services name their tasks (winnow.celery.task); a web process that never imported a tasks module finds them."""
    names = sorted(
        {name for path in MODULES.values() for name in re.findall(r'\btask\("([\w.]+)"\)', path.read_text())}
    )
    assert {"sampling.run_sampling", "curation.compute_projection"} <= set(names)
    code = (
        "import django; django.setup()\n"
        "from winnow.celery import task\n"
        f"print(sorted(task(name).name for name in {names!r}))\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "winnow.settings"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == repr(names)
