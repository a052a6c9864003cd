"""The tables (SQLAlchemy 2 typed ORM). Every time is stored in UTC: :class:`UTCDateTime`
refuses naive datetimes on the way in and hands back aware ones.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    Unicode,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC, returned as an aware UTC datetime."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; pass an aware datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON}


# -- ingestion -------------------------------------------------------------------------------


class Source(Base):
    """Fetch state of one configured source (the config is the source of truth for the rest)."""

    __tablename__ = "sources"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    config_url: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)  # after permanent redirects
    title: Mapped[str | None] = mapped_column(Text)
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)
    last_fetched_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    last_status: Mapped[int | None]
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    failing_since: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None]
    parse_problem: Mapped[str | None] = mapped_column(Text)
    alerted_at: Mapped[datetime | None]
    # The first successful fetch: the source watchdog judges a source "stale" only once it
    # has been watched for its stale_days (a source added yesterday has had no time to publish).
    watched_since: Mapped[datetime | None]


class StoryGroup(Base):
    """Near-identical stories from different sources, linked for ranking."""

    __tablename__ = "story_groups"
    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("source_id", "identity", name="uq_items_source_identity"),
        Index("ix_items_region_published", "region", "published_at"),
        # The source watchdog: each source's newest item and its last 50 (db/queries/watchdog).
        Index("ix_items_source_first_seen", "source_id", "first_seen_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    identity: Mapped[str] = mapped_column(String(255))  # guid, else canonical link, else hash
    guid: Mapped[str | None] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text, default="")
    summary_html: Mapped[str] = mapped_column(Text, default="")  # sanitized once, on the way in
    summary_text: Mapped[str] = mapped_column(Text, default="")  # bounded plain text
    author: Mapped[str | None] = mapped_column(Text)
    image_url: Mapped[str | None] = mapped_column(Text)
    region: Mapped[str] = mapped_column(String(100))
    category: Mapped[str] = mapped_column(String(20), default="news")
    language: Mapped[str] = mapped_column(String(8))  # declared by the source
    detected_language: Mapped[str | None] = mapped_column(String(8))
    language_mismatch: Mapped[bool] = mapped_column(Boolean, default=False)
    published_at: Mapped[datetime]
    date_from_feed: Mapped[bool] = mapped_column(Boolean, default=True)
    # An event's when and where (ParsedEntry documents each); NULL event_start: not an event.
    event_start: Mapped[datetime | None] = mapped_column(index=True)
    event_end: Mapped[datetime | None]
    event_timezone: Mapped[str | None] = mapped_column(String(64))
    all_day: Mapped[bool] = mapped_column(Boolean, default=False)
    place_venue: Mapped[str | None] = mapped_column(Text)
    place_town: Mapped[str | None] = mapped_column(Text)
    # When the article page's main text replaced the feed's teaser (fulltext: true sources);
    # set once, so the page is never fetched again for this item.
    fulltext_at: Mapped[datetime | None]
    # When the event's calendar stopped carrying it (STATUS:CANCELLED, an EXDATE added, the
    # event deleted) while its start was still within the window read; cleared if it comes
    # back. A cancelled event is no digest's candidate (ingest/ical.py, db/queries/items.py).
    cancelled_at: Mapped[datetime | None]
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    content_hash: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    story_group_id: Mapped[int | None] = mapped_column(
        ForeignKey("story_groups.id", ondelete="SET NULL"), index=True
    )

    translations: Mapped[list[Translation]] = relationship(
        back_populates="item", cascade="all, delete-orphan", lazy="selectin"
    )


# -- translation -----------------------------------------------------------------------------


class Translation(Base):
    """An item in another language; ``status`` is pending, done or failed (with ``error``)."""

    __tablename__ = "translations"
    __table_args__ = (
        UniqueConstraint("item_id", "language", name="uq_translations_item_lang"),
        Index("ix_translations_status_next", "status", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    language: Mapped[str] = mapped_column(String(8))
    title: Mapped[str | None] = mapped_column(Text)
    summary_html: Mapped[str | None] = mapped_column(Text)
    summary_text: Mapped[str | None] = mapped_column(Text)
    provider: Mapped[str | None] = mapped_column(
        String(40)
    )  # provider name, memory, editor, original
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    source_hash: Mapped[str | None] = mapped_column(String(64))  # of the item text translated
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    item: Mapped[Item] = relationship(back_populates="translations")


class TranslationMemory(Base):
    """Every translated segment, so the same text is never sent twice; editor entries win."""

    __tablename__ = "translation_memory"
    __table_args__ = (
        UniqueConstraint("source_lang", "target_lang", "source_hash", name="uq_tm_langs_hash"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    source_lang: Mapped[str] = mapped_column(String(8))
    target_lang: Mapped[str] = mapped_column(String(8))
    source_hash: Mapped[str] = mapped_column(String(64))
    source_text: Mapped[str] = mapped_column(Text)
    target_text: Mapped[str] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(40))  # provider name or "editor"
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProviderUsage(Base):
    """Requests and characters sent per provider per UTC day, and its health."""

    __tablename__ = "provider_usage"
    __table_args__ = (UniqueConstraint("provider", "day", name="uq_provider_usage_day"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(40))
    day: Mapped[date] = mapped_column(Date)
    requests: Mapped[int] = mapped_column(default=0)
    characters: Mapped[int] = mapped_column(default=0)
    failures: Mapped[int] = mapped_column(default=0)
    down_since: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    alerted_at: Mapped[datetime | None]


# -- digests and approval ----------------------------------------------------------------------


class Digest(Base):
    """One exchange's digest for one period.

    state: draft → awaiting_approval → approved → sending → sent; or rejected / held.
    ``version`` grows with every change; approvals name the version they approved.
    """

    __tablename__ = "digests"
    __table_args__ = (UniqueConstraint("exchange_id", "period_start", name="uq_digest_period"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    exchange_id: Mapped[str] = mapped_column(String(100), index=True)
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)  # last day included
    language: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(24), default="draft", index=True)
    version: Mapped[int] = mapped_column(default=1)
    subject: Mapped[str] = mapped_column(Text, default="")
    token: Mapped[str] = mapped_column(String(64), unique=True)  # unguessable reply tag
    content_hash: Mapped[str | None] = mapped_column(String(64))  # frozen on approval
    frozen: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the approved content
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    built_at: Mapped[datetime] = mapped_column(default=utcnow)
    approval_requested_at: Mapped[datetime | None]
    reminder_sent_at: Mapped[datetime | None]
    approved_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    decided_reason: Mapped[str | None] = mapped_column(Text)

    entries: Mapped[list[DigestItem]] = relationship(
        back_populates="digest", cascade="all, delete-orphan", order_by="DigestItem.position"
    )


class DigestItem(Base):
    """An item considered for a digest: included with its rank, or left out with the reason."""

    __tablename__ = "digest_items"
    __table_args__ = (UniqueConstraint("digest_id", "item_id", name="uq_digest_item"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    digest_id: Mapped[int] = mapped_column(ForeignKey("digests.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    section: Mapped[str] = mapped_column(String(20), default="news")
    position: Mapped[int] = mapped_column(default=0)
    included: Mapped[bool] = mapped_column(Boolean, default=True)
    score: Mapped[float] = mapped_column(Float, default=0.0)
    reason: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    dropped: Mapped[bool] = mapped_column(Boolean, default=False)  # by an editor
    untranslated: Mapped[bool] = mapped_column(Boolean, default=False)

    digest: Mapped[Digest] = relationship(back_populates="entries")
    item: Mapped[Item] = relationship(lazy="joined")


class Approval(Base):
    __tablename__ = "approvals"
    id: Mapped[int] = mapped_column(primary_key=True)
    digest_id: Mapped[int] = mapped_column(ForeignKey("digests.id", ondelete="CASCADE"), index=True)
    digest_version: Mapped[int]
    editor: Mapped[str] = mapped_column(String(320))
    decision: Mapped[str] = mapped_column(String(20))  # approve | reject | changes
    channel: Mapped[str] = mapped_column(String(20))  # web | email | cli
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsedToken(Base):
    """Single-use action links: a token's id is written here when it acts."""

    __tablename__ = "used_tokens"
    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    used_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """Who did what, when, by which channel, from which address."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    digest_id: Mapped[int | None] = mapped_column(
        ForeignKey("digests.id", ondelete="SET NULL"), index=True
    )
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(60))
    channel: Mapped[str] = mapped_column(String(20))
    address: Mapped[str | None] = mapped_column(String(320))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# -- delivery --------------------------------------------------------------------------------


class Contact(Base):
    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # normalized, lowercase domain
    name: Mapped[str] = mapped_column(Text, default="")
    outlet: Mapped[str] = mapped_column(Text, default="")
    language: Mapped[str | None] = mapped_column(String(8))
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    memberships: Mapped[list[ListMembership]] = relationship(
        back_populates="contact", cascade="all, delete-orphan", lazy="selectin"
    )


class ListMembership(Base):
    __tablename__ = "list_memberships"
    __table_args__ = (UniqueConstraint("contact_id", "list_id", name="uq_membership"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    list_id: Mapped[str] = mapped_column(String(100), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    contact: Mapped[Contact] = relationship(back_populates="memberships")


class Suppression(Base):
    """Addresses never mailed again: unsubscribed, bounced, complained (or by hand)."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("email", "list_id", name="uq_suppression"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    list_id: Mapped[str | None] = mapped_column(String(100))  # None: every list
    reason: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Delivery(Base):
    """One recipient of one digest: the outbox row that makes delivery exactly-once.

    status: pending → claimed → sent; or retrying, failed, suppressed.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("digest_id", "email", name="uq_delivery_recipient"),
        Index("ix_deliveries_status_next", "status", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    digest_id: Mapped[int] = mapped_column(ForeignKey("digests.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    email: Mapped[str] = mapped_column(String(320))
    list_id: Mapped[str] = mapped_column(String(100))
    language: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    message_id: Mapped[str] = mapped_column(String(255), unique=True)  # stable per delivery
    provider_message_id: Mapped[str | None] = mapped_column(String(255), index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    claimed_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProviderEvent(Base):
    """Webhook events already applied (SendGrid sg_event_id), so a retry changes nothing."""

    __tablename__ = "provider_events"
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


# -- operations ------------------------------------------------------------------------------


class JobRun(Base):
    __tablename__ = "job_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    job: Mapped[str] = mapped_column(String(100), index=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    ok: Mapped[bool | None] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Lock(Base):
    """A lease: one service process runs a given job at a time, across processes."""

    __tablename__ = "locks"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]


class StoryClicks(Base):
    """Clicks on one story of a sent digest, in aggregate: a count and nothing else (who
    clicked, when, from where is never stored)."""

    __tablename__ = "story_clicks"
    digest_id: Mapped[int] = mapped_column(
        ForeignKey("digests.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(primary_key=True)  # the story's place in the digest
    item_id: Mapped[int | None]
    clicks: Mapped[int] = mapped_column(default=0)


class Pickup(Base):
    """An item of the receiving side's media that retells a story of a sent digest: found by
    the matcher (``suggested``, with its score and evidence), then ``confirmed`` or
    ``rejected`` by an editor. Only confirmed ones count in reports."""

    __tablename__ = "pickups"
    __table_args__ = (UniqueConstraint("digest_id", "story_item_id", "item_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    digest_id: Mapped[int] = mapped_column(ForeignKey("digests.id", ondelete="CASCADE"), index=True)
    story_item_id: Mapped[int]  # the story as the digest carried it (items.id)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    score: Mapped[float]
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="suggested")
    found_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(320))


class SchedulerJob(Base):
    """APScheduler's job store (``SQLAlchemyJobStore``), declared here exactly as APScheduler
    creates it, so the migrations create it (before any scheduler starts, however many start
    together) and ``alembic check`` knows it. Only APScheduler reads and writes its rows."""

    __tablename__ = "apscheduler_jobs"
    id: Mapped[str] = mapped_column(Unicode(191), primary_key=True)
    next_run_time: Mapped[float | None] = mapped_column(Float(25), index=True)
    job_state: Mapped[bytes] = mapped_column(LargeBinary)


class RateSlot(Base):
    """A shared rate limit (GCRA): ``next_free`` is when the next message may go out.

    Every sender of every process reserves its messages by moving ``next_free`` forward in
    one UPDATE, so the relay sees one rate however many workers send
    (:mod:`newsexchange.common.pacing`)."""

    __tablename__ = "rate_limits"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    next_free: Mapped[datetime]


class Alert(Base):
    """Operator alerts already sent, so each condition is mailed once."""

    __tablename__ = "alerts"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    message: Mapped[str] = mapped_column(Text)


#: The largest id (or count) the database holds: SQLite's INTEGER and PostgreSQL's BIGINT are
#: 64-bit signed; past it the driver raises (OverflowError, "out of range") instead of finding
#: nothing. The web app's ``{name:id}`` and the CLI's ``db_int`` refuse anything larger.
MAX_ID = 2**63 - 1


class QueuedMail(Base):
    """A system mail (approval request, reminder, acknowledgement, notice to editors) written
    in the transaction that decided it and sent after the commit by
    :func:`newsexchange.mail.queue.flush`: a slow relay never holds a write lock, a failed
    send is retried (same bytes, same Message-ID) instead of lost."""

    __tablename__ = "mail_queue"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    recipient: Mapped[str] = mapped_column(String(320))
    #: the whole RFC 5322 message as it goes out (CRLF; UTF-8 where 8bit)
    message: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(255))
    digest_id: Mapped[int | None] = mapped_column(
        ForeignKey("digests.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|sent|failed
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
