"""The approval pages moved to :mod:`newsexchange.web.approval`; ``routes`` keeps working
from here (``web/app.py`` lists this module)."""

from __future__ import annotations

from newsexchange.web.approval import SECURITY_HEADERS, routes

__all__ = ["SECURITY_HEADERS", "routes"]
