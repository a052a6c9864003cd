"""Each provider's real code path over HTTP, against a local server speaking its wire format.

deep-translator's base URLs are pointed at the local server through the provider's ``url`` in
feeds.yaml; nothing inside the process is faked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest

from newsexchange.config import Config
from newsexchange.db import Database
from newsexchange.errors import TranslationError
from newsexchange.translate import run_translate
from newsexchange.translate.base import ProviderError
from newsexchange.translate.providers import build_translators
from tests.servers import HTTPServer, Response
from tests.test_translate_support import (
    NOW,
    FakeDeepl,
    FakeGoogle,
    FakeLibre,
    FakeMicrosoft,
    FakeMyMemory,
    add_item,
    exchange_config,
    fake_translate,
)


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    s = HTTPServer().start()
    yield s
    s.stop()


def _translator(write_config: Callable[..., Config], line: str, env: dict[str, str] | None = None):
    cfg = write_config(exchange_config(f"    - {line}\n"), env=env)
    return build_translators(cfg)[0]


def test_google_speaks_the_mobile_page_and_joins_segments_in_one_request(
    write_config: Callable[..., Config], server: HTTPServer
) -> None:
    google = FakeGoogle(server)
    t = _translator(write_config, f"{{name: google, url: {server.url}, timeout: 2}}")
    out = t.translate(["Hyvää huomenta.", "Kaupunki kasvaa."], "fi", "ru")
    assert out == [fake_translate("Hyvää huomenta."), fake_translate("Kaupunki kasvaa.")]
    assert google.requests == 1 and google.calls[0].texts == ["Hyvää huomenta.\nKaupunki kasvaa."]
    assert (google.calls[0].source, google.calls[0].target) == ("fi", "ru")
    assert t.max_chars == 4999  # Google's web endpoint refuses 5,000 characters or more


def test_google_chunks_stay_under_5000_characters(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    server: HTTPServer,
) -> None:
    google = FakeGoogle(server)
    cfg = write_config(exchange_config(f"    - {{name: google, url: {server.url}}}\n"))
    db = db_for(cfg)
    body = " ".join(f"Lause {i} kertoo Joensuun torin uudistuksesta tarkasti." for i in range(400))
    item = add_item(db, title="Pitkä", summary_text=body, detected="fi")
    report = run_translate(db, cfg, now=NOW)
    assert report.ok
    ru = [c for c in google.calls if c.target == "ru"]
    assert len(ru) >= len(body) // 5000 + 1
    assert all(c.chars < 5000 for c in ru)
    from tests.test_translate import translations

    assert translations(db, item)["ru"].summary_text == fake_translate(body)


def test_google_429_is_classified_with_its_retry_after(
    write_config: Callable[..., Config], server: HTTPServer
) -> None:
    google = FakeGoogle(server)
    google.failure = Response(429, "Too many", {"Retry-After": "120"})
    t = _translator(write_config, f"{{name: google, url: {server.url}}}")
    with pytest.raises(ProviderError) as exc:
        t.translate(["Hei"], "fi", "en")
    assert exc.value.kind == "rate_limited" and exc.value.retry_after == 120
    assert exc.value.retryable


def test_deepl_sends_post_with_authorization_header_not_the_legacy_auth_key(
    write_config: Callable[..., Config], server: HTTPServer
) -> None:
    deepl = FakeDeepl(server, api_key="k-123:fx")
    t = _translator(
        write_config,
        f"{{name: deepl, url: {server.url}, api_key_env: DEEPL_KEY}}",
        env={"DEEPL_KEY": "k-123:fx"},
    )
    assert t.translate(["Kiitos paljon."], "fi", "en") == [fake_translate("Kiitos paljon.")]
    req = server.requests_to("/v2/translate")[0]
    assert req.method == "POST" and "auth_key" not in req.query
    assert b"auth_key" not in req.body and b"k-123" not in req.body
    assert deepl.calls[0].target == "en"


def test_deepl_bad_key_and_quota_are_classified_without_leaking_the_key(
    write_config: Callable[..., Config], server: HTTPServer
) -> None:
    FakeDeepl(server, api_key="right-key")
    t = _translator(
        write_config,
        f"{{name: deepl, url: {server.url}, api_key_env: DEEPL_KEY}}",
        env={"DEEPL_KEY": "secret-wrong-key"},
    )
    with pytest.raises(ProviderError) as exc:
        t.translate(["Kiitos"], "fi", "en")
    assert exc.value.kind == "auth" and not exc.value.retryable
    assert "secret-wrong-key" not in str(exc.value)

    deepl = FakeDeepl(server, api_key="secret-wrong-key")
    deepl.failure = Response(456, json.dumps({"message": "Quota exceeded"}))
    with pytest.raises(ProviderError) as exc:
        t.translate(["Kiitos"], "fi", "en")
    assert exc.value.kind == "quota"


def test_deepl_without_its_key_variable_says_which_variable(
    write_config: Callable[..., Config], server: HTTPServer
) -> None:
    t = _translator(write_config, f"{{name: deepl, url: {server.url}, api_key_env: DEEPL_KEY}}")
    with pytest.raises(ProviderError, match="DEEPL_KEY is unset") as exc:
        t.translate(["Kiitos"], "fi", "en")
    assert exc.value.kind == "auth" and server.requests == []


def test_microsoft_posts_json_with_key_and_region_and_never_asks_for_languages(
    write_config: Callable[..., Config], server: HTTPServer
) -> None:
    ms = FakeMicrosoft(server, api_key="ms-key")
    t = _translator(
        write_config,
        f"{{name: microsoft, url: {server.url}, api_key_env: MS_KEY, region: northeurope}}",
        env={"MS_KEY": "ms-key"},
    )
    assert t.translate(["Talvi tulee."], "fi", "ru") == [fake_translate("Talvi tulee.")]
    assert ms.regions == ["northeurope"]
    assert [r.path for r in server.requests] == ["/translate"]
    assert server.requests[0].query["api-version"] == ["3.0"]


def test_microsoft_bad_key_is_an_auth_error(
    write_config: Callable[..., Config], server: HTTPServer
) -> None:
    FakeMicrosoft(server, api_key="ms-key")
    t = _translator(
        write_config,
        f"{{name: microsoft, url: {server.url}, api_key_env: MS_KEY}}",
        env={"MS_KEY": "nope"},
    )
    with pytest.raises(ProviderError) as exc:
        t.translate(["Talvi"], "fi", "ru")
    assert exc.value.kind == "auth"


def test_mymemory_maps_language_codes_and_detects_its_quota_warning(
    write_config: Callable[..., Config], server: HTTPServer
) -> None:
    mm = FakeMyMemory(server)
    t = _translator(write_config, f"{{name: mymemory, url: {server.url}}}")
    assert t.translate(["Hyvää päivää"], "fi", "ru") == [fake_translate("Hyvää päivää")]
    assert server.requests[0].query["langpair"] == ["fi-FI|ru-RU"]
    assert t.max_chars == 499
    mm.quota_used = True
    with pytest.raises(ProviderError) as exc:
        t.translate(["Hyvää yötä"], "fi", "ru")
    assert exc.value.kind == "quota", "a quota warning must never be stored as a translation"


def test_mymemory_quota_falls_back_to_libre_and_the_warning_is_not_published(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    server: HTTPServer,
) -> None:
    mm = FakeMyMemory(server)
    mm.quota_used = True
    libre_server = HTTPServer().start()
    try:
        libre = FakeLibre(libre_server)
        cfg = write_config(
            exchange_config(
                f"    - {{name: mymemory, url: {server.url}}}\n"
                f"    - {{name: libre, url: {libre_server.url}}}\n"
            )
        )
        db = db_for(cfg)
        item = add_item(db, title="Hyvää päivää", detected="fi")
        run_translate(db, cfg, now=NOW)
        from tests.test_translate import translations

        rows = translations(db, item)
        assert rows["ru"].title == fake_translate("Hyvää päivää") and rows["ru"].provider == "libre"
        assert libre.requests == 2
    finally:
        libre_server.stop()


def test_a_provider_that_drips_its_answer_is_cut_off_by_the_wall_clock_bound(
    write_config: Callable[..., Config], server: HTTPServer
) -> None:
    # Each 64-byte piece comes within the socket timeout, the whole far beyond it: only the
    # wall-clock bound stops this (deep-translator passes no timeout at all).
    page = "<div class='result-container'>" + "x" * 4000 + "</div>"
    server.route("/m", Response(200, page, drip=0.05))
    t = _translator(write_config, f"{{name: google, url: {server.url}, timeout: 0.6}}")
    t0 = time.monotonic()
    with pytest.raises(TranslationError) as exc:
        t.translate(["Hei"], "fi", "en")
    assert time.monotonic() - t0 < 1.5
    assert getattr(exc.value, "kind", None) == "timeout"


def test_a_provider_that_never_answers_times_out(
    write_config: Callable[..., Config], server: HTTPServer
) -> None:
    server.route("/get", Response(200, "{}", delay=5))
    t = _translator(write_config, f"{{name: mymemory, url: {server.url}, timeout: 0.5}}")
    t0 = time.monotonic()
    with pytest.raises(ProviderError) as exc:
        t.translate(["Hei"], "fi", "en")
    assert time.monotonic() - t0 < 1.5 and exc.value.kind == "timeout"


def test_connection_refused_is_unreachable_and_retryable(
    write_config: Callable[..., Config],
) -> None:
    t = _translator(write_config, "{name: libre, url: 'http://127.0.0.1:9', timeout: 1}")
    with pytest.raises(ProviderError) as exc:
        t.translate(["Hei"], "fi", "en")
    assert exc.value.kind == "unreachable" and exc.value.retryable


def test_libre_sends_the_api_key_from_the_environment(
    write_config: Callable[..., Config], server: HTTPServer
) -> None:
    FakeLibre(server, api_key="lt-key")
    t = _translator(
        write_config,
        f"{{name: libre, url: {server.url}, api_key_env: LT_KEY}}",
        env={"LT_KEY": "lt-key"},
    )
    assert t.translate(["Hei", "Moi"], "fi", "en") == ["ieH", "ioM"]
    bad = _translator(
        write_config,
        f"{{name: libre, url: {server.url}, api_key_env: LT_KEY}}",
        env={"LT_KEY": "other"},
    )
    with pytest.raises(ProviderError) as exc:
        bad.translate(["Hei"], "fi", "en")
    assert exc.value.kind == "auth" and "other" not in str(exc.value)


def test_argos_translates_offline_when_installed(write_config: Callable[..., Config]) -> None:
    argos = pytest.importorskip(
        "argostranslate.translate",
        reason="argostranslate is not installed (optional extra 'argos'; it pulls in torch)",
    )
    codes = {lang.code for lang in argos.get_installed_languages()}
    if not {"fi", "en"} <= codes:
        pytest.skip(f"Argos packages fi/en not installed (have: {sorted(codes)})")
    t = _translator(write_config, "{name: argos}")
    out = t.translate(["Hyvää huomenta"], "fi", "en")
    assert out and out[0] and out[0] != "Hyvää huomenta"


def test_argos_missing_is_reported_as_unsupported_not_a_crash(
    write_config: Callable[..., Config],
) -> None:
    try:
        import argostranslate  # noqa: F401
    except ImportError:
        t = _translator(write_config, "{name: argos}")
        with pytest.raises(ProviderError, match="not installed") as exc:
            t.translate(["Hei"], "fi", "en")
        assert exc.value.kind == "unsupported"
    else:
        pytest.skip("argostranslate is installed; the missing-package path cannot be shown")
