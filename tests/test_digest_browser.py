"""The digest HTML in a real browser engine: Debian's headless Chromium loads the page and we
read back the DOM it built (and keep a screenshot under the test's tmp dir to look at)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from newsexchange.config import Config
from newsexchange.db import Database, Digest
from newsexchange.digest import build_digest
from newsexchange.digest.render import render_digest
from tests.test_digest_sample import sample_config, seed

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
NOW = datetime(2026, 11, 16, 8, 0, tzinfo=UTC)

pytestmark = pytest.mark.browser


def _chromium() -> str:
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        reason = f"Debian chromium not installed (looked for {CHROMIUM}); apt-get install chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def _run(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_chromium_shows_every_item_of_the_russian_digest(
    write_config: Callable[..., Config], tmp_path: Path
) -> None:
    chromium = _chromium()
    cfg = sample_config(write_config)
    db = Database(f"sqlite:///{tmp_path}/browser.db")
    try:
        seed(db)
        rep = build_digest(
            db, cfg, "joensuu-to-petrozavodsk", period_start=date(2026, 11, 1), now=NOW
        )
        with db.session() as s:
            d = s.get(Digest, rep.id)
            assert d is not None
            rendered = render_digest(s, cfg, d)
    finally:
        db.dispose()
    page = tmp_path / "digest_ru.html"
    page.write_text(rendered.html, encoding="utf-8")

    dom = _run(chromium, tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<h1" in dom.stdout and "Новости Йоэнсуу и Северной Карелии" in dom.stdout
    for item in rendered.items:
        assert f'id="item-{item["position"]}"' in dom.stdout
        title = item["title"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert title in dom.stdout, item["title"]
    # The hostile title stayed text: the browser built no <script> element from it.
    assert "<script" not in dom.stdout

    shot = tmp_path / "digest_ru.png"
    res = _run(chromium, tmp_path, "--window-size=700,1600", f"--screenshot={shot}", page.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 10_000  # a real rendering, not a blank page

    # Dark mode (prefers-color-scheme: dark): the kept <style> block repaints the page.
    dark = tmp_path / "digest_ru_dark.png"
    res = _run(
        chromium,
        tmp_path,
        "--force-dark-mode",
        "--window-size=700,1600",
        f"--screenshot={dark}",
        page.as_uri(),
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert dark.exists() and dark.read_bytes() != shot.read_bytes()
