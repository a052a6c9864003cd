"""Large digests: the database ranks each source's section and only the best reach Python,
and the digest is the one ranking every candidate gives (SQLite and PostgreSQL).

Each test builds a digest ranking every candidate, then rebuilds it with the database's
pre-ranking forced on (``RANK_ALL_UP_TO = 0``): the rebuild must change nothing a reader sees
(same items, order, scores and reasons) and count the left-out candidates the same.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from newsexchange.config import Config
from newsexchange.db import Database, Digest, DigestItem, Item, Source, StoryGroup, Translation
from newsexchange.digest import build, build_digest, edit_digest
from newsexchange.digest.build import BuildReport

NOW = datetime(2026, 11, 16, 8, 0, tzinfo=UTC)
NOV1 = date(2026, 11, 1)
START = datetime(2026, 10, 31, 21, 0, tzinfo=UTC)  # 1 November 00:00 in Moscow (the readers)
END = datetime(2026, 11, 15, 21, 0, tzinfo=UTC)
SOURCES = 6


def scale_config(
    write_config: Callable[..., Config],
    *,
    max_items: int,
    max_per_source: int,
    include_untranslated: bool = False,
    min_items: int = 1,
) -> Config:
    weights = [1.0, 1.5, 1.0, 0.7, 2.0, 1.0]
    sources = "\n".join(
        f"  - {{id: s{k}, region: joensuu, language: fi, url: 'https://s{k}.example/rss', "
        f"weight: {weights[k]}{', category: events' if k == 5 else ''}}}"
        for k in range(SOURCES)
    )
    return write_config(
        f"""
sources:
{sources}
exchanges:
  - id: big
    name: Big exchange
    from: [joensuu]
    to: petrozavodsk
    language: ru
    editors: [editor@example.fi]
    max_items: {max_items}
    max_per_source: {max_per_source}
    min_items: {min_items}
    include_untranslated: {"true" if include_untranslated else "false"}
    source_weights: {{s2: 1.25, s3: 2.0}}
"""
    )


def seed(db: Database, n: int, rng: random.Random) -> None:
    """``n`` items of six sources: ties in time, story groups across sources, untranslated
    items, events ahead of and before the digest's date, undated events."""
    with db.session() as s:
        s.execute(
            insert(Source),
            [{"id": f"s{k}", "config_url": "u", "url": "u"} for k in range(SOURCES)],
        )
        s.execute(insert(StoryGroup), [{"fingerprint": f"g{g}"} for g in range(n // 8 + 1)])
        groups = list(s.scalars(select(StoryGroup.id)))
        rows: list[dict[str, Any]] = []
        for i in range(n):
            src = rng.randrange(SOURCES)
            minute = rng.randrange(0, 15 * 24 * 60, rng.choice([1, 60, 720]))  # ties
            published = START + timedelta(minutes=minute)
            event_start = None
            category = "events" if src == 5 else "news"
            r = rng.random()
            if r < 0.1:
                event_start = END + timedelta(hours=rng.randrange(1, 14 * 24))
                published = START + timedelta(minutes=rng.randrange(-30 * 24 * 60, minute + 1))
            elif r < 0.15:
                event_start = START + timedelta(hours=rng.randrange(0, 14 * 24))
            rows.append(
                {
                    "source_id": f"s{src}",
                    "identity": f"i{i}",
                    "title": f"item {i}",
                    "region": "joensuu",
                    "category": category,
                    "language": "fi",
                    "published_at": published,
                    "event_start": event_start,
                    "content_hash": str(i),
                    "story_group_id": rng.choice(groups[: max(1, n // 12)])
                    if rng.random() < 0.35
                    else None,
                }
            )
        s.execute(insert(Item), rows)
        ids = list(s.scalars(select(Item.id).order_by(Item.id)))
        s.execute(
            insert(Translation),
            [
                {"item_id": i, "language": "ru", "title": f"новость {i}", "status": "done"}
                for i in ids
                if rng.random() < 0.8
            ],
        )


@pytest.fixture
def db(any_db_url: str) -> Iterator[Database]:
    d = Database(any_db_url)
    yield d
    d.dispose()


def pre_ranked_rebuild(
    db: Database, cfg: Config, monkeypatch: pytest.MonkeyPatch, full: BuildReport
) -> BuildReport:
    """Rebuild with the database's pre-ranking forced on; assert it is the same digest."""
    monkeypatch.setattr(build, "RANK_ALL_UP_TO", 0)
    again = build_digest(db, cfg, "big", period_start=NOV1, now=NOW)
    assert not again.changed
    assert again.items == full.items
    assert again.sections == full.sections
    assert again.left_out_counts == full.left_out_counts
    assert again.left_out_count == full.left_out_count
    return again


def full_build(db: Database, cfg: Config, monkeypatch: pytest.MonkeyPatch) -> BuildReport:
    monkeypatch.setattr(build, "RANK_ALL_UP_TO", 10**9)
    return build_digest(db, cfg, "big", period_start=NOV1, now=NOW)


@pytest.mark.parametrize(
    ("seed_no", "max_items", "max_per_source"),
    [(1, 20, 5), (2, 10, 2), (3, 40, 3), (4, 5, 5), (5, 30, 1)],
)
def test_a_digest_ranked_from_the_best_of_each_source_is_the_digest_of_every_candidate(
    db: Database,
    write_config: Callable[..., Config],
    monkeypatch: pytest.MonkeyPatch,
    seed_no: int,
    max_items: int,
    max_per_source: int,
) -> None:
    cfg = scale_config(write_config, max_items=max_items, max_per_source=max_per_source)
    seed(db, 600, random.Random(seed_no))
    full = full_build(db, cfg, monkeypatch)
    # Full: the caps decided (the digest's or every source's), not a lack of candidates.
    assert full.item_count == max_items or "over_cap" not in full.left_out_counts
    assert {"over_cap", "over_source_cap"} & set(full.left_out_counts)
    assert sum(full.left_out_counts.values()) + full.item_count >= 600
    assert any(it["reason"].get("duplicates") for it in full.items)  # "also in" is kept
    pre_ranked_rebuild(db, cfg, monkeypatch, full)


def test_editors_pins_and_drops_survive_the_pre_ranking(
    db: Database, write_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = scale_config(write_config, max_items=12, max_per_source=3)
    seed(db, 500, random.Random(7))
    first = full_build(db, cfg, monkeypatch)
    restore = [lo["item_id"] for lo in first.left_out if lo["reason"] == "over_source_cap"][:2]
    with db.session() as s:
        d = s.get(Digest, first.id)
        assert d is not None
        edit_digest(s, d, drop=[1, 4], pin=[6], order=[3, 2], restore=restore, now=NOW)
    full = full_build(db, cfg, monkeypatch)
    assert {i["item_id"] for i in full.items} >= set(restore)
    assert full.left_out_counts["dropped"] >= 2
    pre_ranked_rebuild(db, cfg, monkeypatch, full)


def test_untranslated_items_carried_when_the_exchange_takes_them(
    db: Database, write_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = scale_config(write_config, max_items=25, max_per_source=4, include_untranslated=True)
    seed(db, 600, random.Random(11))
    full = full_build(db, cfg, monkeypatch)
    assert "untranslated" not in full.left_out_counts
    pre_ranked_rebuild(db, cfg, monkeypatch, full)


def test_a_large_period_keeps_only_the_best_left_out_verdicts_and_counts_them_all(
    db: Database, write_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = scale_config(write_config, max_items=20, max_per_source=5)
    seed(db, 1500, random.Random(3))
    monkeypatch.setattr(build, "RANK_ALL_UP_TO", 0)
    rep = build_digest(db, cfg, "big", period_start=NOV1, now=NOW)
    data = rep.to_json()
    with db.session() as s:
        stored = s.scalar(select(func.count()).select_from(DigestItem)) or 0
        total = s.scalar(select(func.count()).select_from(Item)) or 0
    assert data["left_out_count"] == sum(data["left_out_counts"].values())
    assert data["item_count"] + data["left_out_count"] == total - _not_candidates(db)
    assert stored == data["item_count"] + len(data["left_out"]) <= 20 + 50 * 5
    for reason, n in data["left_out_counts"].items():
        listed = [lo for lo in data["left_out"] if lo["reason"] == reason]
        # Those no ranking lets in are sampled by the database, the rest come from what was
        # ranked: every source's best beyond its cap, the other members of the stories in.
        if reason in ("untranslated", "event_before_digest"):
            assert len(listed) == min(n, build.KEEP_LEFT_OUT)
        else:
            assert 0 < len(listed) <= min(n, build.KEEP_LEFT_OUT)
        assert [lo["score"] for lo in listed] == sorted(
            (lo["score"] for lo in listed), reverse=True
        )


def test_a_digest_too_empty_to_send_keeps_every_verdict(
    db: Database, write_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the (few) translated items could go in; min_items is higher, so the editors'
    # "nothing to send" notice counts every left-out candidate.
    cfg = scale_config(write_config, max_items=20, max_per_source=1, min_items=20)
    seed(db, 300, random.Random(5))
    monkeypatch.setattr(build, "RANK_ALL_UP_TO", 0)
    rep = build_digest(db, cfg, "big", period_start=NOV1, now=NOW)
    assert rep.item_count < 20
    assert len(rep.left_out) == rep.left_out_count


def _not_candidates(db: Database) -> int:
    """Items of the seed outside the period and its events' window."""
    with db.session() as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(Item)
                .where(
                    (Item.event_start.is_(None) & (Item.published_at < START))
                    | (Item.published_at >= END)
                )
            )
            or 0
        )
