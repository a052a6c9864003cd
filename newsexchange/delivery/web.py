"""Moved to :mod:`newsexchange.web.unsubscribe` and :mod:`newsexchange.web.webhooks` (the
event logic to :mod:`newsexchange.delivery.events`); kept so that older imports keep working.
"""

from starlette.routing import BaseRoute

from newsexchange.config import Config
from newsexchange.db import Database
from newsexchange.delivery.events import (
    MAX_DELIVERY_ID,
    apply_events,
    parse_events,
    timestamp_problem,
    verify_signature,
)
from newsexchange.web import unsubscribe, webhooks
from newsexchange.web.unsubscribe import UNSUBSCRIBE_MAX_BYTES, texts
from newsexchange.web.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER

__all__ = [
    "MAX_DELIVERY_ID",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "UNSUBSCRIBE_MAX_BYTES",
    "apply_events",
    "parse_events",
    "routes",
    "texts",
    "timestamp_problem",
    "verify_signature",
]


def routes(config: Config, db: Database) -> list[BaseRoute]:
    """The unsubscribe page and the SendGrid Event Webhook (``web/app.py`` asks for these)."""
    return unsubscribe.routes(config, db) + webhooks.routes(config, db)
