"""Nothing empty goes out: a digest below its exchange's min_items is never sent for
approval, cannot be approved and cannot be sent; the editors hear once why. And the console
around it: an unknown digest id is bad usage; `digest show` reads in the exchange's time."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from newsexchange.approval import request_approval
from newsexchange.config import Config
from newsexchange.db import Database, Delivery, Digest
from newsexchange.digest.sendable import SourceState, refusal, why_empty
from newsexchange.i18n import gettext_for
from tests.test_approval import (
    ANNA,
    BORIS,
    NOW,
    approval_config,
    clear_outbox,
    make_digest,
    outbox_messages,
    run_cli,
    state_of,
)


@pytest.fixture
def cfg(write_config: Callable[..., Config]) -> Config:
    return approval_config(write_config)


@pytest.fixture
def db(cfg: Config, db_for: Callable[[Config], Database]) -> Database:
    return db_for(cfg)


def test_an_empty_digest_mails_one_notice_and_no_request(cfg: Config, db: Database) -> None:
    digest_id = make_digest(db, items=0)
    assert request_approval(db, cfg, digest_id, now=NOW) == 0
    notices = outbox_messages(cfg)
    assert sorted(m["To"] for m in notices) == [ANNA, BORIS]
    assert all(str(m["Subject"]).startswith("Nothing to send: ") for m in notices)
    body = notices[0].get_content()
    assert "no approval request was mailed" in body and "Why: " in body
    assert state_of(db, digest_id) == "draft"
    clear_outbox(cfg)
    # Asked again (the next scheduler run): the editors were told already.
    assert request_approval(db, cfg, digest_id, now=NOW) == 0
    assert outbox_messages(cfg) == []


def test_an_empty_digest_cannot_be_approved_or_sent_at_the_console(
    cfg: Config, db: Database
) -> None:
    digest_id = make_digest(db, items=0)
    code, out = run_cli(cfg, "approve", str(digest_id), "--as", ANNA, "--json")
    assert code == 1 and "min_items" in json.loads(out)["error"], out
    assert state_of(db, digest_id) == "draft"
    # One approved before this rule (or by hand in the database) is not sent either.
    with db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None
        d.state, d.frozen = "approved", {"items": []}
    code, out = run_cli(cfg, "send", str(digest_id), "--json")
    assert code == 1 and "min_items" in json.loads(out)["error"], out
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == 0


def test_a_digest_with_items_still_asks_for_approval(cfg: Config, db: Database) -> None:
    digest_id = make_digest(db, items=1)
    assert request_approval(db, cfg, digest_id, now=NOW) == 2
    assert state_of(db, digest_id) == "awaiting_approval"


def test_the_reason_names_what_the_period_lacked() -> None:
    _ = gettext_for("en")
    down = [SourceState("a", False), SourceState("b", False)]
    assert "none of the 2 sources" in why_empty([], down, _)
    up = [SourceState("a", True), SourceState("b", False)]
    assert "(1 of 2 fetched) published no item" in why_empty([], up, _)
    said = why_empty(["untranslated", "duplicate_story", "untranslated"], up, _)
    assert said.startswith("all 3 items of the period were left out: 2 not translated yet")
    assert "Причина" not in said
    ru = why_empty(["untranslated"], up, gettext_for("ru"))
    assert "не переведены" in ru


def test_min_items_is_per_exchange(cfg: Config) -> None:
    ex = cfg.exchange("jns-to-ptz")
    assert ex.min_items == 1
    assert refusal(1, ex, 7) is None
    assert "fewer than the exchange's min_items (1)" in (refusal(0, ex, 7) or "")


def test_the_scheduler_builds_an_empty_due_period_and_tells_the_editors_once(
    cfg: Config, db: Database
) -> None:
    from newsexchange.service import STEPS

    built = STEPS["digest"].run(cfg, db, NOW, None)
    assert built["built"] == 1, built
    for _ in range(2):  # the approvals step runs every few minutes
        STEPS["approvals"].run(cfg, db, NOW, None)
    notices = outbox_messages(cfg)
    assert sorted(m["To"] for m in notices) == [ANNA, BORIS]
    assert all(str(m["Subject"]).startswith("Nothing to send: ") for m in notices)
    with db.session() as s:
        d = s.scalars(select(Digest)).one()
        assert d.state == "draft" and d.approval_requested_at is None


@pytest.mark.parametrize(
    "args",
    [
        ("digest", "show", "424242"),
        ("digest", "edit", "424242", "--drop", "1"),
        ("approve", "424242", "--as", ANNA),
        ("reject", "424242", "--as", ANNA, "--reason", "x"),
        ("send", "424242"),
    ],
)
def test_an_unknown_digest_id_is_bad_usage_everywhere(
    cfg: Config, db: Database, args: tuple[str, ...]
) -> None:
    code, out = run_cli(cfg, *args, "--json")
    assert code == 2, out
    data = json.loads(out)
    assert data["ok"] is False and "no digest with id 424242" in data["error"]


def test_digest_show_prints_reasons_and_times_in_the_exchanges_time_zone(
    cfg: Config, db: Database
) -> None:
    digest_id = make_digest(db)
    code, out = run_cli(cfg, "reject", str(digest_id), "--as", ANNA, "--reason", "Too old")
    assert code == 0, out
    code, text = run_cli(cfg, "digest", "show", str(digest_id))
    assert code == 0, text
    [line] = [ln for ln in text.splitlines() if "reject via cli" in ln]
    # Petrozavodsk's readers: Moscow time, and the reason on the same line.
    assert " MSK " in line and line.rstrip().endswith(": Too old"), line
