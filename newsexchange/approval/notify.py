"""Where the approval step and its mails were before they were split: the step is
:mod:`newsexchange.approval.step`, the mails :mod:`newsexchange.approval.notices`, the
replies :mod:`newsexchange.approval.inbound`. These names keep working from here (the
service resolves ``run_approvals`` and ``poll_imap`` in this module)."""

from __future__ import annotations

from newsexchange.approval.content import last_requested_version
from newsexchange.approval.inbound import poll_imap
from newsexchange.approval.notices import (
    RequestKind,
    build_request,
    editor_lang,
    editor_links,
    notify_operators,
    notify_other_editors,
    send_acknowledgement,
    send_empty_notice,
    send_requests,
    send_unverified_notice,
)
from newsexchange.approval.step import ApprovalRunReport, request_approval, run_approvals

__all__ = [
    "ApprovalRunReport",
    "RequestKind",
    "build_request",
    "editor_lang",
    "editor_links",
    "last_requested_version",
    "notify_operators",
    "notify_other_editors",
    "poll_imap",
    "request_approval",
    "run_approvals",
    "send_acknowledgement",
    "send_empty_notice",
    "send_requests",
    "send_unverified_notice",
]
