"""The whole editor's desk in a real browser (Playwright driving Debian's chromium), once with a
Russian-speaking editor and once with a Finnish one: reject with a reason → drop, restore,
pin and unpin, an intro → send for approval → exactly one mail to the other editor → they
approve → the digest is sent → the same link is the status page. At 390 px (a phone) and on
a desktop; screenshots go to the test's tmp dir."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from newsexchange.approval import request_approval
from newsexchange.config import Config
from newsexchange.db import Database, Digest
from newsexchange.web.app import create_app
from tests.test_approval import (
    NOW,
    approval_config,
    clear_outbox,
    make_digest,
    outbox_messages,
    state_of,
)
from tests.test_browser import browser  # noqa: F401  (the fixture)
from tests.webserver import WebServer, free_port

CLOCK = NOW + timedelta(hours=1)
ACTOR = "boris@example.ru"
OTHER = "anna@example.fi"

TEXTS = {
    "ru": {
        "decide": "Отклонить / Запросить изменения",
        "reject": "Отклонить",
        "rejected": "Отклонено. Дайджест теперь черновик версии 2",
        "drop": "Убрать",
        "restore": "Вернуть",
        "pin": "Закрепить",
        "unpin": "Открепить",
        "pinned": "закреплено",
        "save_intro": "Сохранить вступление",
        "submit": "Отправить версию 2 на одобрение",
        "submitted": "Версия 2 отправлена другим редакторам на одобрение.",
        "sent": "отправлено",
        "went_out": "Версия 2 отправлена",
        "intro": "Главное за две недели.",
    },
    "fi": {
        "decide": "Hylkää / Pyydä muutoksia",
        "reject": "Hylkää",
        "rejected": "Hylätty. Kooste on nyt version 2 luonnos",
        "drop": "Poista",
        "restore": "Palauta",
        "pin": "Kiinnitä",
        "unpin": "Poista kiinnitys",
        "pinned": "kiinnitetty",
        "save_intro": "Tallenna johdanto",
        "submit": "Lähetä versio 2 hyväksyttäväksi",
        "submitted": "Versio 2 lähetettiin muille toimittajille hyväksyttäväksi.",
        "sent": "lähetetty",
        "went_out": "Versio 2 lähti",
        "intro": "Kahden viikon tärkeimmät.",
    },
}


def _link(msg: object, label: str) -> str:
    body = msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[attr-defined]
    m = re.search(label + r"\s+(http://\S+)", body)
    assert m, body
    return m.group(1)


@pytest.mark.browser
@pytest.mark.parametrize("lang", ["ru", "fi"])
def test_the_whole_desk_in_the_editors_language(
    browser: object,  # noqa: F811
    lang: str,
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    tmp_path: Path,
) -> None:
    from newsexchange.delivery.send import run_send

    t = TEXTS[lang]
    port = free_port()
    cfg = approval_config(
        write_config,
        public_url=f"http://127.0.0.1:{port}",
        editors=(f"{{email: {OTHER}, language: en}}", f"{{email: {ACTOR}, language: {lang}}}"),
    )
    db = db_for(cfg)
    digest_id = make_digest(db, items=4, contacts=2)
    request_approval(db, cfg, digest_id, now=NOW)
    mails = {str(m["To"]): m for m in outbox_messages(cfg)}
    review_label = {"ru": "Страница проверки:", "fi": "Tarkistussivu:"}[lang]
    desk = _link(mails[ACTOR], review_label)
    clear_outbox(cfg)
    with db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None
        ids = [e.item_id for e in sorted(d.entries, key=lambda e: e.position)]
    shots = tmp_path / "shots"
    shots.mkdir()
    server = WebServer(create_app(cfg, db, clock=lambda: CLOCK), port=port).start()
    try:
        page = browser.new_page(viewport={"width": 390, "height": 844})  # type: ignore[attr-defined]
        page.goto(desk)
        assert page.locator("html").get_attribute("lang") == lang
        # No horizontal scrolling on a phone.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.get_by_text(t["decide"]).click()
        page.locator("#reject-reason").fill("Слишком много старого / liian vanhaa")
        page.get_by_role("button", name=t["reject"], exact=True).click()
        page.wait_for_load_state()
        assert t["rejected"] in page.locator("[data-done]").inner_text()
        assert state_of(db, digest_id) == "revising"
        notes = outbox_messages(cfg)
        assert [m["To"] for m in notes] == [OTHER]  # the note with the reason, no request
        clear_outbox(cfg)
        page.screenshot(path=str(shots / "1-draft-phone.png"), full_page=True)

        item = page.locator(f'[data-item="{ids[3]}"]')
        item.get_by_role("button", name=t["drop"], exact=True).click()
        page.wait_for_load_state()
        assert page.locator(f'[data-item="{ids[3]}"]').count() == 0
        left = page.locator(f'[data-left-out="{ids[3]}"]')
        left.get_by_role("button", name=t["restore"], exact=True).click()
        page.wait_for_load_state()
        assert page.locator(f'[data-item="{ids[3]}"]').count() == 1
        # The restored item is pinned: a marker, and the pin can be undone.
        restored = page.locator(f'[data-item="{ids[3]}"]')
        assert t["pinned"] in restored.locator("[data-pinned]").inner_text()
        restored.get_by_role("button", name=t["unpin"], exact=True).click()
        page.wait_for_load_state()
        restored = page.locator(f'[data-item="{ids[3]}"]')
        assert restored.locator("[data-pinned]").count() == 0
        assert restored.get_by_role("button", name=t["pin"], exact=True).count() == 1
        page.locator("#intro").fill(t["intro"])
        page.get_by_role("button", name=t["save_intro"]).click()
        page.wait_for_load_state()
        assert outbox_messages(cfg) == []  # nothing mailed while editing
        with db.session() as s:
            d = s.get(Digest, digest_id)
            assert d is not None and (d.state, d.version) == ("revising", 2)

        page.set_viewport_size({"width": 1280, "height": 900})
        assert page.locator(".preview iframe").bounding_box()["width"] > 400  # type: ignore[index]
        # The preview really shows the mail, with the intro just written.
        framed = page.frame_locator(".preview iframe").locator("body")
        framed.get_by_text(t["intro"]).wait_for(timeout=5000)
        assert framed.locator("a").count() > 0
        page.screenshot(path=str(shots / "2-desk-desktop.png"), full_page=True)
        page.get_by_role("button", name=t["submit"]).click()
        page.wait_for_load_state()
        assert t["submitted"] in page.locator("[data-done]").inner_text()
        [request] = outbox_messages(cfg)  # exactly one mail, to the other editor
        assert request["To"] == OTHER
        text = request.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "What changed since version 1" in text and "the intro paragraph changed" in text

        # The other editor approves version 2 (in English, their language).
        other = browser.new_page(viewport={"width": 390, "height": 844})  # type: ignore[attr-defined]
        other.goto(_link(request, "Approve:"))
        other.get_by_role("button", name="Approve").click()
        other.wait_for_load_state()
        assert other.locator("h1").inner_text() == "Approved"
        other.close()
        report = run_send(db, cfg, now=CLOCK, digest_id=digest_id).to_json()
        assert report["sent"] == 2

        page.reload()  # the same desk link (version 2): now the status page
        assert t["went_out"] in page.locator("[data-state]").inner_text()
        assert page.locator('[data-count="sent"] strong').inner_text() == "2"
        assert t["sent"] in page.locator('[data-count="sent"]').inner_text()
        assert page.locator(f'a[href="/digests/{digest_id}"]').count() == 1
        assert page.locator("form").count() == 0
        page.screenshot(path=str(shots / "3-status.png"), full_page=True)
        page.close()
    finally:
        server.stop()
    for name in ("1-draft-phone", "2-desk-desktop", "3-status"):
        assert (shots / f"{name}.png").stat().st_size > 5000
