"""What an editor sees, in a real browser (Playwright driving Debian's chromium): the
approval request's link, the confirmation page, the approval, then the public archive and
the digest viewed online. Screenshots are written to the test's tmp dir."""

from __future__ import annotations

import email
import email.policy
import os
import re
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsexchange.config import Config, database_url
from newsexchange.db import Database, utcnow
from tests.test_archive import EXCHANGE, _items
from tests.test_web_ops import served

CHROMIUM = "/usr/bin/chromium"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        reason = f"Debian's chromium is not installed at {CHROMIUM}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield b
        finally:
            b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.browser
def test_editor_approves_from_the_mail_link_and_finds_the_digest_in_the_archive(
    browser: object, write_config: Callable[..., Config], tmp_path: Path
) -> None:
    from newsexchange.approval import request_approval
    from newsexchange.delivery.send import run_send
    from newsexchange.digest import build_digest

    port = _free_port()
    base = f"""\
timezone: Europe/Helsinki
database_url: sqlite:///var/test.db
public_url: http://127.0.0.1:{port}
mail:
  backend: outbox
  from: "Exchange <news@example.org>"
  outbox_dir: var/outbox
regions:
  joensuu:      {{name: Joensuu, language: fi, timezone: Europe/Helsinki}}
  petrozavodsk: {{name: Petrozavodsk, language: ru, timezone: Europe/Moscow}}
"""
    cfg = write_config(EXCHANGE, base=base)
    db = Database(database_url(cfg))
    try:
        period = datetime(2026, 10, 1).date()
        _items(
            db,
            period,
            [
                ("Joensuun tori avautuu", "В Йоэнсуу открывается рынок"),
                ("Uusi silta Pielisjoelle", "Новый мост через реку Пиелисйоки"),
            ],
        )
        from newsexchange.delivery.lists import import_rows, parse_csv

        with db.session() as s:
            csv = "name,email,outlet,language,lists,notes\nАнна,anna@media.example,ГТРК,ru,,\n"
            parsed = parse_csv(csv, list_id="ptz-media", known_lists=cfg.lists)
            import_rows(s, parsed, list_id="ptz-media", now=NOW)
        digest_id = build_digest(db, cfg, "fi-to-ru", period_start=period, now=NOW).id
        assert request_approval(db, cfg, digest_id, now=NOW) == 1
        [eml] = sorted(cfg.resolve("var/outbox").glob("nx-approval.*.eml"))
        mail = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        # The editor (a bare address) reads the source region's language, Finnish (issue 11).
        link = re.search(r"Hyväksy:\s+(\S+)", text)
        assert link, text
        shots = tmp_path / "screenshots"
        shots.mkdir()

        # The server runs on the test's clock: the link was signed at NOW, and the suite must
        # pass on any date (links expire after 7 days).
        with served(cfg, db, port=port, clock=lambda: NOW) as url:
            page = browser.new_page(viewport={"width": 420, "height": 900})  # type: ignore[attr-defined]
            # The editor opens the link on a phone: a confirmation, not an action.
            page.goto(link.group(1))
            assert page.locator("h1").inner_text() == "Hyväksytäänkö tämä kooste?"
            assert "В Йоэнсуу открывается рынок" in page.locator("ol.items").inner_text()
            page.screenshot(path=str(shots / "1-confirm.png"), full_page=True)
            page.get_by_role("button", name="Hyväksy").click()
            page.wait_for_load_state()
            assert page.locator("h1").inner_text() == "Hyväksytty"
            assert "lähetysjonossa 1 viestiä" in page.locator(".notice").inner_text()
            page.screenshot(path=str(shots / "2-approved.png"), full_page=True)

            # Approved, not yet sent: viewable online, not yet in the archive.
            # The exchange's page speaks the exchange's language (Russian), whatever the browser.
            page.goto(f"{url}/archive/fi-to-ru")
            assert "Дайджесты этого обмена ещё не рассылались." in page.content()
            report = run_send(db, cfg, now=utcnow(), digest_id=digest_id).to_json()
            assert (report["sent"], report["pending"]) == (1, 0)

            page.set_viewport_size({"width": 1000, "height": 900})
            page.goto(f"{url}/archive")
            # The index lists every exchange: the browser's language (Chromium: en-US).
            assert page.locator("h1").inner_text() == "Digest archive"
            entry = page.locator(f'a[href="/digests/{digest_id}"]')
            assert "1–15 октября 2026" in entry.inner_text()
            page.screenshot(path=str(shots / "3-archive.png"), full_page=True)
            entry.click()
            page.wait_for_load_state()
            body = page.locator("body").inner_text()
            assert "В Йоэнсуу открывается рынок" in body
            assert "Новый мост через реку Пиелисйоки" in body
            page.screenshot(path=str(shots / "4-view-online.png"), full_page=True)

            # The feed a newsroom would subscribe to is one click away.
            page.goto(f"{url}/archive/fi-to-ru")
            feed_href = page.locator('link[type="application/atom+xml"]').get_attribute("href")
            assert feed_href == "/archive/fi-to-ru/atom.xml"
            page.close()
        for name in ("1-confirm", "2-approved", "3-archive", "4-view-online"):
            assert (shots / f"{name}.png").stat().st_size > 5000
    finally:
        db.dispose()
