"""`agents/` (the loop) must not depend on `evals/`: evals build on the loop, not the other way round."""

from __future__ import annotations

import ast
from pathlib import Path

import loopmeter

ROOT = Path(loopmeter.__file__).parent
AGENTS = ROOT / "agents"


def imported_modules(source: str, package: str) -> set[str]:
    """Every module `source` imports, at any depth (lazy imports inside functions included),
    relative imports resolved against `package`; `from a import b` yields both a and a.b."""
    parts = package.split(".")
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = parts[:len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_imported_modules_sees_lazy_and_relative_imports() -> None:
    source = "def f():\n    from ..evals import task\n    import loopmeter.evals.report\nfrom . import loop\n"
    found = imported_modules(source, "loopmeter.agents")
    assert {"loopmeter.evals", "loopmeter.evals.task", "loopmeter.evals.report", "loopmeter.agents.loop"} <= found


def test_agents_import_nothing_from_evals() -> None:
    files = sorted(AGENTS.rglob("*.py"))
    assert len(files) > 10
    offenders = sorted(
        f"{path.relative_to(ROOT)}: {module}"
        for path in files
        for module in imported_modules(path.read_text(), ".".join(["loopmeter", *path.parent.relative_to(ROOT).parts]))
        if module == "loopmeter.evals" or module.startswith("loopmeter.evals.")
    )
    assert not offenders, "agents/ imports evals/ (the task format is loopmeter/tasks.py):\n" + "\n".join(offenders)
