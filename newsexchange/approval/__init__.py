"""Editors approve every digest before it goes out: by a signed link, by email reply or at
the console. See docs/approval.md.

- :mod:`.tokens`: signed, expiring, single-use action links; the digest's reply token.
- :mod:`.decide`: :func:`decide` (approve / reject / changes) and :func:`apply_edit`.
- :mod:`.notify`: :func:`request_approval`, :func:`run_approvals` (requests, reminders,
  deadlines), acknowledgements and operator notes.
- :mod:`.inbound`: email replies (SendGrid Inbound Parse, IMAP polling).
- :mod:`.web`: the confirmation and review pages, the inbound webhook.
- :mod:`.audit`: the audit log.
"""

from __future__ import annotations

from newsexchange.approval.audit import audit, audit_entries
from newsexchange.approval.decide import DecisionResult, apply_edit, decide
from newsexchange.approval.inbound import poll_imap, process_inbound
from newsexchange.approval.notify import (
    ApprovalRunReport,
    request_approval,
    run_approvals,
    send_requests,
)

__all__ = [
    "ApprovalRunReport",
    "DecisionResult",
    "apply_edit",
    "audit",
    "audit_entries",
    "decide",
    "poll_imap",
    "process_inbound",
    "request_approval",
    "run_approvals",
    "send_requests",
]
