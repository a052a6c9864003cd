"""The gettext catalogues: every message marked in the code and the templates is translated
into Finnish and Russian, with the same placeholders; the catalogues are compiled and used
as written (a real babel compile of a catalogue written here)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.pofile import read_po, write_po

from newsexchange import i18n, templating

REPO = Path(__file__).resolve().parent.parent
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


def _extracted(tmp_path: Path) -> Catalog:
    pot = tmp_path / "messages.pot"
    subprocess.run(
        [
            str(REPO / ".venv/bin/pybabel"),
            "-q",
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "TokenError:2",
            "-o",
            str(pot),
            ".",
        ],
        cwd=REPO,
        check=True,
    )
    with pot.open("rb") as f:
        return read_po(f)


def _ids(message: Message) -> tuple[str, ...]:
    return message.id if isinstance(message.id, tuple) else (message.id,)


def _strs(message: Message) -> tuple[str, ...]:
    return message.string if isinstance(message.string, tuple) else (message.string,)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return _extracted(tmp_path_factory.mktemp("pot"))


@pytest.mark.parametrize("lang", ["fi", "ru"])
def test_every_marked_message_is_translated_with_the_same_placeholders(
    extracted: Catalog, lang: str
) -> None:
    with i18n.catalogue_path(lang).open("rb") as f:
        catalogue = read_po(f, locale=lang)
    problems: list[str] = []
    for msg in extracted:
        if not msg.id:
            continue
        have = catalogue.get(msg.id)
        if have is None:
            problems.append(f"missing: {msg.id!r}")
            continue
        strings = _strs(have)
        if have.fuzzy or not all(s.strip() for s in strings):
            problems.append(f"untranslated or fuzzy: {msg.id!r}")
            continue
        wanted = {p for i in _ids(msg) for p in PLACEHOLDER.findall(i)}
        for s in strings:
            if set(PLACEHOLDER.findall(s)) != wanted:
                problems.append(f"placeholders differ: {msg.id!r} -> {s!r}")
    known = {m.id for m in extracted if m.id}
    problems += [f"obsolete: {m.id!r}" for m in catalogue if m.id and m.id not in known]
    assert not problems, (
        f"{i18n.catalogue_path(lang)}: run scripts/update-catalogues, then translate:\n"
        + "\n".join(problems)
    )


def test_the_english_catalogue_holds_every_message(extracted: Catalog) -> None:
    with i18n.catalogue_path("en").open("rb") as f:
        catalogue = read_po(f, locale="en")
    missing = [m.id for m in extracted if m.id and catalogue.get(m.id) is None]
    assert not missing, f"run scripts/update-catalogues: {missing}"


@pytest.fixture
def catalogue_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A locale folder of the test's own, used by i18n and the templates in place of the
    package's (the compiled catalogues and environments are cached: cleared either side)."""
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    i18n.translations.cache_clear()
    templating._environment.cache_clear()
    yield tmp_path
    i18n.translations.cache_clear()
    templating._environment.cache_clear()


def _write(
    folder: Path, lang: str, messages: dict[str | tuple[str, str], str | tuple[str, ...]]
) -> None:
    catalogue = Catalog(locale=lang, domain="messages")
    for mid, mstr in messages.items():
        catalogue.add(mid, mstr)
    path = folder / lang / "LC_MESSAGES" / "messages.po"
    path.parent.mkdir(parents=True)
    with path.open("wb") as f:
        write_po(f, catalogue)


def test_python_and_templates_read_the_catalogue_of_the_readers_language(
    catalogue_dir: Path,
) -> None:
    _write(
        catalogue_dir,
        "ru",
        {
            "Approve": "Одобрить",
            "Digest %(id)s": "Выпуск %(id)s",
            ("%(num)s item", "%(num)s items"): (
                "%(num)s материал",
                "%(num)s материала",
                "%(num)s материалов",
            ),
        },
    )
    _ = i18n.gettext_for("ru-RU")
    assert _("Approve") == "Одобрить"
    assert _("Digest %(id)s", id=7) == "Выпуск 7"
    assert _("Not in the catalogue") == "Not in the catalogue"
    n = i18n.ngettext_for("ru")
    assert [n("%(num)s item", "%(num)s items", k) for k in (1, 3, 5, 21)] == [
        "1 материал",
        "3 материала",
        "5 материалов",
        "21 материал",
    ]
    page = templating.environment("ru").from_string(
        "<html lang={{ lang }}>{% trans %}Approve{% endtrans %} "
        "{% trans id=7 %}Digest {{ id }}{% endtrans %} {{ _('Approve') }}"
    )
    assert page.render() == "<html lang=ru>Одобрить Выпуск 7 Одобрить"
    # English, an unknown language and no language: the source texts.
    for lang in ("en", "de", None):
        assert (
            templating.environment(lang).from_string("{% trans %}Approve{% endtrans %}").render()
            == "Approve"
        )
    assert i18n.gettext_for("de")("Approve") == "Approve"
