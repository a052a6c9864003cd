"""The web app: approval pages, "view online", archive, unsubscribe, webhooks, health.

Each part contributes its own routes: a module in ``ROUTE_MODULES`` has
``routes(config, db) -> list[BaseRoute]``. Served by uvicorn (``newsexchange serve``).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from datetime import datetime

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsexchange.config import Config
from newsexchange.db import Database

log = logging.getLogger(__name__)

# Operations (/healthz, /readyz, /metrics) first, then the public archive, then each part's.
ROUTE_MODULES: list[str] = [
    "newsexchange.web.ops",
    "newsexchange.web.archive",
    "newsexchange.approval.web",
    "newsexchange.delivery.web",
]

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


def create_app(
    config: Config, db: Database, *, clock: Callable[[], datetime] | None = None
) -> Starlette:
    """The app. ``clock`` (aware UTC ``datetime``) replaces the real one wherever a page needs
    "now" (link expiry, readiness, the archive's feed); tests pass it so that nothing depends
    on today's date."""
    routes: list[BaseRoute] = []
    for name in ROUTE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise  # a real import error inside the module: let it show
            # A part listed but not installed (yet): the rest of the app still serves.
            log.warning("web routes unavailable", extra={"routes": name})
            continue
        routes.extend(module.routes(config, db))
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])
    app.state.config = config
    app.state.db = db
    app.state.clock = clock
    return app
