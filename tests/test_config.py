"""feeds.yaml: every mistake is reported as file:line with what was expected."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from newsexchange.config import load_config
from newsexchange.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent

GOOD = """\
regions:
  joensuu: {name: Joensuu, language: fi}
sources:
  - {id: a, region: joensuu, url: "https://example.fi/rss", language: fi}
"""


def _load(tmp_path: Path, text: str) -> None:
    p = tmp_path / "feeds.yaml"
    p.write_text(text, encoding="utf-8")
    load_config(p, env={})


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, text)
    return str(exc.value)


def test_bundled_feeds_yaml_is_valid() -> None:
    cfg = load_config(REPO / "feeds.yaml", env={})
    regions = {s.region for s in cfg.sources}
    assert regions == {"joensuu", "petrozavodsk"}
    # Yle's Russian and English services are Joensuu sources in those languages.
    assert {s.language for s in cfg.sources} == {"fi", "ru", "en"}
    assert {s.category for s in cfg.sources} == {"news", "events"}
    by_id = {s.id: s for s in cfg.sources}
    # The addresses the outlets publish (issue 15), not the ones first written down.
    assert by_id["yle-pohjois-karjala"].url == "https://yle.fi/rss/t/18-141936/fi"
    assert by_id["gtrk-karelia"].url == "https://tv-karelia.ru/feed/"
    assert by_id["stolica-na-onego"].url == "https://stolicaonego.ru/rss.php"
    assert by_id["gov-karelia"].url == "https://rk.karelia.ru/feed/"
    # Every bundled event listing says when its events take place, not only when it posted.
    for s in cfg.sources:
        if s.kind == "html" and s.select is not None:
            assert s.select.event_date, s.id
    assert str(cfg.exchange_tz(cfg.exchange("joensuu-to-petrozavodsk"))) == "Europe/Moscow"


def test_unknown_key_names_its_line_and_the_allowed_keys(tmp_path: Path) -> None:
    msg = _error(
        tmp_path,
        GOOD + "  - {id: b, region: joensuu, url: 'https://x.fi', language: fi, colour: red}\n",
    )
    assert msg.startswith(f"{tmp_path / 'feeds.yaml'}:5: ")
    assert "unknown key 'colour'" in msg
    assert "expected one of" in msg and "category" in msg


def test_missing_field_points_at_the_entry(tmp_path: Path) -> None:
    msg = _error(tmp_path, GOOD + "  - {id: b, region: joensuu, language: fi}\n")
    assert ":5: " in msg and "missing required key 'url'" in msg


def test_bad_url_unknown_region_and_duplicate_id_are_all_reported(tmp_path: Path) -> None:
    msg = _error(
        tmp_path,
        GOOD
        + "  - {id: b, region: joensuu, url: 'ftp://x', language: fi}\n"
        + "  - {id: a, region: nowhere, url: 'https://x.fi', language: fi}\n",
    )
    assert ":5: sources[1].url: 'ftp://x' is not a URL" in msg
    assert ":6: sources[2].id: duplicate source id 'a'" in msg
    assert ":6: sources[2].region: unknown region 'nowhere' (expected one of: joensuu)" in msg


def test_bad_yaml_reports_the_line(tmp_path: Path) -> None:
    msg = _error(tmp_path, GOOD + "lists: [unclosed\n")
    assert "invalid YAML" in msg and ":6" in msg


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    msg = _error(tmp_path, "timezone: Europe/Helsinki\n" + GOOD + "timezone: UTC\n")
    assert ":6: duplicate key 'timezone' (first at line 1)" in msg


def test_bad_language_and_timezone(tmp_path: Path) -> None:
    msg = _error(
        tmp_path, "timezone: Mars/Olympus\n" + GOOD.replace("language: fi}\n", "language: sv}\n", 1)
    )
    assert ":1: timezone: 'Mars/Olympus' is not a time zone" in msg
    assert "'sv' is not allowed (expected 'fi', 'ru' or 'en')" in msg


def test_exchange_references_are_checked(tmp_path: Path) -> None:
    msg = _error(
        tmp_path,
        GOOD
        + """\
exchanges:
  - id: x
    from: [joensuu, atlantis]
    language: ru
    editors: [editor@example.fi]
    lists: [nope]
""",
    )
    assert ":7: exchanges[0].from: unknown region 'atlantis'" in msg
    assert ":10: exchanges[0].lists: unknown list 'nope'" in msg


def test_secrets_come_from_the_environment_only(tmp_path: Path) -> None:
    p = tmp_path / "feeds.yaml"
    p.write_text(GOOD + "mail: {backend: smtp, smtp: {host: h, password_env: MY_PW}}\n")
    cfg = load_config(p, env={"MY_PW": "hunter2"})
    assert cfg.secret(cfg.mail.smtp.password_env) == "hunter2"
    assert "hunter2" not in repr(cfg)


def test_a_generated_secret_key_is_kept_owner_only_and_reused(tmp_path: Path) -> None:
    p = tmp_path / "feeds.yaml"
    p.write_text(GOOD)
    cfg = load_config(p, env={})
    key = cfg.secret_key.get_secret_value()
    key_file = cfg.var_dir / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert load_config(p, env={}).secret_key.get_secret_value() == key


def test_database_url_from_environment_wins(tmp_path: Path) -> None:
    p = tmp_path / "feeds.yaml"
    p.write_text(GOOD)
    cfg = load_config(p, env={"NEWSEXCHANGE_DATABASE_URL": "postgresql+psycopg://h/db"})
    assert cfg.database_url == "postgresql+psycopg://h/db"


def test_check_command_exits_2_with_file_line_and_json(tmp_path: Path) -> None:
    p = tmp_path / "feeds.yaml"
    p.write_text(
        GOOD + "  - {id: b, region: joensuu, url: 'https://x.fi', language: fi, colour: red}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "newsexchange", "check", "--config", str(p), "--json"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert f"{p}:5: " in proc.stderr
    import json

    out = json.loads(proc.stdout)
    assert out["ok"] is False and "colour" in out["error"]


def test_check_command_prints_what_would_run(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "newsexchange",
            "check",
            "--config",
            str(REPO / "feeds.yaml"),
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    import json

    out = json.loads(proc.stdout)
    assert out["ok"] is True
    # 14 real sources (6 of them unverified, so disabled), 2 demo feeds and 2 demo calendars.
    assert out["sources"] == 18
    assert out["sources_enabled"] == 12
    assert {e["id"] for e in out["exchanges"]} >= {
        "joensuu-to-petrozavodsk",
        "petrozavodsk-to-joensuu",
    }


def test_editors_may_give_their_language_and_a_bare_address_reads_the_source_side(
    tmp_path: Path,
) -> None:
    p = tmp_path / "feeds.yaml"
    p.write_text(
        """\
regions:
  joensuu: {name: Joensuu, language: fi}
  petrozavodsk: {name: Petrozavodsk, language: ru}
sources:
  - {id: a, region: joensuu, url: "https://example.fi/rss", language: fi}
exchanges:
  - id: fi-to-ru
    from: [joensuu]
    language: ru
    editors: [Anna@Example.fi, {email: boris@example.ru, language: ru}]
"""
    )
    cfg = load_config(p, env={})
    ex = cfg.exchange("fi-to-ru")
    assert ex.editors == ["anna@example.fi", "boris@example.ru"]
    assert cfg.editor_language(ex, "anna@example.fi") == "fi"
    assert cfg.editor_language(ex, "BORIS@example.ru") == "ru"
    p.write_text(p.read_text().replace("language: ru}]", "language: de}]"))
    with pytest.raises(ConfigError) as exc:
        load_config(p, env={})
    assert "feeds.yaml:10" in str(exc.value) and "editors" in str(exc.value)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("approvals_required: yes", "approvals_required: true is not a whole number"),
        ('max_items: "5"', "max_items: '5' is not a whole number"),
        ("max_items: 2.5", "max_items: 2.5 is not a whole number"),
        ("include_untranslated: 1", "include_untranslated: 1 is not true or false"),
        ("max_items: 0", "max_items: 0 is too small (expected at least 1)"),
        ("min_items: 0", "min_items: 0 is too small (expected at least 1)"),
    ],
)
def test_values_are_never_coerced_and_errors_speak_the_house_form(
    tmp_path: Path, line: str, says: str
) -> None:
    text = (
        GOOD
        + "exchanges:\n  - id: x\n    from: [joensuu]\n    language: ru\n"
        + "    editors: [a@example.fi]\n    "
        + line
        + "\n"
    )
    message = _error(tmp_path, text)
    assert f"feeds.yaml:10: exchanges[0].{says}" in message, message
    assert "Input should" not in message


@pytest.mark.parametrize("text", ["", "\n# only a comment\n", "{}\n"])
def test_an_empty_file_is_an_error_with_its_line(tmp_path: Path, text: str) -> None:
    message = _error(tmp_path, text)
    assert "feeds.yaml:1: the file is empty" in message, message


def test_check_refuses_a_file_without_sources(tmp_path: Path) -> None:
    p = tmp_path / "feeds.yaml"
    p.write_text("regions:\n  joensuu: {name: Joensuu, language: fi}\n")
    res = subprocess.run(
        [sys.executable, "-m", "newsexchange", "check", "--config", str(p)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert f"{p}:1: no sources: nothing would be collected" in res.stderr + res.stdout
