"""Shared set-up for the delivery tests (no tests here): a config whose mail goes to a local
server, and an approved digest with real items and recipients, made through the ORM."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from newsexchange.config import Config
from newsexchange.db import (
    Contact,
    Database,
    Digest,
    DigestItem,
    Item,
    ListMembership,
    Source,
    Translation,
)
from newsexchange.delivery.outbox import enqueue_deliveries

NOW = datetime(2026, 11, 16, 7, 0, tzinfo=UTC)
FROM = "Обмен новостями Йоэнсуу–Петрозаводск <news@example.org>"


def delivery_config(
    write_config: Callable[..., Config],
    *,
    backend: str = "smtp",
    smtp_port: int = 25,
    sendgrid_url: str = "http://127.0.0.1:9",
    env: dict[str, str] | None = None,
    rate: float = 100000,
    connections: int = 2,
    public_url: str = "https://news.example.org",
    database_url: str = "sqlite:///var/test.db",
    claim_ttl: float = 30,
) -> Config:
    text = textwrap.dedent(
        f"""\
        timezone: Europe/Helsinki
        database_url: {database_url}
        public_url: {public_url}
        mail:
          backend: {backend}
          from: "{FROM}"
          reply_to: "Editors <editors@example.org>"
          outbox_dir: var/outbox
          rate_per_second: {rate}
          claim_ttl_seconds: {claim_ttl}
          smtp: {{host: 127.0.0.1, port: {smtp_port}, connections: {connections}, timeout: 10}}
          sendgrid: {{api_key_env: SG_KEY, base_url: "{sendgrid_url}", webhook_public_key_env: SG_WEBHOOK_KEY}}
        regions:
          joensuu:      {{name: Joensuu, language: fi, timezone: Europe/Helsinki}}
          petrozavodsk: {{name: Petrozavodsk, language: ru, timezone: Europe/Moscow}}
        sources:
          - {{id: yle, name: Yle Pohjois-Karjala, region: joensuu, url: "https://example.fi/rss", language: fi}}
        lists:
          petrozavodsk-media: {{name: Petrozavodsk media, language: ru}}
          karelia-press:      {{name: Karelia press, language: ru}}
        exchanges:
          - id: joensuu-to-petrozavodsk
            name: Новости Йоэнсуу и Северной Карелии
            from: [joensuu]
            to: petrozavodsk
            language: ru
            editors: [editor@example.fi]
            lists: [petrozavodsk-media, karelia-press]
        """
    )
    return write_config(
        base=text, env={"SG_KEY": "SG.test-key", "NEWSEXCHANGE_SECRET_KEY": "s3cret", **(env or {})}
    )


def seed_digest(
    db: Database,
    config: Config,
    recipients: list[tuple[str, str]] | int,
    *,
    list_id: str = "petrozavodsk-media",
    enqueue: bool = True,
    state: str = "approved",
    period_start: date = date(2026, 11, 1),
) -> int:
    """An approved digest of two translated items; ``recipients`` are (name, email) pairs
    on ``list_id`` (or a count of generated ones). Returns the digest id."""
    if isinstance(recipients, int):
        recipients = [(f"Журналист {i}", f"j{i:05d}@example.org") for i in range(recipients)]
    with db.session() as s:
        if s.get(Source, "yle") is None:
            s.add(
                Source(id="yle", config_url="https://example.fi/rss", url="https://example.fi/rss")
            )
            s.flush()  # no ORM relationship orders this insert before the items
        items = []
        for i, (fi, ru) in enumerate(
            [
                ("Joensuun tori uudistuu", "Рыночная площадь Йоэнсуу обновится"),
                ("Pielisjoen silta avataan", "Мост через Пиелисйоки откроют"),
            ]
        ):
            item = Item(
                source_id="yle",
                identity=f"guid-{i}-{datetime.now().timestamp()}",
                title=fi,
                summary_html=f"<p>{fi}.</p>",
                summary_text=f"{fi}.",
                link=f"https://example.fi/news/{i}",
                region="joensuu",
                language="fi",
                published_at=datetime(2026, 11, 3 + i, 9, 0, tzinfo=UTC),
                content_hash=f"h{i}",
            )
            item.translations.append(
                Translation(
                    language="ru",
                    title=ru,
                    summary_html=f"<p>{ru}.</p>",
                    summary_text=f"{ru}.",
                    provider="libre",
                    status="done",
                )
            )
            s.add(item)
            items.append(item)
        s.flush()
        digest = Digest(
            exchange_id="joensuu-to-petrozavodsk",
            period_start=period_start,
            period_end=period_start + timedelta(days=14),
            language="ru",
            state=state,
            subject="",
            token=f"tok-{datetime.now().timestamp()}",
            approved_at=NOW,
        )
        for pos, item in enumerate(items):
            digest.entries.append(DigestItem(item_id=item.id, position=pos, section="news"))
        s.add(digest)
        for name, email in recipients:
            contact = Contact(email=email, name=name, language="ru")
            contact.memberships.append(ListMembership(list_id=list_id))
            s.add(contact)
        s.flush()
        if enqueue:
            enqueue_deliveries(s, config, digest, now=NOW)
        return digest.id
