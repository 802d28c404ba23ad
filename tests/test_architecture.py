"""The layers of docs/architecture.md, checked: imports only go down, and the bridge never
loads the emulator."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "flex_bridge"
# What a layer may not import (prefixes of module names).
FORBIDDEN = {
    "domain": (
        "flex_bridge.adapters",
        "flex_bridge.app",
        "flex_bridge.web",
        "flex_bridge.emulator",
        "flex_bridge.demo",
        "flex_bridge.cli",
        "flex_bridge.settings",
        "asyncio",
        "aiohttp",
        "twilio",
        "quart",
        "hypercorn",
        "sqlite3",
        "socket",
        "http",
        "urllib.request",
        "websockets",
    ),
    "adapters": (
        "flex_bridge.app",
        "flex_bridge.web",
        "flex_bridge.emulator",
        "flex_bridge.demo",
        "flex_bridge.cli",
    ),
    "app": ("flex_bridge.web", "flex_bridge.emulator", "flex_bridge.demo", "flex_bridge.cli"),
    "web": ("flex_bridge.emulator", "flex_bridge.demo", "flex_bridge.cli"),
}
TOP_MODULES = {"__init__.py", "__main__.py", "cli.py", "errors.py", "settings.py"}
MAX_OTHER_TOP_MODULES = 2
MAX_MODULE_LINES = 900


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_only_go_down(layer: str) -> None:
    wrong = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in modules(layer)
        for name in sorted(imports_of(path))
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[layer])
    ]
    assert not wrong, "\n".join(wrong)


def test_importing_the_bridge_loads_no_emulator_module() -> None:
    code = (
        "import sys, flex_bridge.web, flex_bridge.app.services, flex_bridge.cli;"
        "print(sorted(m for m in sys.modules if m.startswith('flex_bridge.emulator')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_package_top_holds_packages_and_a_few_modules() -> None:
    others = {p.name for p in PACKAGE.glob("*.py")} - TOP_MODULES
    assert len(others) <= MAX_OTHER_TOP_MODULES, sorted(others)


def test_no_module_is_over_the_line_limit() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, long
