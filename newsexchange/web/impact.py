"""The impact pages: what a digest achieved, and an exchange's year on one printable page.

- ``GET /impact/{digest_id}`` — a sent (or approved, sending) digest's numbers: sent,
  delivered, bounced, complained, unsubscribed, clicks; each story with its clicks and its
  pick-ups (source, linked title, date, score, status, the evidence in a ``<details>``).
  Aggregates only, never a recipient: anyone with the link may read it (like the archive).
  Digests that were never approved are 404, the same as for the archive.
- ``GET /impact/{digest_id}?t=TOKEN`` — the same page for an editor: ``TOKEN`` is the
  desk's review link token (``approval/tokens.py``), signed, unexpired, for *this* digest
  and an editor of its exchange now. Then each suggestion has Confirm / Reject buttons. The
  review token is reused on purpose: editors already hold one per digest (the approval
  request and the status page carry it), and it proves exactly "an editor of this digest".
  Unlike the desk, the digest's version and state do not matter here (a sent digest is
  closed for review, not for judging its pick-ups), and the token is not consumed.
- ``POST /impact/{digest_id}`` — ``t``, ``csrf`` (:func:`~newsexchange.approval.tokens.
  csrf_value` of the token, as on the approval pages), ``pickup``, ``decision`` (confirm |
  reject): a missing or wrong CSRF value or token is a 403 and changes nothing; a pick-up of
  another digest is a 404. Then 303 back to the page (so a reload does not post again).
- ``GET /impact/{exchange}/{year}`` — per period a server-rendered SVG chart (stories sent,
  picked up, clicks) for each direction of the exchange; per outlet the stories it used; and
  a summary for a funder's report that prints on one page (``@media print``: no navigation,
  no charts' legends lost, no page break inside a table).

Decisions where the issue is silent:

- "Each direction": the exchange asked for, then every configured exchange running the other
  way (its sources speak this exchange's language and it is written in the language of this
  one's sources). An exchange with no counterpart shows its one direction.
- "Picked up" in the chart, the outlet lists and the summary counts **confirmed** pick-ups
  only (the issue: confirmed ones count in reports); suggestions are shown per period as a
  separate number so editors see what waits for them.
- "Media reached": the distinct outlets (sources) with a confirmed pick-up; copies delivered
  are given beside it. Regions have no country in feeds.yaml, so pick-ups are grouped by the
  source's region (its name), which for this exchange is the country side.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import date, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from newsexchange.approval.tokens import (
    ActionClaims,
    TokenError,
    check_csrf,
    csrf_value,
    read_action_token,
)
from newsexchange.config import Config, ExchangeSettings
from newsexchange.db import Database, Digest, Session
from newsexchange.digest.states import PUBLIC
from newsexchange.errors import ConfigError
from newsexchange.i18n import gettext_for
from newsexchange.impact.charts import bar_chart
from newsexchange.impact.pickups import confirm, reject
from newsexchange.impact.report import digest_impact, period_impact
from newsexchange.templating import environment
from newsexchange.web import deps
from newsexchange.web import ids as ids  # registers the {name:id} convertor

__all__ = ["editor_claims", "routes", "year_view"]

log = logging.getLogger(__name__)

#: Years a year page exists for: anything else is a 404 before the database is asked.
YEARS = range(2000, 2101)

PAGE_HEADERS = {
    "cache-control": "no-store",  # an editor's page carries its token
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "content-security-policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


def _page(template: str, lang: str | None, status: int = 200, **ctx: Any) -> HTMLResponse:
    html = environment(lang).get_template(template).render(**ctx)
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def _refused(lang: str | None, kind: str, message: str, status: int) -> HTMLResponse:
    return _page("web/token_error.html", lang, status, kind=kind, message=message)


def editor_claims(config: Config, token: str, digest: Digest, *, now: datetime) -> ActionClaims:
    """The editor a review token names, if it may judge this digest's pick-ups: signed,
    unexpired, a review token, for this digest, and its editor still an editor of the
    digest's exchange. Raises :class:`TokenError` otherwise."""
    claims = read_action_token(config, token, now=now)
    if claims.action != "review":
        raise TokenError("tampered", "This link is not a review link.", status=403)
    if claims.digest_id != digest.id:
        raise TokenError("other_digest", "This link belongs to another digest.", status=403)
    editors = [e.strip().lower() for e in config.exchange(digest.exchange_id).editors]
    if claims.editor not in editors:
        raise TokenError(
            "wrong_editor",
            "This link was made for an address that is not an editor of this exchange.",
            status=403,
        )
    return claims


def _source_names(config: Config) -> dict[str, tuple[str, str]]:
    """Source id → (its display name, its region's name)."""
    return {
        s.id: (
            s.display_name,
            config.regions[s.region].name if s.region in config.regions else s.region,
        )
        for s in config.sources
    }


def _public_digest(session: Session, digest_id: int) -> Digest | None:
    digest = session.get(Digest, digest_id)
    return digest if digest is not None and digest.state in PUBLIC else None


def digest_page(
    config: Config, db: Database, digest_id: int, token: str | None, now: datetime
) -> HTMLResponse:
    with db.session() as session:
        digest = _public_digest(session, digest_id)
        if digest is None:
            return _page("web/digest_view.html", None, 404, missing=True)
        exchange = config.exchange(digest.exchange_id)
        lang: str | None = exchange.language
        claims: ActionClaims | None = None
        if token:
            try:
                claims = editor_claims(config, token, digest, now=now)
            except TokenError as exc:
                return _refused(lang, exc.kind, exc.localized(lang), 403)
            lang = config.editor_language(exchange, claims.editor)
        data = digest_impact(session, config, digest.id)
        subject = digest.subject or f"#{digest.id}"
    names = _source_names(config)
    for story in data["stories"]:
        for p in story["pickups"]:
            p["source_name"], p["region"] = names.get(p["source"], (p["source"], ""))
            p["safe_url"] = p["url"] if str(p["url"]).startswith(("http://", "https://")) else ""
    return _page(
        "web/impact.html",
        lang,
        data=data,
        subject=subject,
        exchange=exchange,
        editor=claims.editor if claims else None,
        token=token if claims else None,
        csrf=csrf_value(config, token) if claims and token else None,
        year_url=f"/impact/{exchange.id}/{digest.period_start.year}",
    )


def decide_pickup(
    config: Config, db: Database, digest_id: int, form: dict[str, str], now: datetime
) -> Response:
    token = form.get("t", "")
    with db.session() as session:
        digest = _public_digest(session, digest_id)
        if digest is None:
            return _page("web/digest_view.html", None, 404, missing=True)
        lang = config.exchange(digest.exchange_id).language
        _ = gettext_for(lang)
        if not token or not check_csrf(config, token, form.get("csrf")):
            return _refused(
                lang,
                "csrf",
                _("This form is not valid (it did not come from the impact page)."),
                403,
            )
        try:
            claims = editor_claims(config, token, digest, now=now)
        except TokenError as exc:
            return _refused(lang, exc.kind, exc.localized(lang), 403)
        decision = form.get("decision")
        try:
            pickup_id = int(form.get("pickup", ""))
        except ValueError:
            pickup_id = -1
        ours = {
            p["id"]
            for s in digest_impact(session, config, digest.id)["stories"]
            for p in s["pickups"]
        }
        if decision not in ("confirm", "reject") or pickup_id not in ours:
            return _refused(lang, "refused", _("There is no such suggestion on this page."), 404)
        (confirm if decision == "confirm" else reject)(session, pickup_id, claims.editor, now)
        log.info(
            "pick-up decided",
            extra={"digest_id": digest.id, "pickup_id": pickup_id, "decision": decision},
        )
    return RedirectResponse(
        f"/impact/{digest_id}?t={token}#pickup-{pickup_id}", 303, headers=PAGE_HEADERS
    )


def _directions(config: Config, exchange: ExchangeSettings) -> list[ExchangeSettings]:
    """The exchange, then every exchange running the other way (see the module docstring)."""
    source_langs = {config.regions[r].language for r in exchange.from_ if r in config.regions}
    others = [
        ex
        for ex in config.exchanges
        if ex.id != exchange.id
        and ex.language in source_langs
        and any(
            r in config.regions and config.regions[r].language == exchange.language
            for r in ex.from_
        )
    ]
    return [exchange, *others]


def year_view(
    config: Config, session: Session, exchange: ExchangeSettings, year: int
) -> dict[str, Any]:
    """Everything the year page shows, as plain values (the template only lays it out)."""
    _ = gettext_for(exchange.language)
    names = _source_names(config)
    directions = []
    for ex in _directions(config, exchange):
        rows = period_impact(session, config, ex.id, date(year, 1, 1), date(year, 12, 31))
        outlets: dict[str, list[dict[str, Any]]] = defaultdict(list)
        delivered = 0
        for row in rows:
            delivered += int(row["delivered"])
            one = digest_impact(session, config, int(row["digest"]))
            for story in one["stories"]:
                for p in story["pickups"]:
                    if p["status"] == "confirmed":
                        outlets[p["source"]].append(
                            {
                                "story": story["title"],
                                "title": p["title"],
                                "url": p["url"],
                                "published_at": str(p["published_at"])[:10],
                                "digest": row["digest"],
                            }
                        )
        by_region: dict[str, int] = defaultdict(int)
        outlet_rows = []
        for source, used in sorted(outlets.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            name, region = names.get(source, (source, ""))
            by_region[region] += len(used)
            for u in used:
                u["safe_url"] = (
                    u["url"] if str(u["url"]).startswith(("http://", "https://")) else ""
                )
            outlet_rows.append({"source": source, "name": name, "region": region, "used": used})
        labels = [date.fromisoformat(str(r["period_start"])).strftime("%d.%m") for r in rows]
        regions = ", ".join(config.regions[r].name for r in ex.from_ if r in config.regions)
        title = _(
            "%(exchange)s: stories sent, picked up and clicks in %(year)s",
            exchange=ex.display_name,
            year=year,
        )
        chart = bar_chart(
            [
                (_("stories sent"), [int(r["stories"]) for r in rows]),
                (_("picked up"), [int(r["pickups"]) for r in rows]),
                (_("clicks"), [int(r["clicks"]) for r in rows]),
            ],
            labels,
            title=title,
        )
        directions.append(
            {
                "id": ex.id,
                "name": ex.display_name,
                "regions": regions,
                "rows": rows,
                "chart": chart,
                "stories": sum(int(r["stories"]) for r in rows),
                "picked_up": sum(int(r["pickups"]) for r in rows),
                "suggested": sum(int(r["pickups_suggested"]) for r in rows),
                "clicks": sum(int(r["clicks"]) for r in rows),
                "delivered": delivered,
                "media": len(outlet_rows),
                "outlets": outlet_rows,
                "by_region": sorted(by_region.items(), key=lambda kv: (-kv[1], kv[0])),
            }
        )
    return {"exchange": exchange, "year": year, "directions": directions}


def year_page(config: Config, db: Database, exchange_id: str, year: int) -> HTMLResponse:
    try:
        exchange = config.exchange(exchange_id)
    except ConfigError:
        exchange = None
    if exchange is None or year not in YEARS:
        return _page("web/digest_view.html", None, 404, missing=True)
    with db.session() as session:
        view = year_view(config, session, exchange, year)
    return _page("web/impact_year.html", exchange.language, **view)


async def digest_get(request: Request) -> Response:
    return await run_in_threadpool(
        digest_page,
        deps.config_of(request),
        deps.db_of(request),
        request.path_params["digest_id"],
        request.query_params.get("t"),
        deps.now(request),
    )


async def digest_post(request: Request) -> Response:
    form = await request.form()
    data = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    return await run_in_threadpool(
        decide_pickup,
        deps.config_of(request),
        deps.db_of(request),
        request.path_params["digest_id"],
        data,
        deps.now(request),
    )


async def year_get(request: Request) -> Response:
    return await run_in_threadpool(
        year_page,
        deps.config_of(request),
        deps.db_of(request),
        request.path_params["exchange"],
        request.path_params["year"],
    )


def routes(config: Config, db: Database) -> list[BaseRoute]:
    """The impact pages (handlers read the config, database and clock from the app)."""
    return [
        Route("/impact/{digest_id:id}", digest_get, methods=["GET", "HEAD"]),
        Route("/impact/{digest_id:id}", digest_post, methods=["POST"]),
        Route("/impact/{exchange}/{year:int}", year_get, methods=["GET", "HEAD"]),
    ]
