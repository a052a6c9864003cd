"""``GET /r/{token}``: the signed click redirect of the digest's story links (issue 14).

Verify the token (:func:`newsexchange.digest.links.read_click`: the target is inside the
signature, so a changed byte is refused — never an open redirect), count one click on that
story in aggregate when the digest was approved for its readers (:func:`newsexchange.db.queries.clicks.count_click`, one atomic
statement), answer ``302`` to the source.

What is *not* done, on purpose: no cookie is set, nothing about the requester is stored or
logged (no address, no user agent, no time per click; the server's access log is off,
``commands/service.py``), and the response is ``Cache-Control: no-store`` (a cached redirect
would hide later clicks) and ``Referrer-Policy: no-referrer`` (the source sees no token).

``HEAD`` redirects the same way without counting: link scanners and previewers of mail
systems probe with HEAD, people never do. Scanners that GET every link cannot be told from
readers; the counts are a floor for interest, not a census.

A bad token is a ``400`` with a short page in the house's error style
(``web/token_error.html``), counted nowhere; a well-signed token for a digest that no longer
exists is a ``404``. The page is in English (the source texts): a click link names no
reader, so there is no language to choose, and its messages are kept out of the catalogues.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from newsexchange.config import Config
from newsexchange.db import Database
from newsexchange.db.queries import clicks as queries
from newsexchange.digest.links import ClickLinkError, ClickTarget, read_click
from newsexchange.digest.states import PUBLIC
from newsexchange.templating import environment
from newsexchange.web.deps import config_of, db_of

__all__ = ["routes"]

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex",
}
_PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"


def _error(status: int, kind: str, message: str) -> HTMLResponse:
    html = environment(None).get_template("web/token_error.html").render(kind=kind, message=message)
    return HTMLResponse(
        html, status_code=status, headers={**HEADERS, "Content-Security-Policy": _PAGE_CSP}
    )


def _count(db: Database, click: ClickTarget) -> bool:
    """Count the click; False when its digest does not exist (deleted since). Only a digest
    the editors approved for the readers counts (approved, sending, sent): a counting link
    of a draft (``newsexchange digest show`` renders the mail as it will go out) still
    leads to the story, but an operator's look is not a reader's click."""
    with db.session() as session:
        state = queries.digest_state(session, click.digest_id)
        if state is None:
            return False
        if state in PUBLIC:
            queries.count_click(session, click.digest_id, click.position, click.item_id)
    return True


async def redirect(request: Request) -> Response:
    config, db = config_of(request), db_of(request)
    try:
        click = read_click(config, request.path_params["token"])
    except ClickLinkError as exc:
        return _error(400, "tampered", exc.message)
    if request.method != "HEAD" and not await run_in_threadpool(_count, db, click):
        return _error(404, "other_digest", "This digest no longer exists.")
    return RedirectResponse(click.target, status_code=302, headers=HEADERS)


def routes(config: Config, db: Database) -> list[BaseRoute]:
    """The click redirect (handlers read the config and database from the app)."""
    return [Route("/r/{token}", redirect, methods=["GET", "HEAD"])]
