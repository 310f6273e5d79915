"""The layers of doc/architecture.md hold in the source: the commands (``ravend.cli``) sit on
top, so nothing below them (the service, the stores, ravend-web) imports them, not even inside
a function; and no module reaches for another's private (``_name``) helpers, which is how such
a dependency used to creep in (ravend-web borrowed ``ravenctl report``'s and ``export``'s)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.process import ROOT

PACKAGE = ROOT / "ravend"


def imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, module, names) of every import in a file, function-local ones included."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module, [a.name for a in node.names]


def below_the_commands() -> list[Path]:
    """ravend's modules but the commands and the ``python -m`` entry points (a command)."""
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if PACKAGE / "cli" not in p.parents and p.name != "__main__.py")


def test_nothing_below_the_commands_imports_them() -> None:
    found = [f"{p.relative_to(ROOT)}:{line}: {module} {names}"
             for p in below_the_commands() for line, module, names in imports(p)
             if module == "ravend.cli" or module.startswith("ravend.cli.")
             or (module == "ravend" and "cli" in names)]
    assert found == []


def test_the_web_imports_nothing_from_the_commands() -> None:
    """ravend-web in particular (its modules are all among those checked above)."""
    web = [p for p in below_the_commands() if PACKAGE / "web" in p.parents]
    assert len(web) >= 8
    assert not any(m.startswith("ravend.cli") for p in web for _line, m, _names in imports(p))


def test_no_module_imports_another_modules_private_names() -> None:
    found = [f"{p.relative_to(ROOT)}:{line}: from {module} import {name}"
             for p in sorted(PACKAGE.rglob("*.py")) for line, module, names in imports(p)
             if module.startswith("ravend") for name in names
             if name.startswith("_") and not name.startswith("__")]
    assert found == []
