"""The package keeps its shape (issue 12): package faces only re-export, imports run one way
with no cycles, the project's own modules are never imported inside a function, and SQL lives
in ``newsexchange/db/``. Read from the source with ``ast`` (tests/structure.py), so a failure
names the file and line.

Lazy imports are allowed for the third-party libraries in ``structure.LAZY_THIRD_PARTY`` only
(heavy or optional ones, each named there with why), in the manner of reader's
``tests/test_lazy_imports.py``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests import structure

FILES = structure.source_files()


def test_package_faces_only_re_export() -> None:
    assert structure.init_logic(FILES) == []


def test_no_own_module_is_imported_inside_a_function() -> None:
    assert structure.lazy_own_imports(FILES) == []


def test_only_listed_third_party_libraries_are_imported_lazily() -> None:
    assert structure.lazy_unlisted_imports(FILES) == []


def test_sqlalchemy_is_imported_only_in_the_storage_layer() -> None:
    assert structure.sqlalchemy_outside_db(FILES) == []


def test_no_import_cycles() -> None:
    assert structure.cycles(structure.import_graph(FILES)) == []


LAYERS: dict[str, int] = {
    # the bottom: shared by everyone, importing nothing above it
    "newsexchange.errors": 0,
    "newsexchange.clock": 0,
    "newsexchange.private": 0,
    "newsexchange.textclean": 0,
    "newsexchange.common": 0,
    "newsexchange.common.leases": 2,  # a lease is a row: it speaks to the database
    "newsexchange.i18n": 0,
    "newsexchange.logs": 1,
    "newsexchange.config": 1,
    "newsexchange.db": 1,
    "newsexchange.templating": 1,
    "newsexchange.mail": 2,
    "newsexchange.mailheaders": 2,
    # the steps
    "newsexchange.ingest": 3,
    "newsexchange.translate": 3,
    "newsexchange.digest": 3,
    "newsexchange.approval": 4,
    "newsexchange.delivery": 4,
    "newsexchange.alerts": 4,
    "newsexchange.impact": 5,  # reads what delivery and ingest wrote
    # what drives them
    "newsexchange.service": 6,
    "newsexchange.web": 7,
    "newsexchange.commands": 7,
    "newsexchange.cli": 8,
}


def _layer(module: str) -> tuple[str, int] | None:
    best = None
    for prefix, level in LAYERS.items():
        if (module == prefix or module.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(best[0])
        ):
            best = (prefix, level)
    return best


def test_imports_run_one_way() -> None:
    """cli / web / service → steps → mail / db / common: nothing imports a layer above it."""
    upward = []
    for module, deps in structure.import_graph(FILES).items():
        mine = _layer(module)
        if mine is None:
            continue
        for dep in deps:
            theirs = _layer(dep)
            if theirs and theirs[0] != mine[0] and theirs[1] > mine[1]:
                upward.append(f"{module} imports {dep}")
    assert sorted(upward) == []


def test_every_module_has_a_layer() -> None:
    names = sorted(structure.module_name(f) for f in FILES)
    unplaced = [
        n for n in names if _layer(n) is None and n not in ("newsexchange", "newsexchange.__main__")
    ]
    assert unplaced == []


@pytest.mark.parametrize(
    ("checker", "source", "expected"),
    [
        (structure.lazy_own_imports, "def f():\n    from newsexchange import db\n", 1),
        (structure.lazy_own_imports, "from newsexchange import db\n", 0),
        (structure.lazy_unlisted_imports, "def f():\n    import requests\n", 1),
        (structure.lazy_unlisted_imports, "def f():\n    import py3langid\n", 0),
        (structure.sqlalchemy_outside_db, "from sqlalchemy import select\n", 1),
        (
            structure.sqlalchemy_outside_db,
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sqlalchemy\n",
            0,
        ),
    ],
)
def test_the_checks_catch_what_they_claim(checker, source, expected, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """Each check fires on a planted file (so an empty list above means something)."""
    pkg = tmp_path / "newsexchange" / "planted"
    pkg.mkdir(parents=True)
    f = pkg / "mod.py"
    f.write_text(source)
    monkeypatch.setattr(structure, "ROOT", tmp_path)
    assert len(checker([f])) == expected


def test_init_with_logic_is_caught(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pkg = tmp_path / "newsexchange" / "planted"
    pkg.mkdir(parents=True)
    good = pkg / "__init__.py"
    good.write_text('"""Doc."""\nfrom .a import b\n\n__all__ = ["b"]\n')
    monkeypatch.setattr(structure, "ROOT", tmp_path)
    assert structure.init_logic([good]) == []
    good.write_text('"""Doc."""\ndef helper():\n    return 1\n')
    assert len(structure.init_logic([good])) == 1


def test_a_planted_cycle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert structure.cycles(graph) == [["a", "b", "c"]]


def test_the_cli_loads_no_step_until_a_command_runs() -> None:
    """``newsexchange --help`` and ``check`` stay quick: importing the CLI loads the config and
    the database layer, not the steps, the web app or their libraries; each command's handler
    imports the step it runs (the one allowed lazy import, structure.LAZY_IN_COMMANDS)."""
    code = (
        "import sys, newsexchange.cli\n"
        "print(sorted({m.split('.')[0] if not m.startswith('newsexchange') else "
        "'.'.join(m.split('.')[:2]) for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(eval(out.stdout))  # noqa: S307 - our own subprocess's repr of a list
    steps = {f"newsexchange.{s}" for s in ("ingest", "translate", "digest", "approval",
                                           "delivery", "mail", "service", "web", "alerts", "impact")}  # fmt: skip
    heavy = {"httpx", "httpcore", "feedparser", "numpy", "bs4", "lxml", "apscheduler",
             "starlette", "uvicorn", "prometheus_client", "rich", "py3langid", "jinja2"}  # fmt: skip
    assert sorted(loaded & (steps | heavy)) == []
    assert "newsexchange.commands" in loaded  # the check sees the CLI's modules at all
