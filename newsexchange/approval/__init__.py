"""Editors approve every digest before it goes out: by a signed link, by email reply or at
the console. See docs/approval.md.

- :mod:`.step`: :func:`run_approvals` (requests, reminders, deadlines), :func:`request_approval`.
- :mod:`.decide`: :func:`decide` (approve / reject / changes) and :func:`apply_edit`; the pure
  rules they and the replies follow are :mod:`.rules`.
- :mod:`.notices`: the mails editors receive, written to the mail queue (sent after commit).
- :mod:`.inbound`: email replies (SendGrid Inbound Parse, IMAP polling); :mod:`.message`
  reads them, :mod:`.addresses` is how a reply names its digest.
- :mod:`.desk` and :mod:`.content`: the review page's draft, intro and diff.
- :mod:`.tokens`: signed, expiring, single-use action links; the digest's reply token.
- :mod:`.audit`: the audit log. The pages are :mod:`newsexchange.web.approval`.
"""

from __future__ import annotations

from newsexchange.approval.audit import audit, audit_entries
from newsexchange.approval.decide import DecisionResult, apply_edit, decide
from newsexchange.approval.inbound import poll_imap, process_inbound
from newsexchange.approval.notices import send_requests
from newsexchange.approval.step import ApprovalRunReport, request_approval, run_approvals

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
