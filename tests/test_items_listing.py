"""``newsexchange items --json``: streamed item by item, the same bytes as before, in the
memory of one batch (SQLite and PostgreSQL)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select

from newsexchange.commands import to_json
from newsexchange.commands.ingest import _item_json
from newsexchange.config import Config
from newsexchange.db import Database, Item, Source, Translation
from newsexchange.db.queries import listing
from newsexchange.db.queries.items import latest_items
from tests.conftest import BASE_CONFIG
from tests.test_approval import run_cli

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def listing_config(write_config: Callable[..., Config], url: str) -> Config:
    base = BASE_CONFIG.replace("sqlite:///var/test.db", url)
    return write_config(
        """
sources:
  - {id: a, region: joensuu, language: fi, url: "https://a.example/rss"}
  - {id: b, region: petrozavodsk, language: ru, url: "https://b.example/rss"}
""",
        base=base,
    )


def seed(db: Database, n: int) -> None:
    with db.session() as s:
        s.execute(insert(Source), [{"id": x, "config_url": "u", "url": "u"} for x in "ab"])
        s.execute(
            insert(Item),
            [
                {
                    "source_id": "ab"[i % 2],
                    "identity": f"i{i}",
                    "link": f"https://x.example/{i}",
                    "title": f"item {i} «ä»",
                    "summary_text": f"text {i}",
                    "region": ("joensuu", "petrozavodsk")[i % 2],
                    "language": ("fi", "ru")[i % 2],
                    "published_at": T0 + timedelta(minutes=i // 3),  # ties: by id then
                    "content_hash": str(i),
                }
                for i in range(n)
            ],
        )
        ids = list(s.scalars(select(Item.id)))
        s.execute(
            insert(Translation),
            [
                {"item_id": i, "language": "en", "title": f"en {i}", "status": "done"}
                for i in ids
                if i % 3
            ],
        )


@pytest.mark.parametrize(
    "args",
    [
        ("--limit", "20"),
        ("--limit", "1000"),
        ("--limit", "7", "--source", "b"),
        ("--limit", "5", "--region", "joensuu"),
    ],
)
def test_items_json_is_the_whole_listing_written_as_it_streams(
    write_config: Callable[..., Config],
    any_db_url: str,
    db_for: Callable[[Config], Database],
    args: tuple[str, ...],
) -> None:
    cfg = listing_config(write_config, any_db_url)
    db = db_for(cfg)
    seed(db, 300)
    code, out = run_cli(cfg, "items", "--json", *args)
    assert code == 0
    opts = dict(zip(args[::2], args[1::2], strict=True))
    with db.session() as s:
        rows = latest_items(
            s,
            limit=int(opts["--limit"]),
            source_id=opts.get("--source"),
            region=opts.get("--region"),
        )
        expected = {"ok": True, "count": len(rows), "items": [_item_json(it) for it in rows]}
        assert out == to_json(expected) + "\n"


def test_items_json_of_an_empty_database(
    write_config: Callable[..., Config], tmp_path: object, db_for: Callable[[Config], Database]
) -> None:
    cfg = listing_config(write_config, f"sqlite:///{tmp_path}/empty.db")
    db_for(cfg).dispose()
    code, out = run_cli(cfg, "items", "--json")
    assert code == 0 and out == '{"ok": true, "count": 0, "items": []}\n'


def test_the_listing_holds_one_batch_of_items_not_the_whole_listing(
    write_config: Callable[..., Config],
    tmp_path: object,
    db_for: Callable[[Config], Database],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = listing_config(write_config, f"sqlite:///{tmp_path}/many.db")
    db = db_for(cfg)
    seed(db, 3000)
    monkeypatch.setattr(listing, "BATCH", 100)
    most = 0
    with db.session() as s:
        count, items = listing.stream_items(s, limit=3000)
        seen = 0
        for it in items:
            seen += 1
            del it
            if seen % 250 == 0:
                gc.collect()
                most = max(most, sum(1 for o in s.identity_map.values() if isinstance(o, Item)))
    assert count == seen == 3000
    assert 0 < most <= 300  # a batch or two, never the 3,000
