"""The house rules, read from the source: the floor plan of `gateway/`, module size, no import cycles,
and imports that only go the way a request flows (docs/concepts/architecture.md)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GATEWAY = ROOT / "gateway"
ROOMS = {"server", "apis", "cascade", "upstream", "telemetry", "ops", "config", "local", "evaluation"}
ROOT_MODULES = {"__init__.py", "protocol.py", "errors.py", "jsonio.py", "sse.py", "cli.py"}
MAX_LINES = 400


def modules() -> Iterator[tuple[str, Path]]:
    for package in ("gateway", "policies"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports_of(name: str, path: Path) -> set[str]:
    """Our modules `name` imports at module level (function-level imports are lazy on purpose)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, `level - 1` packages up
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    known = dict(modules())
    return {module for module in found if module in known and module != name}


def graph() -> dict[str, set[str]]:
    return {name: imports_of(name, path) for name, path in modules()}


def test_the_floor_plan_shows_the_rooms() -> None:
    entries = {p.name for p in GATEWAY.iterdir() if p.name != "__pycache__"}
    rooms = {name for name in entries if (GATEWAY / name).is_dir()}
    assert rooms == ROOMS
    assert entries - rooms == ROOT_MODULES
    for room in rooms:
        assert (GATEWAY / room / "__init__.py").read_text().strip(), f"gateway/{room} says nothing of what it is for"


def test_no_module_is_over_the_size_of_one_job() -> None:
    for folder in ("gateway", "policies", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            lines = len(path.read_text().splitlines())
            assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines"


def test_no_import_cycles() -> None:
    edges = graph()
    state: dict[str, str] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            assert state.get(nxt) != "open", "import cycle: " + " -> ".join([*stack, node, nxt])
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])


def test_imports_follow_the_request() -> None:
    """Only the server mounts the APIs; policies never reach up into the gateway; the root contracts
    import nothing of ours but each other."""
    for name, targets in graph().items():
        for target in targets:
            if target.startswith("gateway.apis"):
                assert name.startswith(("gateway.apis", "gateway.server")), f"{name} imports the API {target}"
            if name.startswith("policies"):
                assert not target.startswith("gateway"), f"{name} imports {target}"
            if name in {"gateway.protocol", "gateway.errors", "gateway.jsonio", "gateway.sse"}:
                assert target in {"gateway.jsonio", "gateway"}, f"the contract {name} imports {target}"
