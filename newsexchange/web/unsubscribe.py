"""The unsubscribe page (RFC 8058 one-click).

``GET /unsubscribe/{token}`` (and ``HEAD``, which Starlette answers with the
GET handler) only shows a page with a button, because mail scanners and link previewers fetch
every URL in a message and must not unsubscribe anyone; every other method but POST is 405.
``POST /unsubscribe/{token}`` unsubscribes when its body asks for it: the RFC 8058 one-click
request a mail client sends by itself (``List-Unsubscribe=One-Click``, urlencoded or
multipart/form-data, RFC 8058 §3.2), or the page's own button (``confirm=1``). Any other POST
changes nothing (400, the page again). No login, no cookie, no CSRF token: the signed token is
the authority, and it can only ever unsubscribe the address it names. No redirect either:
one-click clients do not follow them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from newsexchange.config import Config
from newsexchange.db import Database
from newsexchange.delivery.unsubscribe import UnsubscribeToken, is_suppressed, read_token, suppress
from newsexchange.i18n import gettext_for
from newsexchange.templating import environment
from newsexchange.web.deps import config_of, db_of, now
from newsexchange.web.limits import BodyTooLarge, capped_request, read_body, too_large

__all__ = ["UNSUBSCRIBE_MAX_BYTES", "routes", "texts", "unsubscribe"]

# Named as before the move (delivery/web.py): the "logger" field of these lines is unchanged.
log = logging.getLogger("newsexchange.delivery.web")

# An unsubscribe POST carries one short field; anything bigger is not one.
UNSUBSCRIBE_MAX_BYTES = 16 * 1024


def routes(config: Config, db: Database) -> list[BaseRoute]:
    """The unsubscribe route (the handler reads the config and database from the app)."""
    # GET also answers HEAD; PUT, DELETE and the rest are 405 and change nothing.
    return [Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"])]


def texts(language: str | None) -> dict[str, str]:
    """The unsubscribe pages' texts in ``language`` (the gettext catalogues); the values
    ``{list}`` and ``{email}`` are filled by the caller."""
    _ = gettext_for(language)
    return {
        "title": _("Unsubscribe"),
        "question": _("Stop sending %(list)s to %(email)s?", list="{list}", email="{email}"),
        "button": _("Unsubscribe"),
        "note": _("Nothing changes until you press the button."),
        "done_title": _("You are unsubscribed"),
        "done": _("%(email)s will get no more mail from %(list)s.", list="{list}", email="{email}"),
        "already": _(
            "%(email)s was already unsubscribed from %(list)s.", list="{list}", email="{email}"
        ),
        "invalid_title": _("This link does not work"),
        "invalid": _(
            "The unsubscribe link is damaged or was not made by us. Reply to any of our mails "
            "and we will remove you by hand."
        ),
        "all_lists": _("all our lists"),
        "not_asked": _("Nothing changed: this request did not ask to unsubscribe."),
    }


@dataclass(frozen=True)
class _View:
    """What the pages of one token show: its address and list, in the list's language."""

    tok: UnsubscribeToken
    lang: str
    t: dict[str, str]
    list_name: str

    @classmethod
    def of(cls, config: Config, tok: UnsubscribeToken) -> _View:
        settings = config.lists.get(tok.list_id) if tok.list_id else None
        lang = settings.language if settings else "en"
        t = texts(lang)
        list_name = (
            (settings.name_in(lang) or tok.list_id) if settings and tok.list_id else t["all_lists"]
        )
        return cls(tok, lang, t, list_name)

    def text(self, key: str) -> str:
        return self.t[key].format(email=self.tok.email, list=self.list_name)

    def ask(self, status: int = 200, **extra: Any) -> HTMLResponse:
        """The page with the button."""
        question = self.text("question")
        return _page(
            "unsubscribe.html", status, lang=self.lang, t=self.t, question=question, **extra
        )

    def done(self, key: str) -> HTMLResponse:
        """The page that says the address is (now, or already) unsubscribed."""
        heading = self.t["done_title"]
        return _page(
            "unsubscribe_done.html",
            lang=self.lang,
            t=self.t,
            heading=heading,
            message=self.text(key),
            ok=True,
        )


def _page(name: str, status: int = 200, *, lang: str, **ctx: Any) -> HTMLResponse:
    body = environment(lang).get_template(f"web/{name}").render(**ctx)
    # The token is in our URL: never leak it to another site, never cache the page.
    return HTMLResponse(
        body,
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def _invalid() -> HTMLResponse:
    t = texts("en")
    return _page(
        "unsubscribe_done.html",
        400,
        lang="en",
        t=t,
        heading=t["invalid_title"],
        message=t["invalid"],
        ok=False,
    )


async def unsubscribe(request: Request) -> Response:
    tok = read_token(config_of(request), request.path_params["token"])
    if tok is None:
        return _invalid()
    view = _View.of(config_of(request), tok)
    # GET and HEAD only look (Starlette routes HEAD to a GET route's handler, and
    # ``curl -I`` or a link checker sends HEAD): the page, never a change.
    if request.method in ("GET", "HEAD"):
        with db_of(request).session() as s:
            already = is_suppressed(s, tok.email, tok.list_id)
        return view.done("already") if already else view.ask()
    if request.method != "POST":  # the route allows no other; never act on one
        return PlainTextResponse("method not allowed\n", 405, headers={"Allow": "GET, POST"})
    return await _post(request, view)


async def _post(request: Request, view: _View) -> Response:
    """The button, or a mail client's RFC 8058 one-click request; the body says which, and
    a POST that says neither changes nothing."""
    try:
        fields = await _form_fields(request)
    except BodyTooLarge as exc:
        return too_large(exc)
    except ClientDisconnect:  # the client hung up before saying anything: no change
        return Response(status_code=400)
    one_click = "One-Click" in fields.get("List-Unsubscribe", [])
    if not one_click and "1" not in fields.get("confirm", []):
        return view.ask(400, notice=view.t["not_asked"])
    tok = view.tok
    with db_of(request).session() as s:
        added = suppress(
            s,
            tok.email,
            list_id=tok.list_id,
            reason="unsubscribed",
            now=now(request),
            detail="one-click (RFC 8058)" if one_click else "unsubscribe page",
        )
    log.info("unsubscribed", extra={"list": tok.list_id, "new": added})
    return view.done("done" if added else "already")


async def _form_fields(request: Request) -> dict[str, list[str]]:
    """The POSTed fields, urlencoded (also when no Content-Type is sent) or multipart.

    RFC 8058 §3.2 has clients send ``List-Unsubscribe=One-Click`` as multipart/form-data or
    application/x-www-form-urlencoded; the page's form sends the latter."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == "multipart/form-data":
        capped = await capped_request(
            request, UNSUBSCRIBE_MAX_BYTES, setting="the unsubscribe form limit"
        )
        try:
            form = await capped.form(max_files=0, max_fields=10)
        except (HTTPException, MultiPartException):  # malformed: it asks for nothing
            return {}
        return {k: [v for v in form.getlist(k) if isinstance(v, str)] for k in form}
    body = await read_body(request, UNSUBSCRIBE_MAX_BYTES, setting="the unsubscribe form limit")
    return parse_qs(body.decode("utf-8", "replace"), max_num_fields=10) if body else {}
