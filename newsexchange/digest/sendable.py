"""Nothing empty goes out: a digest with fewer items than its exchange's ``min_items``
(default 1) is never sent for approval, cannot be approved and cannot be sent.

Pure functions over plain data; the approval and delivery steps call them and say the
refusal. :func:`why_empty` explains the period to the editors from what the build saw (the
candidates it recorded, with the reason each was left out, and the state of the sources).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from newsexchange.config import ExchangeSettings
from newsexchange.i18n import Gettext, gettext_for

_english = gettext_for(None)


@dataclass(frozen=True)
class SourceState:
    id: str
    fetched_ok: bool  # a successful fetch since the period began


def included_count(entries: Iterable[tuple[bool, bool]]) -> int:
    """How many of ``(included, dropped)`` entries go out."""
    return sum(1 for included, dropped in entries if included and not dropped)


def refusal(count: int, exchange: ExchangeSettings, digest_id: int) -> str | None:
    """Why a digest of ``count`` items may not go out, or None when it may."""
    if count >= exchange.min_items:
        return None
    return (
        f"digest {digest_id} has {count} item(s), fewer than the exchange's min_items "
        f"({exchange.min_items}); nothing empty goes out"
    )


def why_empty(
    left_out_reasons: Sequence[str], sources: Sequence[SourceState], _: Gettext = _english
) -> str:
    """One sentence for the editors, in the language of ``_`` (``i18n.gettext_for``): no
    sources fetched, nothing published, or everything left out (and why, most frequent
    first)."""
    ok = [s.id for s in sources if s.fetched_ok]
    if sources and not ok:
        return _(
            "none of the %(n)s sources of the region was fetched successfully in the period "
            "(see the fetch log)",
            n=len(sources),
        )
    if not left_out_reasons:
        return _(
            "the region's sources (%(ok)s of %(n)s fetched) published no item in the period",
            ok=len(ok),
            n=len(sources),
        )
    labels = {
        "untranslated": _("not translated yet"),
        "duplicate_story": _("the same story as another item"),
        "over_cap": _("over max_items"),
        "over_source_cap": _("over max_per_source"),
        "dropped": _("dropped by an editor"),
    }
    counts = Counter(left_out_reasons).most_common()
    parts = ", ".join(f"{n} {labels.get(r, r)}" for r, n in counts)
    return _(
        "all %(n)s items of the period were left out: %(parts)s",
        n=len(left_out_reasons),
        parts=parts,
    )
