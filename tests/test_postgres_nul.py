"""NUL bytes on PostgreSQL (issue 10): a feed with NUL in a title and in content, served on
loopback and fetched into PostgreSQL, is stored clean with every other item of the feed; an
item the database refuses for any other reason fails only itself.

Skipped, with the reason, when no PostgreSQL listens at 127.0.0.1:5432 (under CI=true that is
a failure instead: see tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DataError

from newsexchange.config import Config
from newsexchange.db import Database, Source
from newsexchange.ingest import run_fetch
from tests.test_bad_data import NOW, nul_feed, stored
from tests.test_bad_data import served as served  # the fixture (re-exported for pytest)

pytestmark = pytest.mark.postgres


def test_postgresql_refuses_a_nul_byte_in_text(pg_server_url: Callable[[], str]) -> None:
    """What the fix is for: without cleaning, this is what every fetch of the feed hit."""
    url = pg_server_url()
    Database(url).dispose()  # creates the schema
    engine = create_engine(url)
    try:
        with pytest.raises(DataError, match="NUL"), engine.begin() as c:
            c.execute(text("SELECT CAST(:v AS text)"), {"v": "Kirjasto\x00 avataan"})
    finally:
        engine.dispose()


def test_nul_bytes_in_a_feed_are_stored_clean_on_postgresql_with_the_other_items(
    served: Callable[..., tuple[Config, Database]], pg_server_url: Callable[[], str]
) -> None:
    cfg, db = served(nul_feed(), db_url=pg_server_url())
    assert db.engine.dialect.name == "postgresql"

    report = run_fetch(db, cfg, now=NOW)

    assert report.failed == 0 and report.new_items == 3, report.failures
    items = stored(db)
    assert set(items) == {f"http://example.fi/{i}" for i in range(3)}
    first = items["http://example.fi/0"]
    assert first.title == "Kirjasto avataan"
    assert first.summary_html == "<p>Avajaiset ovat maanantaina.</p>"
    assert first.summary_text == "Avajaiset ovat maanantaina."
    assert items["http://example.fi/2"].title == "Satama avataan"  # the override is gone
    with db.session() as s:
        src = s.get(Source, "a")
        assert src is not None and src.title == "Uutiset" and src.last_error is None

    # Every later fetch works too (the NUL used to fail the feed on every fetch).
    again = run_fetch(db, cfg, now=NOW + timedelta(hours=1))
    assert again.failed == 0 and again.new_items == 0 and len(stored(db)) == 3


def test_one_item_postgresql_refuses_does_not_fail_its_source(
    served: Callable[..., tuple[Config, Database]], pg_server_url: Callable[[], str]
) -> None:
    cfg, db = served(nul_feed(), db_url=pg_server_url())
    with db.session() as s:
        s.execute(
            text("ALTER TABLE items ADD CONSTRAINT refuse_silta CHECK (title NOT LIKE 'Silta%')")
        )

    report = run_fetch(db, cfg, now=NOW)

    out = report.to_json()["results"][0]
    assert out["status"] == "ok" and out["new"] == 2
    assert "1 of 3 items could not be stored: item 2 (http://example.fi/1)" in out["problem"]
    assert "IntegrityError" in out["problem"] and len(out["problem"]) < 400
    assert set(stored(db)) == {"http://example.fi/0", "http://example.fi/2"}
