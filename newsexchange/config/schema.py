"""The configuration's shape: one frozen pydantic model per section of feeds.yaml, and the
checks of single values (ids, URLs, addresses, time zones).

Secrets never live in the file: it names environment variables (``*_env`` keys) and
:meth:`Config.secret` reads them from the environment snapshot taken at load time.
"""

from __future__ import annotations

import os
import re
import secrets as _secrets
from collections.abc import Mapping
from datetime import time as dtime
from pathlib import Path
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from newsexchange import __version__
from newsexchange.common.addresses import parse_allowed
from newsexchange.errors import ConfigError
from newsexchange.private import make_private_dir

__all__ = [
    "DEFAULT_CONFIG",
    "EMAIL_RE",
    "ID_RE",
    "LANGUAGES",
    "ApprovalSettings",
    "Config",
    "EditorSettings",
    "ExchangeSettings",
    "FetchSettings",
    "HtmlSelect",
    "ImapSettings",
    "Language",
    "ListSettings",
    "MailSettings",
    "ProviderSettings",
    "RegionSettings",
    "ScheduleSettings",
    "SendgridSettings",
    "ServiceSettings",
    "SmtpSettings",
    "SourceSettings",
    "TranslationSettings",
    "database_url",
]

Language = Literal["fi", "ru", "en"]
LANGUAGES: tuple[str, ...] = get_args(Language)
ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
DEFAULT_CONFIG = "feeds.yaml"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_id(value: str) -> str:
    if not ID_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid id (expected lowercase letters, digits, '-', '_' or '.')"
        )
    return value


def _check_url(value: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*):(//)?", value)
    if m and m.group(1).lower() == "file" and "file" in schemes and len(value) > 5:
        return value  # file:relative/path (from the folder of feeds.yaml) or file:///abs
    if not m or not m.group(2) or m.group(1).lower() not in schemes:
        raise ValueError(
            f"{value!r} is not a URL (expected {' or '.join(s + '://…' for s in schemes)})"
        )
    if m.group(1).lower() in ("http", "https") and not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"{value!r} has no host")
    return value


def _check_email(value: str) -> str:
    addr = value
    m = re.match(r"^.*<([^>]+)>\s*$", value)
    if m:
        addr = m.group(1)
    if not EMAIL_RE.match(addr.strip()):
        raise ValueError(f"{value!r} is not an email address (expected name@example.org)")
    return value


class FetchSettings(_Model):
    """How sources are fetched; the defaults suit a few hundred regional feeds."""

    interval_minutes: int = Field(30, ge=1)
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(30.0, gt=0)
    total_timeout: float = Field(60.0, gt=0)
    max_body_bytes: int = Field(10_000_000, ge=1024)
    max_redirects: int = Field(5, ge=0, le=20)
    concurrency: int = Field(50, ge=1, le=1000)
    per_host: int = Field(4, ge=1, le=100)
    retries: int = Field(2, ge=0, le=10)
    max_backoff_hours: float = Field(24.0, gt=0)
    summary_chars: int = Field(500, ge=50)
    # ``fulltext: true`` sources: the most of an article page's main text kept as the item's
    # summary (whole paragraphs, cut at a sentence when one paragraph is longer).
    fulltext_chars: int = Field(1500, ge=200, le=20000)
    # ``kind: ical`` sources: the occurrences read are those that start from a day ago up to
    # this many days ahead (recurring events are expanded within that window only).
    event_window_days: int = Field(90, ge=1, le=730)
    user_agent: str | None = None
    # Worker processes that parse big runs (100+ sources); 0 parses in the fetching process.
    parse_workers: int = Field(0, ge=0, le=16)
    # host:port pairs the fetcher may reach although they are loopback, private, link-local …
    # (["127.0.0.1:8765"]); every other internal address is refused (docs/ingestion.md).
    allow_private: list[str] = Field(default_factory=list)

    @field_validator("allow_private")
    @classmethod
    def _v_allow_private(cls, v: list[str]) -> list[str]:
        out, wrong = [], []
        for x in v:
            try:
                out.append(parse_allowed(x).host_port)
            except ValueError as exc:
                wrong.append(str(exc))
        if wrong:
            raise ValueError("; ".join(wrong))
        return out


class SmtpSettings(_Model):
    host: str = "localhost"
    port: int = Field(25, ge=1, le=65535)
    starttls: bool = False
    tls: bool = False
    username_env: str | None = None
    password_env: str | None = None
    connections: int = Field(2, ge=1, le=16)
    timeout: float = Field(30.0, gt=0)


class SendgridSettings(_Model):
    api_key_env: str = "SENDGRID_API_KEY"
    base_url: str = "https://api.sendgrid.com"
    webhook_public_key_env: str = "SENDGRID_WEBHOOK_PUBLIC_KEY"
    inbound_secret_env: str = "SENDGRID_INBOUND_SECRET"
    timeout: float = Field(30.0, gt=0)
    # Event Webhook: a signed timestamp older or further ahead than this is a replay (or a
    # wrong clock) and is refused; SendGrid recommends 5 minutes.
    webhook_max_age_seconds: int = Field(300, ge=1, le=86400)
    # Body caps, enforced while reading (and from Content-Length before): 413 beyond them.
    webhook_max_bytes: int = Field(4 * 1024 * 1024, ge=1024)  # a batch of events is small
    inbound_max_bytes: int = Field(20 * 1024 * 1024, ge=1024)  # an inbound mail post

    _v_url = field_validator("base_url")(_check_url)


class ImapSettings(_Model):
    host: str
    port: int = Field(993, ge=1, le=65535)
    ssl: bool = True
    username_env: str = "IMAP_USER"
    password_env: str = "IMAP_PASSWORD"
    folder: str = "INBOX"
    processed_folder: str | None = None  # replies handled are moved here (else only flagged)
    # The authserv-id your receiving server writes first in the Authentication-Results
    # headers it adds (e.g. "mx.example.org"); only those headers vouch for a reply's sender.
    # Unset: replies read by IMAP cannot be verified and never act (docs/approval.md).
    authserv_id: str | None = None


class MailSettings(_Model):
    backend: Literal["outbox", "smtp", "sendgrid"] = "outbox"
    from_: str = Field("Joensuu–Petrozavodsk news exchange <news@example.org>", alias="from")
    reply_to: str | None = None
    outbox_dir: str = "var/outbox"
    # Messages per second for *all* senders of this backend on one database together (a
    # shared GCRA slot in the ``rate_limits`` table, see delivery/send.py), not per process.
    rate_per_second: float = Field(50.0, gt=0)
    # How long a claimed delivery stays a sender's without a heartbeat. A live sender renews
    # its claims every third of this; a dead one's rows (kill -9, a lost host) are taken by
    # another sender once it has passed. At least 5 s, so a loaded database or a GC pause
    # between two heartbeats cannot make a live sender's claims look stale.
    claim_ttl_seconds: float = Field(30.0, ge=5)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    sendgrid: SendgridSettings = Field(default_factory=SendgridSettings)
    imap: ImapSettings | None = None
    operators: list[str] = Field(default_factory=list)
    # The sender's display name per language ({fi: "Uutisvaihto", ru: "Обмен новостями"}):
    # mail in that language is from "<name> <address of from>"; other languages keep from.
    from_names: dict[Language, str] = Field(default_factory=dict)

    _v_from = field_validator("from_")(_check_email)

    def sender(self, language: str | None) -> str:
        """``from`` with the display name of ``language`` when one is given (from_names)."""
        from email.utils import formataddr, parseaddr

        name = self.from_names.get(language) if language else None  # type: ignore[call-overload]
        return formataddr((name, parseaddr(self.from_)[1])) if name else self.from_

    @field_validator("operators")
    @classmethod
    def _v_ops(cls, v: list[str]) -> list[str]:
        return [_check_email(x) for x in v]


class ProviderSettings(_Model):
    name: Literal["libre", "google", "deepl", "microsoft", "mymemory", "argos"]
    url: str | None = None
    api_key_env: str | None = None
    region: str | None = None
    timeout: float = Field(20.0, gt=0)
    requests_per_second: float | None = Field(None, gt=0)
    chars_per_day: int | None = Field(None, gt=0)
    max_chars: int | None = Field(None, gt=100)

    @field_validator("url")
    @classmethod
    def _v_url(cls, v: str | None) -> str | None:
        return None if v is None else _check_url(v)


class TranslationSettings(_Model):
    providers: list[ProviderSettings] = Field(default_factory=list)
    glossary: str | None = None
    max_attempts_backoff_hours: float = Field(6.0, gt=0)


class RegionSettings(_Model):
    name: str
    language: Language
    timezone: str = "Europe/Helsinki"
    # Place names of the region (towns, districts, landmarks; any language), beside the
    # glossary's: the source watchdog expects a region's sources to mention some of them, and
    # an event's town is the first of them its location names.
    places: list[str] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _v_tz(cls, v: str) -> str:
        return _check_tz(v)


class HtmlSelect(_Model):
    """CSS selectors for a page without a feed; ``sel@attr`` reads an attribute."""

    item: str
    title: str
    link: str = "a@href"
    date: str | None = None
    summary: str | None = None
    event_date: str | None = None  # when the event starts (the item is then an event)
    event_end: str | None = None  # when it ends
    place: str | None = None  # where: "venue, town" or either


class SourceSettings(_Model):
    id: str
    region: str
    url: str
    language: Language
    category: Literal["news", "events"] = "news"
    kind: Literal["feed", "html", "ical"] = "feed"
    name: str | None = None
    weight: float = Field(1.0, ge=0)
    enabled: bool = True
    # kind: html only. Without it, the page's schema.org Event data (JSON-LD, microdata) is read.
    select: HtmlSelect | None = None
    # Fetch each new item's article page once and keep its main text as the summary.
    fulltext: bool = False
    # Keep only items that name a place of the source's region (for national feeds).
    require_place: bool = False
    # The source watchdog flags a source with no new item for this many days.
    stale_days: int = Field(30, ge=1, le=3650)

    _v_id = field_validator("id")(_check_id)

    @field_validator("url")
    @classmethod
    def _v_url(cls, v: str) -> str:
        return _check_url(v, ("http", "https", "file"))

    @model_validator(mode="before")
    @classmethod
    def _v_calendar_category(cls, data: Any) -> Any:
        """A calendar's items are events unless the source says otherwise."""
        if isinstance(data, dict) and data.get("kind") == "ical" and "category" not in data:
            return {**data, "category": "events"}
        return data

    @model_validator(mode="after")
    def _v_kind(self) -> SourceSettings:
        if self.kind != "html" and self.select is not None:
            raise ValueError(
                f"select: is only for kind: html sources (this one is kind: {self.kind})"
            )
        if self.kind == "ical" and self.fulltext:
            raise ValueError("fulltext: is for feeds and pages, not kind: ical calendars")
        return self

    @property
    def display_name(self) -> str:
        return self.name or self.id


class ListSettings(_Model):
    language: Language
    file: str | None = None
    name: str | None = None
    # The list's name per language ({fi: …, ru: …}), shown on its unsubscribe page and in
    # List-Id; a language not given falls back to name.
    names: dict[Language, str] = Field(default_factory=dict)

    def name_in(self, language: str | None) -> str | None:
        return self.names.get(language, self.name) if language else self.name  # type: ignore[call-overload]


class ScheduleSettings(_Model):
    days: list[int] = Field(default_factory=lambda: [1, 16])
    time: str = "09:00"

    @field_validator("days")
    @classmethod
    def _v_days(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("days must name at least one day of the month")
        for d in v:
            if not 1 <= d <= 28:
                raise ValueError(
                    f"day {d} is out of range (expected 1 to 28, so every month has it)"
                )
        if len(set(v)) != len(v):
            raise ValueError("days repeat a day")
        return sorted(v)

    @field_validator("time")
    @classmethod
    def _v_time(cls, v: str) -> str:
        if not re.match(r"^([01]\d|2[0-3]):[0-5]\d$", v):
            raise ValueError(f"{v!r} is not a time of day (expected HH:MM, 24-hour)")
        return v

    @property
    def at(self) -> dtime:
        h, m = self.time.split(":")
        return dtime(int(h), int(m))


class ApprovalSettings(_Model):
    link_valid_days: float = Field(7.0, gt=0)
    reminder_hours: float = Field(48.0, gt=0)
    deadline_hours: float = Field(120.0, gt=0)
    on_deadline: Literal["hold", "reject"] = "hold"


class ImpactSettings(_Model):
    """What an exchange measures of its digests' impact (docs/impact.md).

    ``clicks``: links in the digest go through the signed ``/r/`` redirect on ``public_url``,
    which counts clicks per story in aggregate (nothing about who clicked; no cookie; never an
    open-tracking pixel); off, links go straight to the source. ``pickup_days``: how long after
    sending the receiving side's media are watched for retellings of each story.
    ``pickup_min_score``: the score from which a candidate is suggested to the editors."""

    clicks: bool = True
    pickup_days: int = Field(21, ge=1, le=365)
    pickup_min_score: float = Field(0.5, ge=0.0, le=1.0)


class EditorSettings(_Model):
    """An editor given as ``{email: …, language: ru}``: mails and pages in that language."""

    email: str
    language: Language | None = None

    @field_validator("email")
    @classmethod
    def _v_email(cls, v: str) -> str:
        return _check_email(v).strip().lower()


class ExchangeSettings(_Model):
    id: str
    name: str | None = None
    from_: list[str] = Field(alias="from", min_length=1)
    to: str | None = None
    language: Language
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    # editors: [a@x.fi, {email: b@x.ru, language: ru}]: a bare address speaks the language of
    # the exchange's first source region (Config.editor_language).
    editor_entries: list[str | EditorSettings] = Field(alias="editors", min_length=1)
    approvals_required: int = Field(1, ge=1)
    lists: list[str] = Field(default_factory=list)
    max_items: int = Field(20, ge=1, le=500)
    # fewer items than this: never sent for approval, approved or sent (digest/sendable.py)
    min_items: int = Field(1, ge=1, le=500)
    max_per_source: int = Field(5, ge=1)
    include_untranslated: bool = False
    source_weights: dict[str, float] = Field(default_factory=dict)
    approval: ApprovalSettings = Field(default_factory=ApprovalSettings)
    impact: ImpactSettings = Field(default_factory=ImpactSettings)

    _v_id = field_validator("id")(_check_id)

    @field_validator("editor_entries")
    @classmethod
    def _v_editors(cls, v: list[str | EditorSettings]) -> list[str | EditorSettings]:
        return [x if isinstance(x, EditorSettings) else _check_email(x).strip().lower() for x in v]

    @property
    def editors(self) -> list[str]:
        """The editors' addresses (lowercase), in the order given."""
        return [x.email if isinstance(x, EditorSettings) else x for x in self.editor_entries]

    @property
    def editor_languages(self) -> dict[str, Language]:
        """The languages editors asked for by ``{email, language}``."""
        return {
            x.email: x.language
            for x in self.editor_entries
            if isinstance(x, EditorSettings) and x.language is not None
        }

    @model_validator(mode="after")
    def _v_required(self) -> ExchangeSettings:
        if self.approvals_required > len(self.editors):
            raise ValueError(
                f"approvals_required is {self.approvals_required} but only "
                f"{len(self.editors)} editor(s) are listed"
            )
        return self

    @property
    def display_name(self) -> str:
        return self.name or self.id


class ServiceSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    jitter_seconds: int = Field(120, ge=0)
    imap_poll_minutes: float = Field(5.0, gt=0)
    dispatch_minutes: float = Field(2.0, gt=0)
    # docs/operations.md: approval reminders/deadlines and operator alerts are checked this
    # often; a job's lease (the `locks` row) lasts lock_ttl_seconds and is renewed while it
    # runs; demo: true builds the in-progress period once so the offline demo shows a cycle.
    approvals_minutes: float = Field(10.0, gt=0)
    alerts_minutes: float = Field(15.0, gt=0)
    # 30 s (was 120): on PostgreSQL a job whose lease a dead worker on another host still
    # holds is retried by the queue until the lease expires, so the TTL is the failover time
    # across hosts; renewed every ttl/3, a live holder never loses it.
    lock_ttl_seconds: float = Field(30.0, ge=5)
    demo: bool = False
    # The work queue (PostgreSQL only, docs/operations.md "The work queue"): deliveries per
    # send shard, sources per fetch job, jobs one worker runs at once (sync tasks run in
    # threads), how often a worker's heartbeat is written, after how long without one its
    # jobs are taken as stalled and retried elsewhere, how often each worker looks for such
    # jobs, and how soon a job whose lease is held elsewhere is tried again.
    send_shard_size: int = Field(1000, ge=1)
    fetch_batch: int = Field(10, ge=1)
    queue_concurrency: int = Field(4, ge=1, le=64)
    heartbeat_seconds: float = Field(2.0, gt=0)
    stalled_seconds: float = Field(10.0, gt=0)
    reaper_seconds: float = Field(3.0, gt=0)
    busy_retry_seconds: int = Field(5, ge=1)


class Config(_Model):
    """The whole, validated configuration. Paths are absolute (relative ones are taken
    from the folder of feeds.yaml)."""

    timezone: str = "Europe/Helsinki"
    database_url: str = "sqlite:///var/newsexchange.db"
    # Seconds a write waits for another process's write transaction on SQLite before it
    # fails with "database is locked" (the command then says so and exits 1).
    database_busy_timeout: float = Field(30.0, gt=0)
    public_url: str = "http://localhost:8080"
    data_dir: str = "var"
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    mail: MailSettings = Field(default_factory=MailSettings)
    translation: TranslationSettings = Field(default_factory=TranslationSettings)
    regions: dict[str, RegionSettings] = Field(default_factory=dict)
    sources: list[SourceSettings] = Field(default_factory=list)
    lists: dict[str, ListSettings] = Field(default_factory=dict)
    exchanges: list[ExchangeSettings] = Field(default_factory=list)
    service: ServiceSettings = Field(default_factory=ServiceSettings)

    _path: Path | None = PrivateAttr(default=None)
    _env: Mapping[str, str] = PrivateAttr(default_factory=dict)
    _lines: Mapping[tuple[str | int, ...], int] = PrivateAttr(default_factory=dict)

    _v_tz = field_validator("timezone")(lambda v: _check_tz(v))
    _v_public = field_validator("public_url")(lambda v: _check_url(v).rstrip("/"))

    # -- lookups -------------------------------------------------------------------------
    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def base_dir(self) -> Path:
        return self._path.parent if self._path else Path.cwd()

    def resolve(self, p: str) -> Path:
        """A path from the file, made absolute against the folder of feeds.yaml."""
        path = Path(p).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)

    @property
    def var_dir(self) -> Path:
        return self.resolve(self.data_dir)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def user_agent(self) -> str:
        return self.fetch.user_agent or (
            f"newsexchange/{__version__} (+{self.public_url}; regional news exchange)"
        )

    def source(self, source_id: str) -> SourceSettings:
        for s in self.sources:
            if s.id == source_id:
                return s
        raise ConfigError(f"no source with id {source_id!r}")

    def exchange(self, exchange_id: str) -> ExchangeSettings:
        for e in self.exchanges:
            if e.id == exchange_id:
                return e
        known = ", ".join(e.id for e in self.exchanges) or "none"
        raise ConfigError(f"no exchange with id {exchange_id!r} (known: {known})")

    def editor_language(self, exchange: ExchangeSettings, editor: str) -> Language:
        """The language ``editor`` reads mails and pages of ``exchange`` in: the one given with
        their address, else that of the exchange's first source region (the editors of
        an exchange work on the side whose news it carries)."""
        given = exchange.editor_languages.get(editor.strip().lower())
        if given is not None:
            return given
        region = self.regions.get(exchange.from_[0])
        return region.language if region is not None else "en"

    def region_tz(self, region_id: str) -> ZoneInfo:
        region = self.regions.get(region_id)
        return ZoneInfo(region.timezone) if region else self.tz

    def exchange_tz(self, exchange: ExchangeSettings) -> ZoneInfo:
        """The target region's time zone: where the digest's readers live."""
        if exchange.to and exchange.to in self.regions:
            return self.region_tz(exchange.to)
        for rid, region in self.regions.items():
            if rid not in exchange.from_ and region.language == exchange.language:
                return ZoneInfo(region.timezone)
        return self.tz

    def secret(self, env_name: str | None) -> str | None:
        """The value of an environment variable named in the file (``*_env`` keys)."""
        if not env_name:
            return None
        value = self._env.get(env_name)
        return value if value else None

    def line_of(self, *path: str | int) -> int | None:
        """The feeds.yaml line of a key path, for error messages that point at the file."""
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return None

    def error(self, message: str, *path: str | int) -> ConfigError:
        return ConfigError(
            message, file=str(self._path) if self._path else None, line=self.line_of(*path)
        )

    @property
    def secret_key(self) -> SecretStr:
        """The key that signs approval and unsubscribe links.

        From ``NEWSEXCHANGE_SECRET_KEY``; when unset, one is generated on first use and kept
        in ``var/secret_key`` (mode 0600) so links stay valid across restarts.
        """
        env = self._env.get("NEWSEXCHANGE_SECRET_KEY")
        if env:
            return SecretStr(env)
        key_file = self.var_dir / "secret_key"
        if key_file.exists():
            return SecretStr(key_file.read_text().strip())
        make_private_dir(key_file.parent)
        value = _secrets.token_urlsafe(48)
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it meanwhile: use theirs
            return SecretStr(key_file.read_text().strip())
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
        return SecretStr(value)


def _check_tz(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{v!r} is not a time zone (expected an IANA name like Europe/Helsinki)"
        ) from None
    return v


def database_url(cfg: Config) -> str:
    """The database URL, a relative SQLite path taken from the folder of feeds.yaml."""
    url = cfg.database_url
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        rel = url[len(prefix) :]
        if rel and not rel.startswith(":"):
            return prefix + str(cfg.resolve(rel))
    return url
