"""What a step hands back to the service: a report that ``--json`` and ``job_runs`` can hold."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

__all__ = ["Report", "StepResult", "report_json"]


@runtime_checkable
class Report(Protocol):
    """A step's report (``FetchReport``, ``SendReport`` …): it says itself as JSON."""

    def to_json(self) -> dict[str, Any]: ...


#: A step returns its report, or a plain dict when it did nothing (``{"skipped": why}``).
StepResult = Report | dict[str, Any]


def report_json(report: object) -> dict[str, Any]:
    """A step's report as the JSON object ``--json`` would print."""
    if report is None:
        return {}
    if hasattr(report, "to_json"):
        data = report.to_json()
        return data if isinstance(data, dict) else {"result": data}
    if dataclasses.is_dataclass(report) and not isinstance(report, type):
        return dataclasses.asdict(report)
    if isinstance(report, dict):
        return report
    if isinstance(report, int | float | str | bool):
        return {"result": report}
    return {"result": str(report)}
