"""The writer stores a batch of sources in a few statements (issue 16), on SQLite and
PostgreSQL: one lookup of stored items for the whole batch, one multi-row INSERT … RETURNING
a source (no select for the ids), and story groups that come out as when the sources are
written one by one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from newsexchange.config import Config
from newsexchange.db import Database, Item, StoryGroup
from newsexchange.db.queries.items import find_stored, insert_items
from newsexchange.db.queries.sources import insert_sources
from newsexchange.ingest.decide import SourceState
from newsexchange.ingest.fetch import FetchResult
from newsexchange.ingest.fetched import Fetched
from newsexchange.ingest.writer import Writer
from tests.test_ingest import FI_STORIES, NOW, fi_items, rss

SOURCES = [f"s{i:02d}" for i in range(20)]


def _sources(ids: list[str]) -> str:
    lines = ["sources:"]
    for sid in ids:
        lines.append(
            f'  - {{id: {sid}, region: joensuu, language: fi, url: "http://127.0.0.1:9/{sid}"}}'
        )
    return "\n".join(lines) + "\n"


@pytest.fixture
def store(
    write_config: Callable[..., Config], any_db_url: str
) -> Iterator[tuple[Config, Database]]:
    cfg = write_config(_sources(SOURCES))
    db = Database(any_db_url)
    with db.session() as s:
        insert_sources(s, [{"id": sid, "config_url": "u", "url": "u"} for sid in SOURCES])
    yield cfg, db
    db.dispose()


def fetched(cfg: Config, sid: str, body: bytes) -> Fetched:
    src = next(s for s in cfg.sources if s.id == sid)
    url = f"http://127.0.0.1:9/{sid}"
    result = FetchResult(url, url, 200, False, body, "application/rss+xml", None, None)
    return Fetched(src, SourceState(sid, url), result, None)


class Statements:
    """The SQL an engine runs, as text."""

    def __init__(self, db: Database) -> None:
        self.seen: list[str] = []
        event.listen(db.engine, "before_cursor_execute", self._on)

    def _on(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.seen.append(" ".join(statement.split()).upper())

    def count(self, start: str, table: str) -> int:
        return sum(1 for s in self.seen if s.startswith(start) and f" {table.upper()}" in s)


def test_a_batch_is_looked_up_once_and_each_source_inserted_in_one_statement(
    store: tuple[Config, Database],
) -> None:
    cfg, db = store
    # Every source carries the same guids and links: one source's items must never count as
    # another's in the batch's shared lookup.
    body = rss(fi_items(5, prefix="same"))
    sql = Statements(db)
    out = Writer(db, cfg, now=NOW).write([fetched(cfg, sid, body) for sid in SOURCES])
    assert [(o.source, o.new, o.updated, o.unchanged) for o in out] == [
        (sid, 5, 0, 0) for sid in SOURCES
    ]
    assert sql.count("INSERT INTO", "items") == len(SOURCES)
    # Two lookups for the batch (by identity, by link) and the story index's load; no select
    # for the ids of what was inserted.
    assert sql.count("SELECT", "items") == 3

    changed = fi_items(5, prefix="same")
    changed[0]["description"] = "Kaupunki kertoi tiistaina, että kirjasto avataan vasta syksyllä."
    sql.seen.clear()
    out = Writer(db, cfg, now=NOW + timedelta(minutes=30)).write(
        [fetched(cfg, sid, rss(changed)) for sid in SOURCES]
    )
    assert [(o.new, o.updated, o.unchanged) for o in out] == [(0, 1, 4)] * len(SOURCES)
    assert sql.count("SELECT", "items") == 3
    with db.session() as s:
        assert len(s.scalars(select(Item.id)).all()) == 5 * len(SOURCES)


def _groups(db: Database) -> tuple[list[tuple[str, str | None, int | None]], list[str]]:
    with db.session() as s:
        items = [
            (i.source_id, i.guid, i.story_group_id)
            for i in s.scalars(select(Item).order_by(Item.id))
        ]
        groups = [g.fingerprint for g in s.scalars(select(StoryGroup).order_by(StoryGroup.id))]
    return items, groups


def test_story_groups_of_one_batch_are_those_of_the_sources_written_one_by_one(
    write_config: Callable[..., Config], any_db_url: str, tmp_path: Any
) -> None:
    ids = SOURCES[:4]
    cfg = write_config(_sources(ids))

    def feed(sid: str, n: int) -> bytes:
        # The same two stories in every source (another source's copy joins the group),
        # worded a little differently, and one story of its own.
        title, text = FI_STORIES[0]
        other_title, other_text = FI_STORIES[1]
        own = FI_STORIES[2]
        items = [
            {"title": f"{title} ({n})", "guid": f"{sid}-a", "description": text},
            {"title": other_title, "guid": f"{sid}-b", "description": f"{other_text} {n}"},
            {"title": f"{own[0]} {sid}", "guid": f"{sid}-c", "description": f"{sid}: {own[1]}"},
        ]
        for it in items:
            it["link"] = f"http://example.fi/{it['guid']}"
            it["pubDate"] = NOW.strftime("%a, %d %b %Y %H:%M:%S +0000")
        return rss(items)  # type: ignore[arg-type]

    results = []
    for together, url in ((True, any_db_url), (False, f"sqlite:///{tmp_path}/alone.db")):
        db = Database(url)
        with db.session() as s:
            insert_sources(s, [{"id": sid, "config_url": "u", "url": "u"} for sid in ids])
        writer = Writer(db, cfg, now=NOW)
        batch = [fetched(cfg, sid, feed(sid, n)) for n, sid in enumerate(ids)]
        if together:
            writer.write(batch)
        else:
            for f in batch:
                writer.write([f])
        results.append(_groups(db))
        db.dispose()
    together_items, together_groups = results[0]
    assert results[0] == results[1]
    grouped = [g for _sid, _guid, g in together_items if g is not None]
    assert together_groups and len(grouped) >= 2 * len(together_groups)


def test_insert_items_gives_every_id_also_of_a_row_stored_meanwhile(
    store: tuple[Config, Database],
) -> None:
    _cfg, db = store

    def row(identity: str) -> dict[str, Any]:
        return {
            "source_id": "s00",
            "identity": identity,
            "guid": identity,
            "link": f"http://example.fi/{identity}",
            "title": identity,
            "region": "joensuu",
            "language": "fi",
            "published_at": NOW,
            "first_seen_at": NOW,
            "updated_at": NOW,
            "content_hash": identity,
        }

    with db.session() as s:
        first = insert_items(s, [row("x")])
    with db.session() as s:  # another run stored "x" meanwhile: skipped, its id given
        both = insert_items(s, [row("x"), row("y")])
    assert both["x"] == first["x"] and set(both) == {"x", "y"}
    with db.session() as s:
        found = find_stored(s, {"s00": ({"y"}, {"http://example.fi/x"}), "s01": ({"x"}, set())})
        item = s.get(Item, both["y"])
        assert item is not None and item.published_at == NOW and item.first_seen_at == NOW
    assert sorted(r[1] for r in found["s00"]) == ["x", "y"] and found["s01"] == []
