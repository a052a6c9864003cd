"""Building digests from stored items: periods and zones, reasons, rebuilds, editor changes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from newsexchange.config import Config
from newsexchange.db import AuditEntry, Database, Digest, DigestItem, Translation
from newsexchange.digest import build_digest, edit_digest
from newsexchange.errors import DigestError
from tests.test_digest_sample import add_item, sample_config, seed, utc

NOW = datetime(2026, 11, 16, 8, 0, tzinfo=UTC)  # after 09:00 in Moscow and in Helsinki
NOV1 = date(2026, 11, 1)


@pytest.fixture
def cfg(write_config: Callable[..., Config]) -> Config:
    return sample_config(write_config)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(f"sqlite:///{tmp_path}/digest.db")
    yield d  # type: ignore[misc]
    d.dispose()


def titles(report_items: list[dict]) -> list[str]:  # type: ignore[type-arg]
    return [i["title"] for i in report_items]


def test_russian_digest_of_joensuu_news_follows_the_moscow_calendar(
    cfg: Config, db: Database
) -> None:
    ids = seed(db)
    rep = build_digest(db, cfg, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW)
    got = {i["item_id"] for i in rep.items} | {i["item_id"] for i in rep.left_out}
    # 00:30 Moscow on 1 November is in; 00:30 Moscow on 16 November is the next period's.
    assert ids["before"] in got
    assert ids["late"] not in got
    assert ids["bridge-ptz"] not in got  # Petrozavodsk items are not this exchange's
    assert rep.to_json()["period"] == {"start": "2026-11-01", "end": "2026-11-15"}
    assert rep.language == "ru" and rep.state == "draft" and rep.version == 1


def test_english_digest_of_both_regions_follows_the_helsinki_calendar(
    cfg: Config, db: Database
) -> None:
    ids = seed(db)
    rep = build_digest(db, cfg, "border-en", period_start=NOV1, now=NOW)
    got = {i["item_id"] for i in rep.items} | {i["item_id"] for i in rep.left_out}
    # 23:30 Helsinki on 15 November is in; 23:30 Helsinki on 31 October is not.
    assert ids["late"] in got and ids["before"] not in got
    assert ids["bridge-ptz"] in got and ids["fares"] in got  # both regions


def test_json_lists_sections_reasons_and_left_out_items(cfg: Config, db: Database) -> None:
    ids = seed(db)
    data = build_digest(db, cfg, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW).to_json()
    assert data["sections"] == {"news": 4, "events": 1}
    assert data["item_count"] == 5 == len(data["items"])
    first = data["items"][0]
    assert first["position"] == 1 and first["title"] == "Новый мост в Йоэнсуу откроют в декабре"
    assert first["reason"]["sources"] == 2 and first["reason"]["coverage"] == 1.5
    assert first["reason"]["weight"] == 1.5  # Yle's weight in feeds.yaml
    left = {lo["item_id"]: lo["reason"] for lo in data["left_out"]}
    assert left == {ids["rock"]: "untranslated", ids["bridge-karjalainen"]: "duplicate_story"}
    assert data["items"][-1]["section"] == "events"


def test_untranslated_item_is_carried_with_a_marker_when_the_exchange_opts_in(
    write_config: Callable[..., Config], db: Database
) -> None:
    opted = sample_config(write_config, ru_options="include_untranslated: true")
    ids = seed(db)
    rep = build_digest(db, opted, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW)
    carried = [i for i in rep.items if i["item_id"] == ids["rock"]]
    assert carried and carried[0]["reason"]["untranslated"] is True
    assert carried[0]["title"] == "Ilosaarirockin ensimmäiset esiintyjät julkistettiin"


def test_building_twice_gives_the_same_digest_and_version(cfg: Config, db: Database) -> None:
    seed(db)
    a = build_digest(db, cfg, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW)
    b = build_digest(db, cfg, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW)
    assert (a.id, a.version, a.created) == (b.id, 1, True) and not b.created and not b.changed
    assert a.to_json()["items"] == b.to_json()["items"]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Digest)) == 1


def test_rebuild_after_a_translation_arrives_bumps_the_version(cfg: Config, db: Database) -> None:
    ids = seed(db)
    first = build_digest(db, cfg, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW)
    with db.session() as s:
        s.add(
            Translation(
                item_id=ids["rock"],
                language="ru",
                title="Объявлены первые участники Ilosaarirock",
                status="done",
                provider="libre",
            )
        )
    second = build_digest(db, cfg, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW)
    assert second.id == first.id and second.changed and second.version == 2
    assert "Объявлены первые участники Ilosaarirock" in titles(second.items)
    assert all(lo["reason"] != "untranslated" for lo in second.left_out)


def test_approved_digest_is_never_rebuilt(cfg: Config, db: Database) -> None:
    seed(db)
    rep = build_digest(db, cfg, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW)
    with db.session() as s:
        s.get(Digest, rep.id).state = "approved"  # type: ignore[union-attr]
    add_item(
        db, key="new", source="yle-pk", title="Uusi", published=utc(2026, 11, 3), tr={"ru": "Новое"}
    )
    with pytest.raises(DigestError, match=r"is approved; its content is frozen"):
        build_digest(db, cfg, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW)
    with db.session() as s:
        d = s.get(Digest, rep.id)
        assert d is not None and d.version == 1
        with pytest.raises(DigestError, match="cannot be edited"):
            edit_digest(s, d, drop=[1], now=NOW)


def test_editor_drop_and_pin_survive_a_rebuild(cfg: Config, db: Database) -> None:
    ids = seed(db)
    rep = build_digest(db, cfg, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW)
    by_pos = {i["position"]: i["item_id"] for i in rep.items}
    with db.session() as s:
        d = s.get(Digest, rep.id)
        assert d is not None
        edit_digest(s, d, drop=[1], pin=[3], now=NOW)
        assert d.version == 2
    again = build_digest(db, cfg, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW)
    assert again.version == 2 and not again.changed
    assert by_pos[1] not in {i["item_id"] for i in again.items}
    assert {lo["item_id"]: lo["reason"] for lo in again.left_out}[by_pos[1]] == "dropped"
    assert again.items[0]["item_id"] == by_pos[3] and again.items[0]["reason"]["pinned"]
    # The dropped bridge story is not replaced by its duplicate from the other source.
    assert ids["bridge-karjalainen"] not in {i["item_id"] for i in again.items}


def test_editor_order_is_kept_and_positions_stay_one_based(cfg: Config, db: Database) -> None:
    seed(db)
    rep = build_digest(db, cfg, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW)
    before = [i["item_id"] for i in rep.items]
    with db.session() as s:
        d = s.get(Digest, rep.id)
        assert d is not None
        edit_digest(s, d, order=[3, 1], now=NOW)
        got = [e.item_id for e in sorted(d.entries, key=lambda e: e.position) if e.included]
        assert sorted(e.position for e in d.entries if e.included) == list(
            range(1, len(before) + 1)
        )
    assert got[:3] == [before[2], before[0], before[1]]
    again = build_digest(db, cfg, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW)
    assert [i["item_id"] for i in again.items] == got


def test_edit_with_an_unknown_position_says_which_positions_exist(
    cfg: Config, db: Database
) -> None:
    seed(db)
    rep = build_digest(db, cfg, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW)
    with db.session() as s:
        d = s.get(Digest, rep.id)
        assert d is not None
        with pytest.raises(DigestError, match=r"position 9 is not in digest .* positions 1–5"):
            edit_digest(s, d, drop=[9], now=NOW)


def test_restore_brings_a_left_out_item_back_pinned(cfg: Config, db: Database) -> None:
    ids = seed(db)
    rep = build_digest(db, cfg, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW)
    with db.session() as s:
        d = s.get(Digest, rep.id)
        assert d is not None
        edit_digest(s, d, restore=[ids["bridge-karjalainen"]], now=NOW)
    again = build_digest(db, cfg, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW)
    assert ids["bridge-karjalainen"] in {i["item_id"] for i in again.items}


def test_default_period_is_the_latest_due_one(cfg: Config, db: Database) -> None:
    seed(db)
    rep = build_digest(db, cfg, "joensuu-to-petrozavodsk", now=NOW)
    assert rep.period.start == NOV1
    early = build_digest(db, cfg, "joensuu-to-petrozavodsk", now=utc(2026, 11, 16, 5, 0))
    assert early.period.start == date(2026, 10, 16) and early.item_count == 0


def test_empty_period_builds_an_empty_draft(cfg: Config, db: Database) -> None:
    rep = build_digest(db, cfg, "border-en", period_start=date(2026, 12, 1), now=NOW)
    assert rep.item_count == 0 and rep.sections == {"news": 0, "events": 0}


def test_one_digest_per_period_on_sqlite_and_postgresql(any_db_url: str, cfg: Config) -> None:
    db = Database(any_db_url)
    try:
        seed(db)
        ids = {
            build_digest(db, cfg, "petrozavodsk-to-joensuu", period_start=NOV1, now=NOW).id
            for _ in range(3)
        }
        assert len(ids) == 1
        with db.session() as s:
            n = s.scalar(select(func.count()).select_from(DigestItem))
            assert n == 3  # bridge, lights, fares
            d = s.get(Digest, ids.pop())
            assert d is not None and d.subject.startswith("Petroskoin ja Karjalan")
    finally:
        db.dispose()


def test_changed_rebuild_of_a_digest_awaiting_approval_returns_it_to_draft(
    cfg: Config, db: Database
) -> None:
    seed(db)
    rep = build_digest(db, cfg, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW)
    with db.session() as s:
        s.get(Digest, rep.id).state = "awaiting_approval"  # type: ignore[union-attr]
    same = build_digest(db, cfg, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW)
    assert (same.state, same.version) == ("awaiting_approval", 1)  # nothing changed
    add_item(
        db, key="new", source="yle-pk", title="Uusi", published=utc(2026, 11, 3), tr={"ru": "Новое"}
    )
    changed = build_digest(db, cfg, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW)
    assert (changed.state, changed.version) == ("draft", 2)
    with db.session() as s:
        log = s.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        assert [(a.action, a.detail["version"]) for a in log] == [("built", 1), ("rebuilt", 2)]
        assert log[1].detail["from_state"] == "awaiting_approval"
