"""Start-up stays quick (issue 16): ``--help`` loads neither the configuration's libraries nor
the database's, ``check`` loads no SQLAlchemy, a command on a current schema never imports
Alembic, and libyaml reads feeds.yaml while every mistake keeps the pure-Python loader's
``file:line`` message. Asserted on what a real process imports, never on its speed
(``benchmarks/startup.py`` prints the times)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from newsexchange.config import load_config_text, yaml_lines
from newsexchange.db import HEAD_REVISION, Database
from newsexchange.db.engine import stored_revision
from newsexchange.db.queries.watchdog import head_revision
from newsexchange.errors import ConfigError
from tests.probe import run_cli

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "feeds.yaml"


def _run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, set[str]]:
    return run_cli(*argv, env=env)


def _db_env(url: str) -> dict[str, str]:
    return {"NEWSEXCHANGE_DATABASE_URL": url}


def test_help_imports_neither_the_database_nor_the_config_libraries() -> None:
    code, out, loaded = _run("--help")
    assert code == 0
    assert "usage: newsexchange" in out
    assert sorted(loaded & {"sqlalchemy", "alembic", "yaml", "pydantic"}) == []


def test_a_commands_help_loads_no_database_either() -> None:
    code, out, loaded = _run("digest", "show", "--help")
    assert code == 0
    assert "--format" in out
    assert sorted(loaded & {"sqlalchemy", "alembic", "yaml", "pydantic"}) == []


def test_check_reads_the_config_without_sqlalchemy_or_alembic() -> None:
    code, out, loaded = _run("check", "--config", str(BUNDLED), "--json")
    assert code == 0
    assert json.loads(out)["ok"] is True
    assert "yaml" in loaded and "pydantic" in loaded  # it did read the configuration
    assert sorted(loaded & {"sqlalchemy", "alembic"}) == []


def test_check_sources_on_a_current_schema_does_not_import_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/current.db"
    Database(url).dispose()  # created and migrated: at the head
    code, out, loaded = _run(
        "check", "--sources", "--config", str(BUNDLED), "--json", env=_db_env(url)
    )
    assert code == 0, out
    assert "error" not in json.loads(out)["watchdog"]
    assert "sqlalchemy" in loaded  # it did read the database
    assert "alembic" not in loaded


def test_a_command_on_a_current_schema_does_not_import_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/current.db"
    Database(url).dispose()
    code, out, loaded = _run("items", "--config", str(BUNDLED), "--json", env=_db_env(url))
    assert code == 0, out
    assert json.loads(out)["count"] == 0
    assert "alembic" not in loaded


def test_a_schema_behind_is_still_reported_by_check_sources(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/behind.db"
    db = Database(url)
    with db.engine.begin() as c:
        c.exec_driver_sql("UPDATE alembic_version SET version_num = '0006'")
    db.dispose()
    code, out, _ = _run("check", "--sources", "--config", str(BUNDLED), "--json", env=_db_env(url))
    assert code == 1
    assert json.loads(out)["watchdog"]["error"] == (
        f"the database schema is at revision 0006, this version needs {HEAD_REVISION} "
        "(run newsexchange migrate)"
    )


def test_a_schema_behind_is_still_migrated_on_open(tmp_path: Path) -> None:
    """The quick path skips Alembic only at the head: one migration behind, it runs."""
    url = f"sqlite:///{tmp_path}/behind.db"
    db = Database(url)
    with db.engine.begin() as c:  # back to 0006: undo what 0007 made
        c.exec_driver_sql("ALTER TABLE items DROP COLUMN cancelled_at")
        c.exec_driver_sql("UPDATE alembic_version SET version_num = '0006'")
    db.dispose()
    db = Database(url)
    try:
        assert stored_revision(db.engine) == HEAD_REVISION
        with db.engine.connect() as c:
            columns = {row[1] for row in c.exec_driver_sql("PRAGMA table_info(items)")}
        assert "cancelled_at" in columns
    finally:
        db.dispose()


def test_a_new_database_has_no_stored_revision_until_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new.db"
    db = Database(url, run_migrations=False)
    try:
        assert stored_revision(db.engine) is None
    finally:
        db.dispose()


def test_the_head_constant_is_alembics_head() -> None:
    """A new migration must move HEAD_REVISION too, or a database one behind would be
    taken for current and never migrated."""
    assert head_revision() == HEAD_REVISION


# -- YAML: libyaml where present, the pure loader's messages ------------------------------------


def _pure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yaml_lines, "_FAST_LOADER", None)


def test_libyaml_reads_the_config_where_pyyaml_has_it() -> None:
    if not yaml.__with_libyaml__:
        pytest.skip("PyYAML built without libyaml: the pure loader is all there is")
    assert yaml_lines._FAST_LOADER is yaml.CSafeLoader


@pytest.mark.parametrize(
    "path", [BUNDLED, *sorted((ROOT / "tests" / "data").rglob("*.yaml"))[:20]], ids=str
)
def test_both_loaders_give_the_same_data_and_lines(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = path.read_text(encoding="utf-8")

    def read() -> object:
        try:
            return yaml_lines.compose(text, path.name)
        except ConfigError as exc:
            return str(exc)

    fast = read()
    _pure(monkeypatch)
    assert fast == read()


BAD_YAML = {
    "unclosed flow list": "timezone: UTC\nsources: [a, b\nregions: {}\n",
    "bad indentation": "timezone: UTC\nregions:\n  fi:\n    name: x\n   language: fi\n",
    "tab indentation": "timezone: UTC\nregions:\n\tfi: {}\n",
    "unclosed quote": 'timezone: "UTC\nregions: {}\n',
    "duplicate key": "timezone: UTC\nregions: {}\ntimezone: UTC\n",
    "non-printable character": "timezone: UTC\x07\nregions: {}\n",
    "bad alias": "timezone: *nowhere\n",
    "two documents": "timezone: UTC\n---\ntimezone: UTC\n",
    "unhashable key": "? [a, b]\n: 1\n",
    # what libyaml would accept and the pure loader refuses (yaml_lines._pure_only)
    "tab after a colon": "timezone:\tUTC\nregions: {}\n",
    "tab before a comment": "timezone: UTC\t# here\nregions: {}\n",
    "tab in a flow list": "timezone: UTC\nsources: [a,\tb]\n",
    "question mark in a flow list": "timezone: UTC\nsources: [a ?]\n",
    "question mark in a flow mapping": "timezone: UTC\nregions: {fi: x ?}\n",
    "query string in a flow mapping": "sources:\n  - {id: a, url: https://x.org/f?a=1}\n",
}


@pytest.mark.parametrize("text", BAD_YAML.values(), ids=BAD_YAML.keys())
def test_a_yaml_mistake_keeps_the_pure_loaders_file_and_line(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError) as fast:
        load_config_text(text, filename="feeds.yaml", env={})
    _pure(monkeypatch)
    with pytest.raises(ConfigError) as pure:
        load_config_text(text, filename="feeds.yaml", env={})
    assert str(fast.value) == str(pure.value)
    assert fast.value.line is not None
    assert str(fast.value).startswith(f"feeds.yaml:{fast.value.line}: ")


def test_a_query_string_in_block_style_keeps_the_fast_path() -> None:
    """A feed URL's query string in block style is no reason to give up libyaml."""
    assert not yaml_lines._pure_only("sources:\n  - url: https://example.org/f?lang=fi\n")
    assert not yaml_lines._pure_only(BUNDLED.read_text(encoding="utf-8"))


def test_an_unclosed_list_names_its_line() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config_text(BAD_YAML["unclosed flow list"], filename="feeds.yaml", env={})
    assert str(exc.value).startswith("feeds.yaml:3: invalid YAML: ")
