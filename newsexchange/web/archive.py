"""The public archive: sent digests per exchange and language, "view online", Atom feeds.

- ``GET /archive`` — every exchange with its sent digests, newest first (``/`` leads here).
- ``GET /archive/{exchange}`` — one exchange's sent digests.
- ``GET /archive/{exchange}/atom.xml`` — the same as an Atom feed (feedgen), so any newsroom
  can follow the exchange in a feed reader.
- ``GET /digests/{id}`` — the digest as mailed ("view in browser"), once it is approved,
  sending or sent. Drafts, digests awaiting approval, rejected and held ones are 404: what
  the editors have not approved is not public.
- ``GET /digests/{id}/events.ics`` — that digest's events as iCalendar (the mail's
  attachment), public exactly when the digest is.
- ``GET /archive/{exchange}/events.ics`` — the exchange's subscribable calendar: the events
  of its public digests, each event once (the copy of the digest approved last), those that
  ended over a year ago left out, at most :data:`CALENDAR_EVENTS`. Both calendars answer a
  conditional GET (ETag of the body, Last-Modified of the newest approval) with 304, so a
  calendar program polling every few hours costs a few headers.

What is shown of an approved digest is its frozen content (what the editors approved), never
the live items. The view-online page is the mailed HTML itself; the one per-recipient part,
the unsubscribe link, points at the archive's note on unsubscribing (a public page cannot
know who is reading it). It is served with a strict Content-Security-Policy: no scripts, no
frames, no forms — belt and braces on top of the sanitizing and escaping the digest had.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from markupsafe import Markup, escape
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from newsexchange.config import Config, ExchangeSettings
from newsexchange.db import Database, Digest, Session
from newsexchange.db.queries import digests as queries
from newsexchange.digest import render
from newsexchange.digest.content import digest_content
from newsexchange.digest.ics import (
    CalendarEvent,
    calendar_bytes,
    content_events,
    digest_stamp,
    exchange_calendar_url,
    merge_events,
    with_cancellations,
)
from newsexchange.digest.states import PUBLIC, DigestState
from newsexchange.errors import ConfigError
from newsexchange.i18n import LANGUAGES, SOURCE_LANGUAGE, gettext_for
from newsexchange.templating import environment
from newsexchange.web import deps
from newsexchange.web import ids as ids  # registers the {name:id} convertor

__all__ = [
    "PUBLIC_STATES",
    "atom_feed",
    "exchange_calendar",
    "language_label",
    "page_language",
    "routes",
    "sent_digests",
]

log = logging.getLogger(__name__)

PUBLIC_STATES = PUBLIC
FEED_ENTRIES = 20
VIEW_CSP = (
    "default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Vary: the index and the 404 page follow Accept-Language.
PAGE_HEADERS = {"cache-control": "public, max-age=300", "vary": "Accept-Language"}
# The calendars: what a calendar program subscribes to (the body says PUBLISH itself).
CALENDAR_MEDIA_TYPE = "text/calendar; charset=utf-8"
CALENDAR_HEADERS = {
    "cache-control": "public, max-age=3600",
    "content-disposition": 'inline; filename="events.ics"',
    "x-content-type-options": "nosniff",
}
CALENDAR_DIGESTS = 72  # per public state: three years of digests at two a month
CALENDAR_EVENTS = 1000
CALENDAR_KEEP_DAYS = 366


def page_language(accept_language: str | None) -> str:
    """The archive index's language: it lists every exchange, so it speaks the reader's
    browser language (Accept-Language, by q-value) when that is fi, ru or en, else English.
    An exchange's own pages and feed speak the exchange's language."""
    best: tuple[float, str] = (0.0, SOURCE_LANGUAGE)
    for i, part in enumerate((accept_language or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        lang = tag.strip().lower().split("-")[0]
        if lang in LANGUAGES and q > best[0]:
            best = (q - i * 1e-6, lang)  # the first of equal weights wins
    return best[1]


def language_label(code: str, page_lang: str) -> str:
    """ "venäjä", "финский", "Russian": a language's name in the page's language."""
    return render.language_name(code, page_lang)


def _content(session: Session, config: Config, digest: Digest) -> dict[str, Any]:
    """What was approved (the frozen content) — or, before freezing, what would be shown."""
    if isinstance(digest.frozen, dict) and digest.frozen.get("items") is not None:
        return digest.frozen
    return digest_content(session, config, digest)


def _subject(config: Config, exchange: ExchangeSettings, digest: Digest) -> str:
    if digest.subject:
        return digest.subject
    return render.subject_for(config, exchange, digest.period_start, digest.period_end)


def _period(digest: Digest) -> str:
    try:
        return render.format_period(digest.period_start, digest.period_end, digest.language)
    except Exception:  # a language without labels: fall back to ISO dates
        return f"{digest.period_start.isoformat()} – {digest.period_end.isoformat()}"


def _exchange(config: Config, exchange_id: str) -> ExchangeSettings:
    try:
        return config.exchange(exchange_id)
    except ConfigError:
        raise HTTPException(404, f"no exchange {exchange_id!r}") from None


def sent_digests(db: Database, exchange_id: str, *, limit: int | None = None) -> list[Digest]:
    """The exchange's sent digests, newest period first (detached from their session)."""
    with db.session() as s:
        return queries.exchange_digests(s, exchange_id, state=DigestState.SENT.value, limit=limit)


def _row(config: Config, exchange: ExchangeSettings, digest: Digest) -> dict[str, Any]:
    tz = config.exchange_tz(exchange)
    sent = digest.sent_at or digest.approved_at
    return {
        "id": digest.id,
        "url": f"{config.public_url}/digests/{digest.id}",
        "subject": _subject(config, exchange, digest),
        "period": _period(digest),
        "sent": sent.astimezone(tz).strftime("%Y-%m-%d %H:%M") if sent else "",
        "tz": str(tz),
    }


def atom_feed(config: Config, db: Database, exchange: ExchangeSettings, *, now: datetime) -> bytes:
    """The exchange's sent digests as an Atom 1.0 document (newest first)."""
    from feedgen.feed import FeedGenerator

    base = config.public_url
    page = f"{base}/archive/{exchange.id}"
    digests = sent_digests(db, exchange.id, limit=FEED_ENTRIES)
    fg = FeedGenerator()
    fg.id(page)
    fg.title(exchange.display_name)
    _ = gettext_for(exchange.language)  # the feed speaks the exchange's language
    fg.subtitle(
        _(
            "Digests of the %(exchange)s news exchange (%(language)s)",
            exchange=exchange.display_name,
            language=language_label(exchange.language, exchange.language),
        )
    )
    fg.link(href=page, rel="alternate", type="text/html")
    fg.link(href=f"{page}/atom.xml", rel="self", type="application/atom+xml")
    # The exchange's events calendar, for readers that offer "related" links.
    fg.link(href=f"{page}/events.ics", rel="related", type="text/calendar", title=_("Events"))
    fg.language(exchange.language)
    fg.author({"name": exchange.display_name})
    fg.generator("newsexchange")
    stamps = [d.sent_at for d in digests if d.sent_at]
    fg.updated(max(stamps) if stamps else now)
    with db.session() as s:
        for d in reversed(digests):  # feedgen prepends: oldest first gives newest on top
            d = s.merge(d, load=True)
            content = _content(s, config, d)
            fe = fg.add_entry()
            url = f"{base}/digests/{d.id}"
            fe.id(url)
            fe.title(_subject(config, exchange, d))
            fe.link(href=url, rel="alternate", type="text/html")
            when = d.sent_at or d.approved_at or now
            fe.published(when)
            fe.updated(when)
            items = content.get("items") or []
            fe.summary(" · ".join(str(i.get("title", "")) for i in items[:10]) or _period(d))
            fe.content(_entry_html(items), type="html")
    return bytes(fg.atom_str(pretty=True))


def exchange_calendar(
    config: Config, db: Database, exchange: ExchangeSettings, *, now: datetime
) -> tuple[bytes, datetime | None]:
    """The exchange's calendar (every public digest's events, see the module doc) and when
    its newest digest was approved (None: no public digest yet; the calendar is empty)."""
    batches: list[list[CalendarEvent]] = []
    stamps: list[datetime] = []
    with db.session() as s:
        for state in PUBLIC_STATES:
            for d in queries.exchange_digests(s, exchange.id, state=state, limit=CALENDAR_DIGESTS):
                stamp = digest_stamp(d)
                stamps.append(stamp)
                batches.append(content_events(config, _content(s, config, d), stamp=stamp))
        events = merge_events(batches, now=now, keep_days=CALENDAR_KEEP_DAYS, limit=CALENDAR_EVENTS)
        events = with_cancellations(s, events)
    body = calendar_bytes(config, exchange, events, subscribable=True)
    # A cancellation noticed later changes the calendar too (its event's stamp is then).
    moments = [*stamps, *(ev.stamp for ev in events)]
    return body, max(moments) if moments else None


def _etag_matches(header: str, etag: str) -> bool:
    """If-None-Match (RFC 9110 §13.1.2): ``*`` or a list of tags, weak ones compared weakly."""
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or etag in (t.removeprefix("W/") for t in tags)


def calendar_response(request: Request, body: bytes, modified: datetime | None) -> Response:
    """A calendar with its validators, or 304 when the client's copy is current. The ETag is
    the body's hash (the body is deterministic for the same digests and day); If-None-Match
    wins over If-Modified-Since, as RFC 9110 §13.2.2 orders them."""
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {**CALENDAR_HEADERS, "etag": etag}
    if modified is not None:
        modified = modified.astimezone(UTC).replace(microsecond=0)
        headers["last-modified"] = format_datetime(modified, usegmt=True)
    inm = request.headers.get("if-none-match")
    ims = request.headers.get("if-modified-since")
    if inm is not None:
        if _etag_matches(inm, etag):
            return Response(status_code=304, headers=headers)
    elif ims and modified is not None:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            since = None
        if since is not None and since.tzinfo is not None and modified <= since:
            return Response(status_code=304, headers=headers)
    return Response(body, media_type=CALENDAR_MEDIA_TYPE, headers=headers)


def _entry_html(items: list[dict[str, Any]]) -> str:
    """An item list for feed readers: titles linked to the originals, with their sources.
    Every value is escaped here; the feed reader gets no markup from the feeds we read."""
    parts = [Markup("<ul>")]
    for it in items:
        title = escape(it.get("title") or "")
        link = it.get("link") or ""
        source = escape(it.get("source_name") or it.get("source_id") or "")
        summary = escape(it.get("summary_text") or "")
        head = (
            Markup('<a href="{}">{}</a>').format(link, title)
            if link.startswith(("http://", "https://"))
            else title
        )
        parts.append(
            Markup("<li><p><strong>{}</strong> — {}</p><p>{}</p></li>").format(
                head, source, summary
            )
        )
    parts.append(Markup("</ul>"))
    return str(Markup("").join(parts))


class _Pages:
    """The archive's handlers, over one config and database."""

    def __init__(self, config: Config, db: Database) -> None:
        self.config = config
        self.db = db

    def page(self, template: str, lang: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = environment(lang).get_template(template).render(config=self.config, **ctx)
        return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)

    def exchange_view(
        self, ex: ExchangeSettings, page_lang: str, limit: int | None = None
    ) -> dict[str, Any]:
        config = self.config
        return {
            "id": ex.id,
            "name": ex.display_name,
            "language": ex.language,
            "language_name": language_label(ex.language, page_lang),
            "regions": [config.regions[r].name if r in config.regions else r for r in ex.from_],
            "digests": [_row(config, ex, d) for d in sent_digests(self.db, ex.id, limit=limit)],
            "url": f"/archive/{ex.id}",
            "atom": f"/archive/{ex.id}/atom.xml",
            "calendar": f"/archive/{ex.id}/events.ics",
            # webcal:// opens the subscription dialog of most calendar programs (Apple,
            # Outlook, Thunderbird); the https link suits "add by URL" (Google Calendar).
            "webcal": "webcal://" + exchange_calendar_url(config, ex.id).split("://", 1)[1],
        }

    def archive_index(self, request: Request) -> Response:
        lang = page_language(request.headers.get("accept-language"))
        exchanges = [self.exchange_view(ex, lang, limit=6) for ex in self.config.exchanges]
        return self.page("web/archive.html", lang, exchanges=exchanges)

    def archive_exchange(self, request: Request) -> Response:
        ex = _exchange(self.config, request.path_params["exchange"])
        return self.page(
            "web/archive_exchange.html", ex.language, exchange=self.exchange_view(ex, ex.language)
        )

    def archive_atom(self, request: Request) -> Response:
        ex = _exchange(self.config, request.path_params["exchange"])
        return Response(
            atom_feed(self.config, self.db, ex, now=deps.now(request)),
            media_type="application/atom+xml; charset=utf-8",
            headers=PAGE_HEADERS,
        )

    def archive_calendar(self, request: Request) -> Response:
        ex = _exchange(self.config, request.path_params["exchange"])
        body, modified = exchange_calendar(self.config, self.db, ex, now=deps.now(request))
        return calendar_response(request, body, modified)

    def digest_calendar(self, request: Request) -> Response:
        config = self.config
        digest_id: int = request.path_params["digest_id"]
        with self.db.session() as s:
            digest = s.get(Digest, digest_id)
            if digest is None or digest.state not in PUBLIC_STATES:
                # Public exactly when /digests/{id} is; the same 404 whether it exists or not.
                lang = page_language(request.headers.get("accept-language"))
                return self.page("web/digest_view.html", lang, status=404, missing=True)
            ex = _exchange(config, digest.exchange_id)
            stamp = digest_stamp(digest)
            events = content_events(config, _content(s, config, digest), stamp=stamp)
            events = with_cancellations(s, events)
        modified = max([stamp, *(ev.stamp for ev in events)])
        return calendar_response(request, calendar_bytes(config, ex, events), modified)

    def digest_view(self, request: Request) -> Response:
        config = self.config
        digest_id: int = request.path_params["digest_id"]  # an int the database holds (web/ids.py)
        with self.db.session() as s:
            digest = s.get(Digest, digest_id)
            if digest is None or digest.state not in PUBLIC_STATES:
                # Unsent drafts are not public; the same 404 whether it exists or not.
                lang = page_language(request.headers.get("accept-language"))
                return self.page("web/digest_view.html", lang, status=404, missing=True)
            ex = _exchange(config, digest.exchange_id)
            rendered = render.render_digest(
                s,
                config,
                digest,
                view_url=f"{config.public_url}/digests/{digest.id}",
                # Direct links on the public page: crawlers follow every link there, and
                # the counts are the mailed digest's (issue 14).
                clicks=False,
            )
        html = rendered.html.replace(
            render.UNSUBSCRIBE_MARKER,
            str(escape(f"{config.public_url}/archive/{ex.id}#unsubscribe")),
        )
        return HTMLResponse(
            html,
            headers={**PAGE_HEADERS, "content-security-policy": VIEW_CSP},
        )

    def home(self, _request: Request) -> Response:
        # The public face of the exchange is its archive.
        return RedirectResponse("/archive", status_code=307)


def routes(config: Config, db: Database) -> list[BaseRoute]:
    pages = _Pages(config, db)
    return [
        Route("/", pages.home, methods=["GET", "HEAD"]),
        Route("/archive", pages.archive_index, methods=["GET", "HEAD"]),
        Route("/archive/{exchange}", pages.archive_exchange, methods=["GET", "HEAD"]),
        Route("/archive/{exchange}/atom.xml", pages.archive_atom, methods=["GET", "HEAD"]),
        Route("/archive/{exchange}/events.ics", pages.archive_calendar, methods=["GET", "HEAD"]),
        Route("/digests/{digest_id:id}", pages.digest_view, methods=["GET", "HEAD"]),
        Route("/digests/{digest_id:id}/events.ics", pages.digest_calendar, methods=["GET", "HEAD"]),
    ]
