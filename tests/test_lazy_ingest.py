"""What a fetch and ``check --sources`` load (issue 16): a fetch of plain feeds imports none of
the libraries only html, ical and fulltext sources need, ``check --sources`` loads the
watchdog without the fetch step (nor the translate step, for the glossary), and the package
faces still hand out the steps' names.
Asserted on what a real process imports (``benchmarks/ingest.py`` prints the memory)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import newsexchange.ingest
from newsexchange.config import Config
from newsexchange.ingest import fetched, pipeline
from tests.probe import run_cli
from tests.servers import HTTPServer, Response
from tests.test_ingest import fetch_yaml, fi_items, rss, sources_yaml

#: Imported only where the path that needs them runs.
PATH_ONLY = {"trafilatura", "extruct", "bs4", "icalendar", "recurring_ical_events"}


def _run(tmp_path: Path, *argv: str) -> tuple[int, str, set[str]]:
    return run_cli(*argv, "--config", str(tmp_path / "feeds.yaml"), env={"HOME": str(tmp_path)})


def test_a_fetch_of_plain_feeds_loads_no_html_ical_or_fulltext_library(
    write_config: Callable[..., Config], http_server: HTTPServer, tmp_path: Path
) -> None:
    http_server.route("/a", Response(200, rss(fi_items(3))))
    http_server.route("/b", Response(200, rss(fi_items(2, prefix="b"))))
    write_config(
        fetch_yaml(http_server)
        + sources_yaml(("a", f"{http_server.url}/a", ""), ("b", f"{http_server.url}/b", ""))
    )
    code, out, loaded = _run(tmp_path, "fetch", "--json")
    assert code == 0, out
    assert json.loads(out)["new_items"] == 5  # it did fetch, parse and store
    assert "newsexchange.ingest.step" in loaded
    assert sorted(loaded & PATH_ONLY) == []


def test_check_sources_loads_the_watchdog_without_the_fetch_step(
    write_config: Callable[..., Config], http_server: HTTPServer, tmp_path: Path
) -> None:
    http_server.route("/a", Response(200, rss(fi_items(3))))
    write_config(fetch_yaml(http_server) + sources_yaml(("a", f"{http_server.url}/a", "")))
    code, out, _ = _run(tmp_path, "fetch", "--json")  # a database at the newest schema
    assert code == 0, out
    code, out, loaded = _run(tmp_path, "check", "--sources", "--json")
    assert code == 0, out
    assert json.loads(out)["watchdog"]["checked"] == 1
    assert "newsexchange.ingest.watchdog" in loaded
    step = {"newsexchange.ingest.step", "newsexchange.translate.step"}
    assert sorted(loaded & (step | {"trafilatura", "py3langid", "httpx"})) == []
    assert sorted(loaded & PATH_ONLY) == []


def test_the_package_face_still_hands_out_the_step() -> None:
    from newsexchange.ingest import FetchReport, due_source_ids, fetch_options, run_fetch
    from newsexchange.ingest.report import FetchReport as Report
    from newsexchange.ingest.step import due_source_ids as due
    from newsexchange.ingest.step import run_fetch as run

    assert (run_fetch, due_source_ids, FetchReport) == (run, due, Report)
    assert callable(fetch_options)
    assert sorted(newsexchange.ingest.__all__) == sorted(
        ["FetchReport", "SourceOutcome", "due_source_ids", "fetch_options", "run_fetch"]
    )
    try:
        newsexchange.ingest.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("an unknown name was handed out")


def test_the_translate_face_still_hands_out_its_names() -> None:
    import newsexchange.translate as translate
    from newsexchange.translate.step import run_translate

    assert translate.run_translate is run_translate
    assert all(callable(getattr(translate, name)) for name in translate.__all__)


def test_parse_workers_start_without_loading_the_language_model() -> None:
    pool = pipeline._make_pool(2, pipeline.POOL_MIN_SOURCES)
    assert pool is not None
    try:
        assert pool._initializer is None  # langdetect loads it on the first text needing it
    finally:
        pool.shutdown()


def test_a_parse_worker_imports_the_parsers_without_the_writer_or_the_http_client() -> None:
    # What a spawned worker imports to run prepare_body: its module, and what that imports.
    probe = (
        "import json, sys\n"
        "from newsexchange.ingest.fetched import prepare_body\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(json.loads(res.stdout))
    assert sorted(loaded & ({"sqlalchemy", "httpx", "pydantic"} | PATH_ONLY)) == []
    assert {"lxml", "nh3"} <= loaded  # the parsers and the sanitizer did come
    assert pipeline.prepare_body is fetched.prepare_body  # what the pool runs
