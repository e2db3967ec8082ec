"""Lint and types are part of the suite: ruff on the whole tree, mypy --strict on the package (pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    exe = BIN / tool
    assert exe.exists(), f"{tool} is not installed in {BIN} (it is in the [test] extras: pip install -e '.[test]')"
    return subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean() -> None:
    result = _run("ruff", "check", "--no-cache", "exporter", "tests", "bench", "grafana", "zabbix")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_mypy_strict_is_clean() -> None:
    result = _run("mypy", "--no-incremental")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_no_module_over_400_lines() -> None:
    """Every module of the package stays small enough to read in one go."""
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "exporter").rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"


def _imports(path: Path) -> set[str]:
    """The exporter modules that ``path`` imports anywhere (top level, functions, TYPE_CHECKING blocks)."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("exporter"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from exporter import control`
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("exporter"))
    return found


def test_no_import_cycle_in_the_package() -> None:
    """No module of exporter/ imports, directly or not, a module that imports it back."""
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in (ROOT / "exporter").rglob("*.py")}
    modules = {name.removesuffix(".__init__"): path for name, path in modules.items()}
    graph = {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}

    def reaches(start: str, goal: str) -> list[str] | None:
        stack, seen = [[start]], {start}
        while stack:
            trail = stack.pop()
            for following in graph[trail[-1]]:
                if following == goal:
                    return [*trail, goal]
                if following not in seen:
                    seen.add(following)
                    stack.append([*trail, following])
        return None

    cycles = [trail for name in graph if (trail := reaches(name, name)) is not None]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
