"""The web app: approval pages, "view online", archive, unsubscribe, webhooks, health.

Each part contributes its own routes: a module in ``ROUTE_MODULES`` has
``routes(config, db) -> list[BaseRoute]``. Served by uvicorn (``newsexchange serve``).
"""

from __future__ import annotations

import importlib

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from newsexchange.config import Config
from newsexchange.db import Database

ROUTE_MODULES: list[str] = []


async def healthz(_request: Request) -> Response:
    return PlainTextResponse("ok\n")


def create_app(config: Config, db: Database) -> Starlette:
    routes: list[BaseRoute] = [Route("/healthz", healthz)]
    for name in ROUTE_MODULES:
        routes.extend(importlib.import_module(name).routes(config, db))
    app = Starlette(routes=routes)
    app.state.config = config
    app.state.db = db
    return app
