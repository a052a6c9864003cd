"""The web app: approval pages, "view online", archive, unsubscribe, webhooks, health.

Each part contributes its own routes: :data:`ROUTES` lists every part's
``routes(config, db) -> list[BaseRoute]``. Served by uvicorn (``newsexchange serve``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsexchange.config import Config
from newsexchange.db import Database
from newsexchange.web import (
    approval,
    archive,
    ids,  # noqa: F401  (registers {name:id} before any route is built)
    impact,
    ops,
    redirect,
    unsubscribe,
    webhooks,
)

__all__ = ["ROUTES", "SECURITY_HEADERS", "SecurityHeaders", "ServerErrors", "create_app"]

log = logging.getLogger(__name__)

RouteFactory = Callable[[Config, Database], list[BaseRoute]]

#: Every part's routes: operations (/healthz, /readyz, /metrics) first, then the public
#: archive, then the approval pages, then unsubscribe and the webhooks.
ROUTES: tuple[RouteFactory, ...] = (
    ops.routes,
    archive.routes,
    approval.routes,
    unsubscribe.routes,
    webhooks.routes,
    redirect.routes,  # GET /r/{token}: the signed click redirect (issue 14)
    impact.routes,  # /impact/{digest}, /impact/{exchange}/{year}
)

# Every page is ours or the editor's own data: no framing, no referrer leak of the signed
# tokens in our URLs, no MIME sniffing.
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ServerErrors:
    """Turns an exception no page handled into a plain 500 and logs its traceback.

    The visitor sees "Internal Server Error" and nothing of the cause (no traceback, no SQL,
    no paths); the log gets the whole of it with the method and path (never the query
    string: links carry signed tokens there). Starlette's own ServerErrorMiddleware would
    re-raise for uvicorn to log again, as a second, unstructured traceback; this one ends
    the request here. Sits inside :class:`SecurityHeaders`, so the 500 has them too."""

    BODY = b"Internal Server Error\n"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            log.exception(
                "request failed",
                extra={"method": scope.get("method"), "path": scope.get("path")},
            )
            if started:  # half a response is out: all that can be done is to stop
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(self.BODY)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": self.BODY})


def create_app(
    config: Config, db: Database, *, clock: Callable[[], datetime] | None = None
) -> Starlette:
    """The app. ``clock`` (aware UTC ``datetime``) replaces the real one wherever a page needs
    "now" (link expiry, readiness, the archive's feed); tests pass it so that nothing depends
    on today's date."""
    routes = [route for part in ROUTES for route in part(config, db)]
    app = Starlette(
        routes=routes, middleware=[Middleware(SecurityHeaders), Middleware(ServerErrors)]
    )
    app.state.config = config
    app.state.db = db
    app.state.clock = clock
    return app
