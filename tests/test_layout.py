"""Package boundaries that the layout promises."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_collector_imports_no_policy_side() -> None:
    files = sorted((ROOT / "collector").rglob("*.py"))
    assert files
    for path in files:
        forbidden = imported_modules(path) & {"regorus", "certposture", "typer"}
        assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}"


def test_collector_runs_without_regorus(tmp_path: Path) -> None:
    """Collect with regorus and certposture made unimportable, as on a device that has only the collector."""
    code = (
        "import sys; sys.modules['regorus'] = None; sys.modules['certposture'] = None\n"
        "from collector.collect import Locations, collect\n"
        "facts = collect(Locations(paths=(sys.argv[1],)), [], hostname='h', serial_number='s')\n"
        "print(facts.device.hostname)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "h"
