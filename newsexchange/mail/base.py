"""The one interface every mail backend offers, owned by its callers (approval, alerts,
delivery): exactly what they use, capabilities declared rather than probed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from newsexchange.mail.message import OutgoingMessage, SendResult

__all__ = ["Mailer", "OnSent", "Wait"]

# on_sent(index, result) is called as each message is accepted; it may return a callable
# that blocks until that acceptance is recorded. The SMTP worker calls it before it lets the
# *next* message be accepted (just before that message's final "."), so at most one
# accepted-but-unrecorded message exists per connection at any moment.
Wait = Callable[[], object]
OnSent = Callable[[int, SendResult], Wait | None]


class Mailer(Protocol):
    """A mail backend.

    - ``name``: what ``mail.backend`` calls it (``outbox``, ``smtp``, ``sendgrid``).
    - ``personalizes``: it fills the per-recipient markers itself, so it wants the shared
      template and ``substitutions`` (SendGrid), not the finished ``raw`` bytes.
    - ``reports_each``: it calls ``on_sent`` as each message is accepted; one that does not
      is only heard from when :meth:`send` returns (and ignores ``on_sent``).
    """

    name: str
    personalizes: bool
    reports_each: bool

    def send(
        self, messages: Sequence[OutgoingMessage], *, on_sent: OnSent | None = None
    ) -> list[SendResult]:
        """Hand messages to the backend; one result per message, in order. Never raises for
        a per-message failure; raises DeliveryError only when the backend is unusable."""
        ...

    def close(self) -> None: ...
