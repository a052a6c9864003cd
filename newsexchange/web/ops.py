"""Operations endpoints: ``/healthz`` (liveness), ``/readyz`` (readiness, with reasons) and
``/metrics`` (Prometheus text).

- ``/healthz`` answers as long as the process serves requests: a liveness probe that restarts
  the service only when it is truly stuck, never because a feed is down.
- ``/readyz`` says whether the exchange is doing its job: the database answers, a fetch
  succeeded recently (within three fetch intervals), and no scheduled job is overdue (the
  scheduler is running them). 200 with the checks as JSON, or 503 with the reasons. The
  source watchdog's findings (``ingest/watchdog.py``) are shown under ``checks.sources`` and
  ``warnings``, but never make it 503: a source writing about the wrong town is an editor's
  problem, and a load balancer taking the service out of rotation would not fix it. They are
  computed at most every :data:`WATCH_EVERY` (a probe every few seconds must stay cheap).
- ``/metrics`` reads the database at scrape time through a custom collector (nothing is
  counted in process memory, so the numbers survive restarts and are the same whichever
  process is scraped): items stored, translation characters and requests per provider,
  digests by state, deliveries by status, job runs, failures and durations.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from newsexchange.config import Config
from newsexchange.db import Database, Session, utcnow
from newsexchange.db.queries import jobs as queries
from newsexchange.errors import NewsExchangeError
from newsexchange.ingest.watchdog import watch_sources
from newsexchange.web import deps

__all__ = ["OVERDUE_AFTER", "WATCH_EVERY", "DatabaseCollector", "readiness", "routes"]

#: A scheduled job this late is "overdue": the scheduler is not running it.
OVERDUE_AFTER = timedelta(minutes=10)
#: How long /readyz reuses the source watchdog's findings.
WATCH_EVERY = 300.0


def watchdog_part(config: Config, db: Database, *, now: datetime) -> dict[str, Any]:
    """The ``sources`` part of /readyz: the flagged sources and their findings."""
    try:
        report = watch_sources(db, config, now=now)
    except NewsExchangeError as exc:
        return {"error": str(exc)}
    return report.to_json()


def readiness(
    config: Config,
    db: Database,
    *,
    now: datetime,
    up_since: datetime,
    sources: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The readiness verdict and its evidence (used by /readyz; pure reading, no side effect).
    ``sources`` gives the watchdog's part (:func:`watchdog_part`), asked once the database
    answers; it is shown and warned about, never a reason."""
    reasons: list[str] = []
    checks: dict[str, Any] = {}
    warnings: list[str] = []
    try:
        queries.ping(db)
        checks["database"] = "ok"
    except Exception as exc:  # any failure to talk to it is the answer
        checks["database"] = f"unreachable: {type(exc).__name__}"
        reasons.append(f"database unreachable ({type(exc).__name__})")
        return {"ready": False, "reasons": reasons, "checks": checks, "warnings": warnings}

    if sources is not None:
        part = checks["sources"] = sources()
        if "error" in part:
            warnings.append(f"source watchdog: {part['error']}")
        warnings.extend(f["message"] for f in part.get("findings", []) if f["finding"] != "failing")

    interval = timedelta(minutes=config.fetch.interval_minutes)
    limit = 3 * interval
    last_fetch = queries.last_success(db, "fetch")
    if last_fetch is not None:
        age = now - last_fetch
        checks["last_fetch"] = {
            "at": last_fetch.isoformat(),
            "age_seconds": int(age.total_seconds()),
        }
        if age > limit and any(s.enabled for s in config.sources):
            reasons.append(
                f"last successful fetch was {age.total_seconds() / 60:.0f} minutes ago "
                f"(expected within {limit.total_seconds() / 60:.0f}: three fetch intervals)"
            )
    else:
        checks["last_fetch"] = None
        if any(s.enabled for s in config.sources) and now - up_since > limit:
            reasons.append(
                f"no successful fetch in the {limit.total_seconds() / 60:.0f} minutes since start"
            )

    overdue = []
    jobs = queries.stored_jobs(db)
    for job in jobs:
        nxt = job["next_run_at"]
        if nxt is not None and now - nxt > OVERDUE_AFTER:
            overdue.append(job["id"])
            reasons.append(
                f"job {job['id']} is overdue by {(now - nxt).total_seconds() / 60:.0f} minutes "
                "(is the scheduler running?)"
            )
    checks["jobs"] = {"scheduled": len(jobs), "overdue": overdue}
    return {"ready": not reasons, "reasons": reasons, "checks": checks, "warnings": warnings}


def _counts(s: Session, what: str, doc: str, labels: list[str]) -> Metric:
    """A gauge of the rows of ``what`` counted by its columns (one label per column)."""
    gauge = GaugeMetricFamily(f"newsexchange_{what}", doc, labels=labels)
    for *values, n in queries.count_by(s, what):
        gauge.add_metric([str(v) for v in values], n)
    return gauge


class DatabaseCollector(Collector):
    """Prometheus metrics read from the database at scrape time."""

    def __init__(self, config: Config, db: Database) -> None:
        self.config = config
        self.db = db

    def collect(self) -> Iterator[Metric]:
        with self.db.session() as s:
            yield _counts(s, "items", "Items stored, per source and region", ["source", "region"])

            failing = GaugeMetricFamily(
                "newsexchange_sources_failing", "Sources whose fetches are currently failing"
            )
            failing.add_metric([], queries.sources_failing(s))
            yield failing

            chars = CounterMetricFamily(
                "newsexchange_translation_characters",
                "Characters sent to each translation provider",
                labels=["provider"],
            )
            reqs = CounterMetricFamily(
                "newsexchange_translation_requests",
                "Requests sent to each translation provider",
                labels=["provider"],
            )
            fails = CounterMetricFamily(
                "newsexchange_translation_provider_failures",
                "Failed requests per translation provider",
                labels=["provider"],
            )
            for provider, c, r, f in queries.provider_totals(s):
                chars.add_metric([provider], c)
                reqs.add_metric([provider], r)
                fails.add_metric([provider], f)
            yield chars
            yield reqs
            yield fails

            yield _counts(
                s, "translations", "Translations by language and status", ["language", "status"]
            )
            yield _counts(s, "digests", "Digests by exchange and state", ["exchange", "state"])
            yield _counts(
                s, "deliveries", "Deliveries (one per recipient and digest) by status", ["status"]
            )

            yield from self._jobs(s)
            yield from self._fetched(s)
        # Outside the session: on SQLite every transaction takes the write lock up front.
        yield from self._schedule()

    def _schedule(self) -> Iterator[Metric]:
        nxt = GaugeMetricFamily(
            "newsexchange_job_next_run_timestamp_seconds",
            "When the scheduler will next run each stored job (Unix time)",
            labels=["job"],
        )
        for job in queries.stored_jobs(self.db):
            if job["next_run_at"] is not None:
                nxt.add_metric([job["id"]], job["next_run_at"].timestamp())
        yield nxt

    def _jobs(self, s: Session) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            "newsexchange_job_runs", "Finished job runs (kept 30 days)", labels=["job", "result"]
        )
        duration = SummaryMetricFamily(
            "newsexchange_job_duration_seconds", "Duration of finished job runs", labels=["job"]
        )
        last_ok = GaugeMetricFamily(
            "newsexchange_job_last_success_timestamp_seconds",
            "When each job last finished successfully (Unix time)",
            labels=["job"],
        )
        last_dur = GaugeMetricFamily(
            "newsexchange_job_last_duration_seconds",
            "Duration of each job's latest run",
            labels=["job"],
        )
        counts: dict[tuple[str, str], int] = defaultdict(int)
        sums: dict[str, float] = defaultdict(float)
        ns: dict[str, int] = defaultdict(int)
        latest: dict[str, tuple[datetime, float]] = {}
        latest_ok: dict[str, datetime] = {}
        for run in queries.finished_runs(s):
            job, started, finished, ok = run.job, run.started_at, run.finished_at, run.ok
            seconds = max(0.0, (finished - started).total_seconds())
            counts[(job, "ok" if ok else "failed")] += 1
            sums[job] += seconds
            ns[job] += 1
            if job not in latest or started > latest[job][0]:
                latest[job] = (started, seconds)
            if ok and (job not in latest_ok or finished > latest_ok[job]):
                latest_ok[job] = finished
        for (job, result), n in sorted(counts.items()):
            runs.add_metric([job, result], n)
        for job in sorted(ns):
            duration.add_metric([job], count_value=ns[job], sum_value=sums[job])
            last_dur.add_metric([job], latest[job][1])
        for job, at in sorted(latest_ok.items()):
            last_ok.add_metric([job], at.timestamp())
        yield runs
        yield duration
        yield last_ok
        yield last_dur

    def _fetched(self, s: Session) -> Iterator[Metric]:
        """What the fetch runs brought in (their reports live in job_runs.summary)."""
        fetched = CounterMetricFamily(
            "newsexchange_fetch_new_items",
            "New items stored by fetch runs (kept 30 days)",
        )
        total = 0
        for summary in queries.fetch_summaries(s):
            if isinstance(summary, dict) and isinstance(summary.get("new_items"), int):
                total += summary["new_items"]
        fetched.add_metric([], total)
        yield fetched


def routes(config: Config, db: Database) -> list[BaseRoute]:
    up_since = utcnow()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(config, db))
    try:
        from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

        for c in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(c)
    except (ImportError, ValueError):  # optional extras; never fatal
        pass

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok\n", headers={"cache-control": "no-store"})

    watched: dict[str, Any] = {}  # {"at": monotonic time, "part": the watchdog's part}

    def sources_part(now: datetime) -> dict[str, Any]:
        if "at" in watched and time.monotonic() - watched["at"] < WATCH_EVERY:
            return dict(watched["part"])
        try:
            part = watchdog_part(config, db, now=now)
        except Exception as exc:  # the database failed meanwhile: the next probe says so
            return {"error": f"{type(exc).__name__}"}
        watched.update(at=time.monotonic(), part=part)
        return part

    def readyz(request: Request) -> Response:
        now = deps.now(request)
        verdict = readiness(
            config, db, now=now, up_since=up_since, sources=lambda: sources_part(now)
        )
        return JSONResponse(
            verdict,
            status_code=200 if verdict["ready"] else 503,
            headers={"cache-control": "no-store"},
        )

    def metrics(_request: Request) -> Response:
        started = time.monotonic()
        body = generate_latest(registry)
        body += (
            b"# HELP newsexchange_metrics_scrape_seconds Time to read the metrics from the database\n"
            b"# TYPE newsexchange_metrics_scrape_seconds gauge\n"
            + f"newsexchange_metrics_scrape_seconds {time.monotonic() - started:.6f}\n".encode()
        )
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
