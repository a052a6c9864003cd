"""The fetch step: every due source → fetched, parsed, cleaned, stored.

The public face is :func:`run_fetch` and its report, and :func:`due_source_ids` (what a work
queue cuts into batch jobs); the step is :mod:`.step`, the concurrency
:mod:`.pipeline`, the storing :mod:`.writer`, the pure decisions :mod:`.decide` and
:mod:`.stories`, the outside world :mod:`.fetch` (a :class:`~.fetch.Fetcher`) and the parsers
:mod:`.parse` and :mod:`.scrape`.

The names are re-exported lazily (PEP 562 ``__getattr__``): importing a submodule such as
:mod:`.watchdog` (``check --sources``) does not load the step, its HTTP client, parsers and
language detection; ``from newsexchange.ingest import run_fetch`` loads them as before.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from newsexchange.ingest.fetch import fetch_options
    from newsexchange.ingest.report import FetchReport, SourceOutcome
    from newsexchange.ingest.step import due_source_ids, run_fetch

__all__ = ["FetchReport", "SourceOutcome", "due_source_ids", "fetch_options", "run_fetch"]


def __getattr__(name: str) -> Any:
    """A re-exported name, imported from its module on first use."""
    home = {
        "FetchReport": "report",
        "SourceOutcome": "report",
        "due_source_ids": "step",
        "fetch_options": "fetch",
        "run_fetch": "step",
    }.get(name)
    if home is not None:
        value = getattr(import_module(f"{__name__}.{home}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
