"""``newsexchange digest …`` as a user runs it: one JSON object with --json, exit codes."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsexchange.cli import main
from newsexchange.config import Config, database_url
from newsexchange.db import AuditEntry, Database
from tests.test_digest_sample import sample_config, seed

EX = "joensuu-to-petrozavodsk"


@pytest.fixture
def cfg(write_config: Callable[..., Config]) -> Iterator[Config]:
    cfg = sample_config(write_config)
    db = Database(database_url(cfg))
    seed(db)
    db.dispose()
    yield cfg


def run(
    capsys: pytest.CaptureFixture[str], cfg: Config, *args: str
) -> tuple[int, dict | None, str]:  # type: ignore[type-arg]
    code = main([*args, "--config", str(cfg.path)])
    out = capsys.readouterr()
    data = json.loads(out.out) if "--json" in args else None
    if data is not None:
        assert out.out.count("\n") == 1, "exactly one JSON object on stdout"
    return code, data, out.out + out.err


def test_build_twice_prints_the_same_digest_with_reasons(
    capsys: pytest.CaptureFixture[str], cfg: Config
) -> None:
    code, first, _ = run(capsys, cfg, "digest", "build", EX, "--period", "2026-11-01", "--json")
    assert code == 0 and first is not None
    assert first["period"] == {"start": "2026-11-01", "end": "2026-11-15"}
    assert first["item_count"] == 5 and first["sections"] == {"news": 4, "events": 1}
    assert {lo["reason"] for lo in first["left_out"]} == {"untranslated", "duplicate_story"}
    assert set(first["items"][0]["reason"]) >= {"weight", "sources", "coverage", "recency"}
    code, second, _ = run(capsys, cfg, "digest", "build", EX, "--period", "2026-11-01", "--json")
    assert code == 0 and second is not None
    assert (second["id"], second["version"], second["changed"]) == (first["id"], 1, False)


def test_build_text_output_explains_each_score(
    capsys: pytest.CaptureFixture[str], cfg: Config
) -> None:
    code, _, out = run(capsys, cfg, "digest", "build", EX, "--period", "2026-11-01")
    assert code == 0
    assert "built" in out and "1–15 November 2026" in out
    assert "= weight 1.5 × coverage 1.5 × recency" in out
    assert "untranslated" in out and "duplicate_story" in out


def test_a_period_date_that_starts_no_period_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], cfg: Config
) -> None:
    code, data, _ = run(capsys, cfg, "digest", "build", EX, "--period", "2026-11-05", "--json")
    assert code == 2 and data is not None and data["ok"] is False
    assert "starts 2026-11-01" in data["error"]


def test_unknown_exchange_is_a_config_error(
    capsys: pytest.CaptureFixture[str], cfg: Config
) -> None:
    code, data, _ = run(capsys, cfg, "digest", "build", "nowhere", "--json")
    assert code == 2 and data is not None and "known: joensuu-to-petrozavodsk" in data["error"]


def test_list_shows_every_digest_with_its_state(
    capsys: pytest.CaptureFixture[str], cfg: Config
) -> None:
    run(capsys, cfg, "digest", "build", EX, "--period", "2026-11-01", "--json")
    run(capsys, cfg, "digest", "build", "border-en", "--period", "2026-11-01", "--json")
    code, data, _ = run(capsys, cfg, "digest", "list", "--json")
    assert code == 0 and data is not None
    assert sorted((d["exchange"], d["state"]) for d in data["digests"]) == [
        ("border-en", "draft"),
        (EX, "draft"),
    ]
    code, data, _ = run(capsys, cfg, "digest", "list", "--exchange", EX, "--json")
    assert data is not None and [d["exchange"] for d in data["digests"]] == [EX]
    code, _, out = run(capsys, cfg, "digest", "list")
    assert "draft" in out and "2026-11-01…2026-11-15" in out


def test_show_summary_lists_items_and_the_audit_log(
    capsys: pytest.CaptureFixture[str], cfg: Config
) -> None:
    _, built, _ = run(capsys, cfg, "digest", "build", EX, "--period", "2026-11-01", "--json")
    assert built is not None
    db = Database(database_url(cfg))
    with db.session() as s:
        s.add(
            AuditEntry(
                at=datetime(2026, 11, 16, 9, tzinfo=UTC),
                digest_id=built["id"],
                actor="editor@example.fi",
                action="approval_requested",
                channel="email",
            )
        )
    db.dispose()
    code, data, _ = run(capsys, cfg, "digest", "show", str(built["id"]), "--json")
    assert code == 0 and data is not None
    assert [i["item_id"] for i in data["items"]] == [i["item_id"] for i in built["items"]]
    assert data["audit"][0]["action"] == "approval_requested"
    code, _, out = run(capsys, cfg, "digest", "show", str(built["id"]))
    assert "editor@example.fi approval_requested via email" in out


def test_show_eml_writes_a_message_that_parses_back(
    capsys: pytest.CaptureFixture[str], cfg: Config, tmp_path: Path
) -> None:
    _, built, _ = run(capsys, cfg, "digest", "build", EX, "--period", "2026-11-01", "--json")
    assert built is not None
    target = tmp_path / "digest.eml"
    code, data, _ = run(
        capsys,
        cfg,
        "digest",
        "show",
        str(built["id"]),
        "--format",
        "eml",
        "-o",
        str(target),
        "--json",
    )
    assert code == 0 and data is not None and data["bytes"] == target.stat().st_size
    msg = email.message_from_bytes(target.read_bytes(), policy=email.policy.default)
    # As mailed: the digest has an event, so its .ics rides along (tests/test_ics.py).
    assert msg.get_content_type() == "multipart/mixed"
    parts = [p.get_content_type() for p in msg.iter_parts()]  # type: ignore[attr-defined]
    assert parts == ["multipart/alternative", "text/calendar"]
    assert msg["Subject"] == "Новости Йоэнсуу и Северной Карелии: 1–15 ноября 2026"


def test_show_html_and_text_print_what_would_be_mailed(
    capsys: pytest.CaptureFixture[str], cfg: Config
) -> None:
    _, built, _ = run(capsys, cfg, "digest", "build", EX, "--period", "2026-11-01", "--json")
    assert built is not None
    code, _, out = run(capsys, cfg, "digest", "show", str(built["id"]), "--format", "text")
    assert code == 0 and "Читать оригинал" in out and "%%UNSUBSCRIBE_URL%%" in out
    code, _, out = run(capsys, cfg, "digest", "show", str(built["id"]), "--format", "html")
    assert code == 0 and out.startswith("<!DOCTYPE html>") and "Новый мост" in out


def test_show_of_a_missing_digest_fails_with_a_hint(
    capsys: pytest.CaptureFixture[str], cfg: Config
) -> None:
    # An unknown id is bad usage (exit 2), as the command-line contract says (issue 11).
    code, data, _ = run(capsys, cfg, "digest", "show", "999", "--json")
    assert code == 2 and data is not None and "digest list" in data["error"]


def test_edit_drops_by_position_and_bumps_the_version(
    capsys: pytest.CaptureFixture[str], cfg: Config
) -> None:
    _, built, _ = run(capsys, cfg, "digest", "build", EX, "--period", "2026-11-01", "--json")
    assert built is not None
    code, data, _ = run(capsys, cfg, "digest", "edit", str(built["id"]), "--drop", "2", "--json")
    assert code == 0 and data is not None and data["version"] == 2
    assert built["items"][1]["item_id"] not in [i["item_id"] for i in data["items"]]
    assert [i["position"] for i in data["items"]] == [1, 2, 3, 4]
    assert [(a["action"], a["channel"]) for a in data["audit"]] == [
        ("built", "system"),
        ("edit", "cli"),
    ]
    assert data["audit"][1]["detail"]["drop"] == [2]
