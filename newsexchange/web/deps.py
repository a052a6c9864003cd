"""What a request handler needs from the app: the config, the database and the clock.

``create_app`` stores them on ``app.state``; handlers call these instead of reading
``app.state`` themselves, so the one place that knows how they are kept is here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

from starlette.requests import Request

from newsexchange.config import Config
from newsexchange.db import Database

__all__ = ["config_of", "db_of", "now"]


def config_of(request: Request) -> Config:
    return cast(Config, request.app.state.config)


def db_of(request: Request) -> Database:
    return cast(Database, request.app.state.db)


def now(request: Request) -> datetime:
    """The app's clock (tests pass one to ``create_app``), else the real time, aware UTC."""
    clock = cast(Callable[[], datetime] | None, getattr(request.app.state, "clock", None))
    return clock() if clock is not None else datetime.now(UTC)
