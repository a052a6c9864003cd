"""A digest's states and the one function that moves it between them.

::

    draft ──request──▶ awaiting_approval ──approve (enough editors)──▶ approved
      │  ▲                 │      │                                     │ start_send
      │  └──rebuild────────┤      └──deadline──▶ held | rejected  (also from revising)        ▼
      │                    │                                         sending ──finish_send──▶ sent
      └─revise─▶ revising ◀┘ (an edit on the review page, or a rejection)

- ``draft``: built, nobody asked yet (or rebuilt after the editors were asked about content
  that no longer exists: the approval step asks again about the new version).
- ``awaiting_approval``: the editors have the request.
- ``held``: the approval deadline passed without enough approvals (``on_deadline: hold``);
  still unapproved, so editors may change it and ask again.
- ``revising``: a draft of the next version with the editors (after a rejection or an edit
  on the review page); their changes accumulate, and nothing is mailed until one of them
  sends it for approval.
- ``approved`` → ``sending`` → ``sent``: frozen; deliveries queued, going out, all out.
- ``rejected``: final (``on_deadline: reject``).

Code never assigns ``digest.state`` itself: it calls :func:`move`, which refuses a transition
this table does not have.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, Protocol

from newsexchange.errors import DigestError

__all__ = [
    "EDITABLE",
    "OPEN",
    "PUBLIC",
    "SENDABLE",
    "STATES",
    "DigestState",
    "Event",
    "move",
    "transition",
]


class DigestState(StrEnum):
    DRAFT = "draft"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    SENDING = "sending"
    SENT = "sent"
    REJECTED = "rejected"
    HELD = "held"
    REVISING = "revising"


S = DigestState

#: Every state, in the order of the diagram.
STATES: tuple[str, ...] = tuple(s.value for s in DigestState)
#: Not yet decided: editors may change it, approve it or reject it.
OPEN: frozenset[str] = frozenset({S.DRAFT, S.AWAITING_APPROVAL, S.HELD, S.REVISING})
EDITABLE = OPEN
#: Approved and not finished: the send step works on these.
SENDABLE: tuple[str, ...] = (S.APPROVED, S.SENDING)
#: Shown in the public archive.
PUBLIC: tuple[str, ...] = (S.APPROVED, S.SENDING, S.SENT)

Event = Literal[
    "request", "revise", "rebuild", "approve", "reject", "deadline_hold", "deadline_reject",
    "start_send", "finish_send",
]  # fmt: skip

_TABLE: dict[tuple[DigestState, str], DigestState] = {
    **{(s, "request"): S.AWAITING_APPROVAL for s in (S.DRAFT, S.HELD, S.REVISING)},
    (S.AWAITING_APPROVAL, "request"): S.AWAITING_APPROVAL,  # a reminder, or asked again
    **{(s, "revise"): S.REVISING for s in (S.DRAFT, S.AWAITING_APPROVAL, S.HELD, S.REVISING)},
    **{(s, "rebuild"): S.DRAFT for s in (S.DRAFT, S.AWAITING_APPROVAL, S.HELD)},
    **{(s, "approve"): S.APPROVED for s in (S.DRAFT, S.AWAITING_APPROVAL, S.HELD, S.REVISING)},
    **{(s, "reject"): S.REVISING for s in (S.DRAFT, S.AWAITING_APPROVAL, S.HELD, S.REVISING)},
    # a deadline counts from the request: a draft the editors took back after it still meets it
    **{(s, "deadline_hold"): S.HELD for s in (S.AWAITING_APPROVAL, S.HELD, S.REVISING)},
    **{(s, "deadline_reject"): S.REJECTED for s in (S.AWAITING_APPROVAL, S.HELD, S.REVISING)},
    (S.APPROVED, "start_send"): S.SENDING,
    (S.SENDING, "start_send"): S.SENDING,
    (S.APPROVED, "finish_send"): S.SENT,
    (S.SENDING, "finish_send"): S.SENT,
}


def transition(state: str, event: Event) -> DigestState:
    """The state after ``event`` happens to a digest in ``state`` (pure)."""
    try:
        return _TABLE[(DigestState(state), event)]
    except (KeyError, ValueError):
        raise DigestError(
            f"a digest that is {state.replace('_', ' ')} cannot take {event.replace('_', ' ')!r}"
        ) from None


class _HasState(Protocol):
    state: str


def move(digest: _HasState, event: Event) -> DigestState:
    """Apply ``event`` to ``digest`` (a ``Digest`` row) and return its new state."""
    new = transition(digest.state, event)
    digest.state = new.value
    return new
