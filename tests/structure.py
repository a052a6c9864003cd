"""The package's shape, read from its source (``ast``, nothing imported): which modules import
which, where imports sit inside functions, what each package ``__init__.py`` holds.

Used by ``tests/test_structure.py``; ``python tests/structure.py [PATH…]`` prints every
violation under PATH (default: the whole package) — handy while moving code.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "newsexchange"
ROOT = PACKAGE.parent

#: Third-party imports that stay inside functions on purpose: each is heavy, optional or only
#: needed on one path (language model, Argos, the rich progress bar, the feed generator, the
#: metrics library, Alembic on start, the SendGrid client, the IMAP client, uvicorn). The
#: ingest paths few sources take are imported where they run (issue 16: ~20 MB a plain-feed
#: fetch no longer loads): trafilatura (``fulltext: true``, and it pulls py3langid and numpy),
#: extruct and bs4 (``kind: html``), icalendar and recurring_ical_events (``kind: ical``).
LAZY_THIRD_PARTY = frozenset(
    {
        "py3langid", "argostranslate", "rich", "feedgen", "prometheus_client", "alembic",
        "sendgrid", "python_http_client", "imapclient", "uvicorn",
        "psycopg", "brotli", "brotlicffi", "yaml",
        "procrastinate",  # PostgreSQL only (the work queue); SQLite installs run without it
        "trafilatura", "extruct", "bs4", "icalendar", "recurring_ical_events",  # ingest paths
    }
)  # fmt: skip

#: The one place the project's own modules may be imported inside a function: a command's
#: handler in ``newsexchange/commands/`` imports the step it runs, so that ``newsexchange
#: --help`` or ``check`` does not load every step (httpx, feedparser, numpy, APScheduler,
#: Starlette …). Nothing imports the commands, so no cycle can hide there;
#: ``tests/test_structure.py::test_the_cli_loads_no_step_until_a_command_runs`` pins it.
#: The configuration (pydantic) and the storage layer (SQLAlchemy, 279 ms to import) are
#: imported the same way, so that ``--help`` loads neither and ``check`` no SQLAlchemy
#: (issue 16; ``tests/test_startup.py`` pins it).
LAZY_IN_COMMANDS = (
    "newsexchange.config", "newsexchange.db", "newsexchange.ingest", "newsexchange.translate", "newsexchange.digest",
    "newsexchange.approval", "newsexchange.delivery", "newsexchange.mail",
    "newsexchange.service", "newsexchange.web", "newsexchange.alerts", "newsexchange.impact",
)  # fmt: skip

#: Where SQLAlchemy may be imported: the storage layer (and its migrations).
SQLALCHEMY_HOME = ("newsexchange/db/",)


@dataclass(frozen=True)
class Import:
    path: str  # relative to the repo, e.g. newsexchange/ingest/step.py
    line: int
    module: str  # the absolute module imported
    in_function: bool
    type_checking: bool


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, path: Path) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        pkg = module_name(path).split(".")
        if path.name != "__init__.py":
            pkg = pkg[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([node.module] if node.module else []))
    if node.module is None:  # from . import a, b
        return [f"{base}.{a.name}" for a in node.names]
    return [base]


def imports(path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    rel = str(path.relative_to(ROOT))

    def walk(node: ast.AST, in_fn: bool, tc: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            fn = in_fn or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            is_tc = tc or (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test))
            if isinstance(child, ast.Import):
                for a in child.names:
                    yield Import(rel, child.lineno, a.name, in_fn, tc)
            elif isinstance(child, ast.ImportFrom):
                for m in _resolve(child, path):
                    yield Import(rel, child.lineno, m, in_fn, tc)
            yield from walk(child, fn, is_tc)

    yield from walk(tree, False, False)


def source_files(under: Path = PACKAGE) -> list[Path]:
    return sorted(under.rglob("*.py"))


def lazy_own_imports(files: list[Path]) -> list[str]:
    out = []
    for f in files:
        for imp in imports(f):
            if imp.in_function and imp.module.split(".")[0] == "newsexchange":
                if imp.path.startswith("newsexchange/commands/") and imp.module.startswith(
                    LAZY_IN_COMMANDS
                ):
                    continue
                out.append(f"{imp.path}:{imp.line}: imports {imp.module} inside a function")
    return out


def lazy_unlisted_imports(files: list[Path]) -> list[str]:
    out = []
    stdlib = sys.stdlib_module_names
    for f in files:
        for imp in imports(f):
            top = imp.module.split(".")[0]
            if (
                imp.in_function
                and top != "newsexchange"
                and top not in stdlib
                and top not in LAZY_THIRD_PARTY
            ):
                out.append(f"{imp.path}:{imp.line}: imports {imp.module} inside a function")
    return out


def sqlalchemy_outside_db(files: list[Path]) -> list[str]:
    out = []
    for f in files:
        rel = str(f.relative_to(ROOT))
        if rel.startswith(SQLALCHEMY_HOME):
            continue
        for imp in imports(f):
            if imp.module.split(".")[0] == "sqlalchemy" and not imp.type_checking:
                out.append(f"{imp.path}:{imp.line}: imports {imp.module} outside newsexchange/db/")
    return out


def init_logic(files: list[Path]) -> list[str]:
    """A package ``__init__.py`` may hold a docstring, imports, ``__all__`` (and the top package
    its ``__version__``) and nothing else — but a module ``__getattr__`` (PEP 562) that
    re-exports lazily, so that importing one submodule does not load the package's heavy face
    (``newsexchange.ingest``: ``check --sources`` imports the watchdog without the fetch step,
    issue 16)."""
    out = []
    for f in files:
        if f.name != "__init__.py" or "migrations" in f.parts:
            continue
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for i, node in enumerate(tree.body):
            if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue
            if isinstance(node, ast.Import | ast.ImportFrom):
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
                continue
            targets = (
                [t for t in node.targets if isinstance(t, ast.Name)]
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                else []
            )
            if targets and all(t.id in ("__all__", "__version__") for t in targets):  # type: ignore[union-attr]
                continue
            out.append(
                f"{f.relative_to(ROOT)}:{node.lineno}: a package __init__ holds "
                f"{type(node).__name__}, not only re-exports"
            )
    return out


def import_graph(files: list[Path]) -> dict[str, set[str]]:
    """Module → the project's modules it imports at module level (type-only imports left out)."""
    names = {module_name(f) for f in files}
    graph: dict[str, set[str]] = {}
    for f in files:
        me = module_name(f)
        deps = graph.setdefault(me, set())
        for imp in imports(f):
            if imp.in_function or imp.type_checking or not imp.module.startswith("newsexchange"):
                continue
            target = imp.module
            while target and target not in names:
                target = target.rpartition(".")[0]
            if target and target != me:
                deps.add(target)
            # importing a.b.c runs a/__init__ and a/b/__init__ too
            parts = imp.module.split(".")
            for k in range(2, len(parts)):
                parent = ".".join(parts[:k])
                if parent in names and parent != me and not me.startswith(parent + "."):
                    deps.add(parent)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def report(paths: list[str]) -> list[str]:
    every = source_files()
    chosen = (
        [f for f in every if any(str(f).startswith(str(Path(p).resolve())) for p in paths)]
        if paths
        else every
    )
    problems = (
        lazy_own_imports(chosen)
        + lazy_unlisted_imports(chosen)
        + sqlalchemy_outside_db(chosen)
        + init_logic(chosen)
    )
    wanted = {module_name(f) for f in chosen}
    for comp in cycles(import_graph(every)):
        if wanted & set(comp):
            problems.append("import cycle: " + " -> ".join(comp))
    return problems


if __name__ == "__main__":
    found = report(sys.argv[1:])
    print("\n".join(found) if found else "no problems")
    sys.exit(1 if found else 0)
