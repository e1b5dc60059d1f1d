"""The rule of each room (DESIGN.md, "Rooms"): what its modules may import.

Every import statement of a room's files is read, function-level ones included, so a lazy
import cannot slip a dependency in; the influence library is also imported in a fresh
interpreter to check what it pulls in transitively.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TRAINING_SIDE = (
    "avalanche",
    "clbench.runner",
    "clbench.launch",
    "clbench.grid",
    "clbench.training",
    "clbench.strategies",
    "clbench.datasets",
    "clbench.data_path",
    "clbench.studies",
    "clbench.cli",
)
"""What the influence library must not import: it is usable without any of clbench's training."""

ROOM_RULES: dict[str, tuple[str, ...]] = {
    "clbench/influence": TRAINING_SIDE,
    "clbench/report": ("torch", "avalanche", "clbench.runner", "clbench.training", "clbench.strategies"),
    "clbench/training": ("clbench.runner", "clbench.launch", "clbench.grid", "clbench.studies", "clbench.cli"),
    "strategies": ("clbench.runner", "clbench.launch", "clbench.grid", "clbench.studies", "clbench.cli"),
    "datasets": ("clbench.training", "clbench.strategies", "clbench.runner", "clbench.studies"),
    "clbench/metrics.py": ("torch", "avalanche"),
}
"""Room (a folder or a file, relative to the repository) -> module prefixes it must not import."""


def imported_modules(path: Path) -> set[str]:
    """Every module that ``path`` imports anywhere (``from . import`` resolved to absolute names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _breaks(module: str, forbidden: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in forbidden)


def _room_files(room: str) -> list[Path]:
    path = REPO / room
    return [path] if path.is_file() else sorted(path.rglob("*.py"))


@pytest.mark.parametrize("room", sorted(ROOM_RULES))
def test_room_imports_only_what_its_rule_allows(room):
    files = _room_files(room)
    assert files, f"room {room} has no Python files: the rule is stale"
    broken = {
        f"{path.relative_to(REPO)} imports {module}"
        for path in files
        for module in imported_modules(path)
        if _breaks(module, ROOM_RULES[room])
    }
    assert not broken, sorted(broken)


def test_the_rule_reader_sees_a_lazy_import(tmp_path):
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from clbench.runner import execute_run\n    return execute_run\n")
    assert any(_breaks(name, TRAINING_SIDE) for name in imported_modules(module))


def test_the_influence_library_pulls_in_no_training():
    library = sorted(p.stem for p in (REPO / "clbench/influence").glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, sys\n"
        f"for name in {library!r}:\n"
        "    importlib.import_module('clbench.influence.' + name)\n"
        f"print(sorted(m for m in sys.modules if any(m == p or m.startswith(p + '.') for p in {TRAINING_SIDE!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
