"""The fetch step: every due source → fetched, parsed, cleaned, stored.

The public face is :func:`run_fetch` and its report, and :func:`due_source_ids` (what a work
queue cuts into batch jobs); the step is :mod:`.step`, the concurrency
:mod:`.pipeline`, the storing :mod:`.writer`, the pure decisions :mod:`.decide` and
:mod:`.stories`, the outside world :mod:`.fetch` (a :class:`~.fetch.Fetcher`) and the parsers
:mod:`.parse` and :mod:`.scrape`.
"""

from newsexchange.ingest.fetch import fetch_options
from newsexchange.ingest.report import FetchReport, SourceOutcome
from newsexchange.ingest.step import due_source_ids, run_fetch

__all__ = ["FetchReport", "SourceOutcome", "due_source_ids", "fetch_options", "run_fetch"]
