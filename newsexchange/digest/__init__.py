"""Digests: the step that builds one exchange's digest for one period, and editor changes.

The public face; inside:

- :mod:`.periods` — which days a period covers and when it is due (pure);
- :mod:`.select` — which items make the digest, in which order, and why (pure);
- :mod:`.states` — the digest's states and the one function that moves between them;
- :mod:`.content` — what a reader sees of a digest, as plain data (and its hash);
- :mod:`.build` — ``build_digest`` and ``edit_digest``: read, rank, write;
- :mod:`.step` — ``build_due``: the service's job, building each period that is due;
- :mod:`.render` — the mail (HTML, text, headers) from the content, without a database;
- :mod:`.sendable` — nothing empty goes out (pure).
"""

from newsexchange.digest.build import BuildReport, build_digest, edit_digest
from newsexchange.digest.content import item_text, translated_by
from newsexchange.digest.select import left_out_text
from newsexchange.digest.states import EDITABLE as EDITABLE_STATES
from newsexchange.digest.states import STATES
from newsexchange.digest.step import DueReport, build_due

__all__ = [
    "EDITABLE_STATES",
    "STATES",
    "BuildReport",
    "DueReport",
    "build_digest",
    "build_due",
    "edit_digest",
    "item_text",
    "left_out_text",
    "translated_by",
]
