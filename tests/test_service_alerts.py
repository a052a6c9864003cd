"""Operator alerts: each condition mailed once to the operators, a new episode again."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from newsexchange.alerts import check_alerts
from newsexchange.config import Config, database_url
from newsexchange.db import Database, Digest, ProviderUsage, Source

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CONFIG = """\
mail:
  backend: outbox
  from: "Exchange <news@example.org>"
  outbox_dir: var/outbox
  operators: [ops@example.org, oncall@example.org]
sources:
  - {id: karjalainen, region: joensuu, url: "https://karjalainen.example/rss", language: fi}
  - {id: yle, region: joensuu, url: "https://yle.example/rss", language: fi}
exchanges:
  - {id: fi-to-ru, from: [joensuu], to: petrozavodsk, language: ru, editors: [e@example.fi]}
"""


def _base() -> str:
    from tests.conftest import BASE_CONFIG

    head, rest = BASE_CONFIG.split("mail:", 1)
    return head + "regions:" + rest.split("regions:", 1)[1]


def _outbox(cfg: Config) -> list[email.message.EmailMessage]:
    folder = Path(cfg.resolve("var/outbox"))
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in sorted(folder.glob("*.eml"))
    ]


def test_each_alert_condition_is_mailed_to_the_operators_once(
    write_config: Callable[..., Config],
) -> None:
    cfg = write_config(CONFIG, base=_base())
    db = Database(database_url(cfg))
    try:
        with db.session() as s:
            s.add(
                Source(
                    id="karjalainen",
                    config_url="u",
                    url="https://karjalainen.example/rss",
                    failing_since=NOW - timedelta(hours=25),
                    consecutive_failures=30,
                    last_error="HTTP 503",
                )
            )
            # failing, but not for a day yet: no alert
            s.add(Source(id="yle", config_url="u", url="u", failing_since=NOW - timedelta(hours=3)))
            s.add(
                ProviderUsage(
                    provider="libre",
                    day=date(2026, 11, 20),
                    down_since=NOW - timedelta(minutes=61),
                    last_error="connection refused",
                )
            )
            s.add(
                Digest(
                    exchange_id="fi-to-ru",
                    period_start=date(2026, 11, 1),
                    period_end=date(2026, 11, 15),
                    language="ru",
                    state="held",
                    token="t1",
                )
            )
        report = check_alerts(db, cfg, now=NOW)
        assert report.new == 3
        assert report.mailed == 3
        mails = _outbox(cfg)
        subjects = sorted(str(m["Subject"]) for m in mails)
        assert subjects == [
            "[newsexchange] Digest #1 of fi-to-ru is held: not sent",
            "[newsexchange] Source karjalainen has been failing for 25 hours",
            "[newsexchange] Translation provider libre has been down for 1 hours",
        ]
        for m in mails:
            assert m["Auto-Submitted"] == "auto-generated"
        source_mail = next(m for m in mails if "karjalainen" in str(m["Subject"]))
        assert "HTTP 503" in source_mail.get_content()

        # The same conditions an hour later: nothing new is mailed.
        again = check_alerts(db, cfg, now=NOW + timedelta(hours=1))
        assert (again.checked, again.new, again.mailed) == (3, 0, 0)
        assert len(_outbox(cfg)) == len(mails)

        # The source recovered and failed again: a new episode is a new alert.
        with db.session() as s:
            src = s.get(Source, "karjalainen")
            assert src is not None and src.alerted_at is not None
            src.failing_since = NOW + timedelta(days=1)
        later = check_alerts(db, cfg, now=NOW + timedelta(days=2, hours=1))
        # (yle, failing for 3 hours at first, has now passed its day too)
        assert sorted(":".join(k.split(":")[:2]) for k in later.alerts) == [
            "source-failing:karjalainen",
            "source-failing:yle",
        ]
    finally:
        db.dispose()


def test_without_operators_an_alert_is_logged_once(
    write_config: Callable[..., Config], caplog: object
) -> None:
    import logging

    cfg = write_config(
        CONFIG.replace("  operators: [ops@example.org, oncall@example.org]\n", ""), base=_base()
    )
    db = Database(database_url(cfg))
    try:
        with db.session() as s:
            s.add(Source(id="yle", config_url="u", url="u", failing_since=NOW - timedelta(days=2)))
        logging.getLogger("newsexchange").propagate = True
        first = check_alerts(db, cfg, now=NOW)
        second = check_alerts(db, cfg, now=NOW)
        assert (first.new, first.mailed) == (1, 0)
        assert second.new == 0
        assert not Path(cfg.resolve("var/outbox")).exists() or _outbox(cfg) == []
    finally:
        db.dispose()
