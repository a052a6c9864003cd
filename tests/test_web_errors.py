"""No 500s for what visitors type, and a logged traceback for any 500 that still happens,
over the real app served by uvicorn on loopback."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Iterator

import httpx
import pytest
from sqlalchemy import text
from starlette.routing import Route

from newsexchange.config import Config, database_url
from newsexchange.db import Database
from newsexchange.web.app import create_app
from newsexchange.web.ids import MAX_ID, IdConvertor, at_most
from tests.test_web_ops import served


@pytest.fixture
def app_db(write_config: Callable[..., Config]) -> Iterator[tuple[Config, Database]]:
    cfg = write_config()
    db = Database(database_url(cfg))
    yield cfg, db
    db.dispose()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize(
    "n", [0, 1, 5, 9, 10, 19, 20, 99, 100, 101, 509, 1000, 7_300_001, MAX_ID]
)
def test_the_id_pattern_matches_exactly_zero_to_the_bound(n: int) -> None:
    pattern = re.compile(at_most(n) + r"\Z")
    rng = random.Random(n)
    below = {0, n, n // 2, n // 10, max(n - 1, 0)} | {rng.randint(0, n) for _ in range(300)}
    above = {n + 1, n + 9, n * 10 + 1, 10 ** len(str(n))} | {
        rng.randint(n + 1, 10 * n + 10) for _ in range(300)
    }
    for v in below:
        assert pattern.match(str(v)), (n, v)
    for v in above:
        assert not pattern.match(str(v)), (n, v)
    for bad in ("", "-1", "+1", "01", "00", "1e3", "1.0", " 1", "٣"):  # ٣: Arabic-Indic three
        assert not pattern.match(bad), (n, bad)


def test_every_route_with_an_id_in_its_path_uses_the_id_convertor(
    app_db: tuple[Config, Database],
) -> None:
    cfg, db = app_db
    app = create_app(cfg, db)
    id_routes = [
        r
        for r in app.routes
        if isinstance(r, Route) and any(p == "id" or p.endswith("_id") for p in r.param_convertors)
    ]
    assert id_routes, "the archive's /digests/{digest_id} at least"
    for r in id_routes:
        for name, conv in r.param_convertors.items():
            if name == "id" or name.endswith("_id"):
                assert isinstance(conv, IdConvertor), f"{r.path}: {name} is not {{{name}:id}}"


def test_ids_out_of_range_or_not_numbers_are_404_never_500(
    app_db: tuple[Config, Database],
) -> None:
    cfg, db = app_db
    paths = [
        "/digests/99999999999999999999",  # past SQLite's int64: OverflowError before
        f"/digests/{MAX_ID + 1}",
        f"/digests/{MAX_ID}",  # the largest id there can be: looked up, not there
        "/digests/" + "9" * 400,
        "/digests/0",
        "/digests/-1",
        "/digests/abc",
        "/digests/1e3",
        "/digests/%D9%A3",  # an Arabic-Indic digit, which int() would take
        "/digests/007",
    ]
    with served(cfg, db) as url:
        answers = {p: httpx.get(url + p) for p in paths}
        head = httpx.head(url + "/digests/99999999999999999999")
    for p, r in answers.items():
        assert r.status_code == 404, (p, r.status_code, r.text[:200])
        assert "Traceback" not in r.text and "Error" not in r.text, p
    assert head.status_code == 404


def test_an_unhandled_failure_is_a_plain_500_with_its_traceback_in_the_log(
    app_db: tuple[Config, Database],
) -> None:
    cfg, db = app_db
    # A real failure: the table the digest page reads is gone (a half-applied migration,
    # say), so the query raises OperationalError inside the page.
    with db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE digests RENAME TO digests_gone"))
    records = _Records()
    logger = logging.getLogger("newsexchange.web.app")
    logger.addHandler(records)
    try:
        with served(cfg, db) as url:
            r = httpx.get(url + "/digests/1")
            view = httpx.get(url + "/digests/2?token=secret-in-query")
            health = httpx.get(url + "/healthz")
    finally:
        logger.removeHandler(records)
    assert r.status_code == 500
    assert r.text == "Internal Server Error\n"  # nothing of the cause for the visitor
    assert r.headers["content-type"].startswith("text/plain")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert view.status_code == 500 and "digests" not in view.text
    assert health.status_code == 200, "one failing page does not take the app down"
    failed = [rec for rec in records.records if rec.getMessage() == "request failed"]
    assert [getattr(rec, "path", None) for rec in failed] == ["/digests/1", "/digests/2"]
    for rec in failed:
        assert rec.levelno == logging.ERROR and rec.exc_info is not None
        formatted = logging.Formatter().formatException(rec.exc_info)
        assert "Traceback" in formatted and "no such table: digests" in formatted
        assert "secret-in-query" not in repr(vars(rec))
