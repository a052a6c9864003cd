"""The service, the CLI and the web app are wired by explicit lists of plain imports (no
module is looked up by name at run time, so a part cannot be "unavailable"): each list names
every part there is."""

from __future__ import annotations

import ast
from pathlib import Path

from newsexchange import cli
from newsexchange.web import app

PACKAGE = Path(__file__).resolve().parent.parent / "newsexchange"


def _defines(path: Path, name: str) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body)


def test_every_command_module_is_in_the_cli_list() -> None:
    modules = {
        f"newsexchange.commands.{p.stem}"
        for p in (PACKAGE / "commands").glob("*.py")
        if _defines(p, "register")
    }
    assert {register.__module__ for register in cli.COMMANDS} == modules
    assert len(cli.COMMANDS) == len(modules)


def test_every_module_with_routes_is_in_the_web_list() -> None:
    modules = {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        for p in PACKAGE.rglob("*.py")
        if _defines(p, "routes")
    }
    assert {routes.__module__ for routes in app.ROUTES} == modules
    assert len(app.ROUTES) == len(modules)
