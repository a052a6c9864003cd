"""The offline demo on the shipped feeds.yaml: the bundled sample sources go through the whole
cycle — fetch, translate (bundled memory, no provider), digest, approval mail, approval, send —
with every mail landing in the outbox folder."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import icalendar
import pytest
import yaml

from newsexchange.cli import main

REPO = Path(__file__).resolve().parent.parent


def _demo_copy(tmp_path: Path) -> Path:
    """The repo's feeds.yaml with only its sample sources (no network here or in CI)."""
    data = yaml.safe_load((REPO / "feeds.yaml").read_text(encoding="utf-8"))
    assert data["service"]["demo"] is True, "feeds.yaml ships the demo switched on"
    data["sources"] = [s for s in data["sources"] if s["id"].startswith("sample-")]
    assert len(data["sources"]) == 4  # two sample feeds, two sample calendars
    data["translation"]["providers"] = []  # the bundled memory must be enough
    for folder in ("samples", "lists"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    if (REPO / "glossary.yaml").exists():
        shutil.copy(REPO / "glossary.yaml", tmp_path / "glossary.yaml")
    else:
        data["translation"].pop("glossary", None)
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return cfg


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """The CLI sets up logging (handlers on stderr); put things back for the other tests."""
    root = logging.getLogger("newsexchange")
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


def test_offline_demo_runs_the_whole_cycle_into_the_outbox(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSEXCHANGE_SECRET_KEY", "demo-test-key")
    monkeypatch.delenv("NEWSEXCHANGE_DATABASE_URL", raising=False)
    cfg = _demo_copy(tmp_path)

    def _nx(cfg: Path, *args: str) -> dict:  # type: ignore[type-arg]
        """The CLI, in process (the same entry point as the console script)."""
        main([*args, "--json", "--config", str(cfg)])
        out = capsys.readouterr().out
        return json.loads(out)  # type: ignore[no-any-return]

    outbox = tmp_path / "var" / "outbox"

    first = _nx(cfg, "run-once")
    assert first["ok"], first
    # 6 news items and the calendars' occurrences in the window (how many depends on the day).
    assert first["steps"]["fetch"]["summary"]["new_items"] > 6
    assert first["steps"]["translate"]["summary"]["pending"] == 0
    demo = first["steps"]["demo"]["summary"]
    assert demo["built"] == 3, demo  # fi→ru, ru→fi and the English edition
    requests = sorted(outbox.glob("nx-approval.*.eml"))
    assert len(requests) == 3
    msg = email.message_from_bytes(requests[0].read_bytes(), policy=email.policy.default)
    assert msg["To"] == "editor@example.fi"

    # Nothing reaches a journalist before an editor approves.
    assert [p.name for p in outbox.glob("nx.*.eml")] == []
    ids = [d["id"] for d in demo["digests"]]
    to_ru = next(d["id"] for d in demo["digests"] if d["exchange"] == "joensuu-to-petrozavodsk")
    approved = _nx(cfg, "approve", str(to_ru))
    assert approved["state"] == "approved", approved

    second = _nx(cfg, "run-once")
    assert second["steps"]["demo"]["summary"]["built"] == 0, "the demo builds a period once"
    sent = second["steps"]["send"]["summary"]["sent"]
    mails = sorted(outbox.glob(f"nx.{to_ru}.*.eml"))
    assert sent == len(mails) >= 4
    body = email.message_from_bytes(mails[0].read_bytes(), policy=email.policy.default)
    text = body.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Город Йоэнсуу открывает новую библиотеку" in text
    # The Joensuu calendar's events, translated from the bundled memory, on Moscow time with
    # Helsinki's beside it, and as an events.ics the reader's calendar takes.
    assert "Сказки для детей в главной библиотеке" in text
    assert "по Хельсинки" in text and "Йоэнсуу" in text
    (ics,) = [p for p in body.iter_attachments() if p.get_filename() == "events.ics"]
    cal = icalendar.Calendar.from_ical(ics.get_content())
    starts = [e.decoded("dtstart") for e in cal.walk("VEVENT")]
    assert starts and all(str(s.tzinfo) == "Europe/Helsinki" for s in starts)
    assert set(ids) - {to_ru}, "the other digests still wait for their editors"
