"""End to end: the real service (``newsexchange serve`` in a subprocess) against local servers
standing in for the internet — feeds over HTTP, a LibreTranslate-speaking translator, an SMTP
server. Items are fetched and translated, a digest is built, the approval mail arrives, the
editor approves through the link (GET the confirmation page, POST its form), journalists
receive the digest; the service is killed (-9) in the middle of sending and restarted, then
stopped with SIGTERM in the middle of sending (exit 0) and started again — and nobody
receives it twice.

The digest is built by ``service.demo`` (the period in progress, right after the first fetch)
instead of waiting for the schedule's 1st or 16th; the schedule itself is covered in
test_service.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from newsexchange.config import load_config
from newsexchange.db import Database, Delivery, Digest
from tests.servers import HTTPServer, Request, Response, SMTPServer, allow_private

REPO = Path(__file__).resolve().parent.parent
NX = str(REPO / ".venv" / "bin" / "newsexchange")
RECIPIENTS = 40
EDITOR = "editor@example.fi"

FI_FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Pohjois-Karjalan uutiset</title><link>{base}/</link>
<item><title>Joensuun torille rakennetaan uusi katos</title><link>{base}/fi/1</link>
<guid>fi-1</guid><description>Kaupunginhallitus päätti maanantaina, että torin katos valmistuu ensi kesäksi.</description></item>
<item><title>Pohjois-Karjalan maakuntaliitto avaa hankehaun</title><link>{base}/fi/2</link>
<guid>fi-2</guid><description>Haku on avoinna tammikuun loppuun, ja sitä voivat hakea yhdistykset ja yritykset.</description></item>
<item><title>Kirjasto pidentää aukioloaikojaan talvella</title><link>{base}/fi/3</link>
<guid>fi-3</guid><description>Pääkirjasto on jatkossa auki myös sunnuntaisin kello kahteentoista asti.</description></item>
</channel></rss>
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(cond: Callable[[], object], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Translator:
    """LibreTranslate's wire format on a loopback HTTPServer: POST /translate
    ``{q: [...], source, target, format}`` → ``{translatedText: [...]}``."""

    def __init__(self) -> None:
        self.server = HTTPServer()
        self.server.route("/translate", self._translate)
        self.server.route("/languages", Response(404, b"{}"))
        self.characters = 0

    def _translate(self, req: Request) -> Response:
        body = req.json()
        texts = body["q"] if isinstance(body["q"], list) else [body["q"]]
        self.characters += sum(len(t) for t in texts)
        out = [f"[{body['target'].upper()}] {t}" for t in texts]
        return Response(
            200, json.dumps({"translatedText": out}), {"Content-Type": "application/json"}
        )


class Service:
    def __init__(self, cfg: Path, port: int, log: Path) -> None:
        self.cmd = [NX, "serve", "--config", str(cfg), "--port", str(port)]
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "NEWSEXCHANGE_SECRET_KEY": "e2e-signing-key-0123456789"}
        self.env["NEWSEXCHANGE_LOG_LEVEL"] = "info"
        self.env.pop("NEWSEXCHANGE_DATABASE_URL", None)

    def start(self) -> None:
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                self.cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=err, cwd=self.log.parent
            )
        _wait(self._healthy, 30, "the service to answer /healthz")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the service exited: {self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise
        return int(self.proc.returncode)


def _journalist_mail(smtp: SMTPServer) -> dict[str, list[EmailMessage]]:
    by: dict[str, list[EmailMessage]] = defaultdict(list)
    with smtp._lock:
        pairs = list(zip(smtp.envelopes, smtp.messages, strict=True))
    for (_from, rcpts, _raw), msg in pairs:
        for r in rcpts:
            if r.endswith("@media.example"):
                by[r.lower()].append(msg)
    return by


@pytest.mark.slow
def test_service_fetches_translates_builds_asks_approval_and_delivers_exactly_once_across_kill_9(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    feeds = HTTPServer().start()
    translator = Translator()
    translator.server.start()
    port = _free_port()
    try:
        feeds.route(
            "/fi.xml",
            Response(200, FI_FEED.format(base=feeds.url), {"Content-Type": "application/rss+xml"}),
        )
        cfg_path = tmp_path / "feeds.yaml"
        cfg_path.write_text(
            f"""\
timezone: Europe/Helsinki
database_url: sqlite:///var/e2e.db
public_url: http://127.0.0.1:{port}
fetch: {{interval_minutes: 30, {allow_private(feeds)}}}
mail:
  backend: smtp
  from: "Exchange <news@example.org>"
  rate_per_second: 12
  smtp: {{host: 127.0.0.1, port: {smtp_server.port}, connections: 1}}
translation:
  providers: [{{name: libre, url: "{translator.server.url}"}}]
regions:
  joensuu:      {{name: Joensuu, language: fi, timezone: Europe/Helsinki}}
  petrozavodsk: {{name: Petrozavodsk, language: ru, timezone: Europe/Moscow}}
sources:
  - {{id: pk-news, name: Pohjois-Karjalan uutiset, region: joensuu, language: fi, url: "{feeds.url}/fi.xml"}}
lists:
  ptz-media: {{name: Petrozavodsk media, language: ru}}
exchanges:
  - id: fi-to-ru
    name: Новости Йоэнсуу
    from: [joensuu]
    to: petrozavodsk
    language: ru
    editors: [{EDITOR}]
    lists: [ptz-media]
service:
  demo: true
  jitter_seconds: 0
  dispatch_minutes: 0.02
  approvals_minutes: 0.05
  alerts_minutes: 60
""",
            encoding="utf-8",
        )
        csv = tmp_path / "ptz.csv"
        csv.write_text(
            "name,email,outlet,language,lists,notes\n"
            + "".join(
                f"Journalist {i},j{i:02d}@media.example,Outlet {i},ru,,\n"
                for i in range(RECIPIENTS)
            ),
            encoding="utf-8",
        )
        env = {**os.environ, "NEWSEXCHANGE_SECRET_KEY": "e2e-signing-key-0123456789"}
        env.pop("NEWSEXCHANGE_DATABASE_URL", None)
        imported = subprocess.run(
            [NX, "lists", "import", "ptz-media", str(csv), "--json", "--config", str(cfg_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert imported.returncode == 0, imported.stderr

        service = Service(cfg_path, port, tmp_path / "service.log")
        service.start()

        # 1. fetched, translated, built: the editor's approval request arrives by SMTP.
        _wait(lambda: smtp_server.received_by(EDITOR), 40, "the approval request")
        request = smtp_server.received_by(EDITOR)[0]
        text = request.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "[RU] Joensuun torille rakennetaan uusi katos" in text, (
            "translated by the translator"
        )
        assert translator.characters > 0
        # The editor (a bare address) reads Finnish, the source region's language (issue 11).
        approve = re.search(r"Hyväksy:\s+(\S+)", text)
        assert approve, text
        link = approve.group(1)
        assert link.startswith(service.url)
        assert not _journalist_mail(smtp_server), "nothing goes out before approval"

        # 2. the editor follows the link: GET shows a confirmation, the form's POST approves.
        page = httpx.get(link)
        assert page.status_code == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf, page.text
        done = httpx.post(link, data={"csrf": csrf.group(1)})
        assert done.status_code == 200
        assert "Hyväksytty" in done.text

        # 3. journalists receive it; the service is killed -9 in the middle of sending …
        _wait(lambda: len(_journalist_mail(smtp_server)) >= 6, 30, "the first deliveries")
        service.kill()
        at_kill = len(_journalist_mail(smtp_server))
        assert at_kill < RECIPIENTS, "the kill came too late to be mid-send"

        # … restarted, and stopped with SIGTERM while sending: it ends after the chunk in hand
        # and exits 0 …
        service.start()
        _wait(lambda: len(_journalist_mail(smtp_server)) >= at_kill + 8, 30, "sending to resume")
        stop_started = time.monotonic()
        assert service.stop() == 0
        stop_seconds = time.monotonic() - stop_started
        at_term = len(_journalist_mail(smtp_server))
        assert at_term < RECIPIENTS, "SIGTERM came too late to be mid-send"

        # … and started once more: the rest is delivered, nobody twice.
        service.start()
        _wait(
            lambda: len(_journalist_mail(smtp_server)) == RECIPIENTS, 40, "every journalist's copy"
        )
        time.sleep(1.5)  # room for any duplicate to show up
        metrics = httpx.get(f"{service.url}/metrics").text
        ready = httpx.get(f"{service.url}/readyz")
        assert service.stop() == 0
    finally:
        feeds.stop()
        translator.server.stop()

    mail = _journalist_mail(smtp_server)
    assert sorted(mail) == [f"j{i:02d}@media.example" for i in range(RECIPIENTS)]
    for rcpt, msgs in mail.items():
        ids = {m["Message-ID"] for m in msgs}
        # A copy resent after the kill carries the same Message-ID (the documented window of
        # one message per connection); a second *different* message would be a duplicate.
        assert len(ids) == 1, f"{rcpt} received {len(ids)} different messages"
        assert "Новости Йоэнсуу" in str(msgs[0]["Subject"])
    resent = sum(len(m) - 1 for m in mail.values())
    assert resent <= 1, f"{resent} copies were resent (at most one per SMTP connection)"
    assert stop_seconds < 5, f"SIGTERM took {stop_seconds:.1f}s: the send did not stop promptly"
    # The service's log: one JSON object per line, no secret, no recipient address.
    log = (tmp_path / "service.log").read_text(encoding="utf-8")
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert any(e["event"] == "job done" and e.get("job") == "send" for e in lines)
    assert "e2e-signing-key" not in log
    assert "@media.example" not in log, "a recipient address reached the log"

    cfg = load_config(cfg_path, env={"NEWSEXCHANGE_SECRET_KEY": "x"})
    db = Database(f"sqlite:///{tmp_path}/var/e2e.db", run_migrations=False)
    try:
        with db.session() as s:
            states = list(s.scalars(select(Digest.state)))
            statuses = list(s.scalars(select(Delivery.status)))
        assert states == ["sent"]
        assert statuses == ["sent"] * RECIPIENTS
    finally:
        db.dispose()
    assert cfg.exchanges[0].id == "fi-to-ru"
    assert f'newsexchange_deliveries{{status="sent"}} {RECIPIENTS}.0' in metrics
    assert ready.status_code == 200, ready.text
