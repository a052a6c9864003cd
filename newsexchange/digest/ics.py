"""A digest's events as an iCalendar file (RFC 5545): attached to the mail, linked from it,
and, for every sent digest of an exchange together, the archive's subscribable calendar.

The addresses are fixed here so that the templates, the mail and the web routes agree:

- ``{public_url}/digests/{digest_id}/events.ics``: one digest's events (public once the
  digest is, like ``/digests/{digest_id}``);
- ``{public_url}/archive/{exchange}/events.ics``: the exchange's calendar.
"""

from __future__ import annotations

from newsexchange.config import Config

__all__ = ["digest_calendar_url", "exchange_calendar_url"]


def digest_calendar_url(config: Config, digest_id: int) -> str:
    """Where one digest's ``.ics`` is served (the link in the mail)."""
    return f"{config.public_url}/digests/{digest_id}/events.ics"


def exchange_calendar_url(config: Config, exchange_id: str) -> str:
    """The exchange's subscribable calendar (every sent digest's events)."""
    return f"{config.public_url}/archive/{exchange_id}/events.ics"
