"""What a send did: :class:`SendReport` (the ``--json`` of ``newsexchange send``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from newsexchange.db import Delivery

__all__ = ["SendReport"]


@dataclass
class SendReport:
    sent: int = 0
    skipped_suppressed: int = 0
    failed_permanent: int = 0
    failed_retrying: int = 0
    pending: int = 0  # still to do after this run (not yet due, or claimed by another sender)
    digests: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)  # first 50
    error: str | None = None  # the backend became unusable (bad key, server gone)
    elapsed: float = 0.0
    stopped: str | None = None  # why the send ended early on request (SendStopped)
    handed_back: int = 0  # deliveries claimed by this run and given back unsent on a stop

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed_permanent and not self.failed_retrying

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "sent": self.sent,
            "skipped_suppressed": self.skipped_suppressed,
            "failed_permanent": self.failed_permanent,
            "failed_retrying": self.failed_retrying,
            "pending": self.pending,
            "digests": self.digests,
            "failures": self.failures,
            "error": self.error,
            "seconds": round(self.elapsed, 3),
            "stopped": self.stopped,
            "handed_back": self.handed_back,
        }

    def to_text(self) -> str:
        lines = []
        for d in self.digests:
            lines.append(f"digest {d['id']} ({d['exchange']}): {d['state']}")
        lines.append(
            f"sent {self.sent}, skipped (suppressed) {self.skipped_suppressed}, "
            f"failed {self.failed_permanent}, retrying later {self.failed_retrying}, "
            f"pending {self.pending}  ({self.elapsed:.1f}s)"
        )
        for f in self.failures[:10]:
            lines.append(f"  {f['email']}: {f['error']}")
        if self.error:
            lines.append(f"stopped: {self.error}")
        if self.stopped:
            lines.append(
                f"stopped on request ({self.stopped}): sent {self.sent}, handed back "
                f"{self.handed_back} claimed deliveries; run it again to send the rest"
            )
        return "\n".join(lines)

    def _fail(self, d: Delivery, error: str) -> None:
        if len(self.failures) < 50:
            self.failures.append({"delivery_id": d.id, "email": d.email, "error": error})
