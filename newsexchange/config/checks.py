"""The checks between sections of feeds.yaml (regions, lists, sources, exchanges, providers),
one function per rule.

They run on the raw data, beside pydantic's per-field validation, so that a reference to an
unknown region is reported together with a mistyped number, each at its line. A rule returns
``(message, key path)`` pairs; :func:`cross_check` gives each its line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from newsexchange.config.schema import ID_RE
from newsexchange.config.yaml_lines import LinePath, lookup_line
from newsexchange.errors import ConfigError

__all__ = ["cross_check"]

Problem = tuple[str, LinePath]


def _as_dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


@dataclass
class _Seen:
    """What the rules learn on the way: the source ids (and where each was first used) and
    the exchange ids so far."""

    regions: dict[str, Any]
    lists: dict[str, Any]
    sources: dict[str, int] = field(default_factory=dict)
    exchanges: set[str] = field(default_factory=set)

    @property
    def known_regions(self) -> str:
        return ", ".join(sorted(map(str, self.regions))) or "none defined"


def cross_check(
    data: Mapping[str, Any], filename: str, lines: Mapping[LinePath, int]
) -> list[ConfigError]:
    """References between sections (regions, lists, sources), checked on the raw data so they
    are reported together with the per-field mistakes."""
    seen = _Seen(regions=_as_dict(data.get("regions")), lists=_as_dict(data.get("lists")))
    problems: list[Problem] = [*_region_ids(seen)]
    for i, s in enumerate(_as_list(data.get("sources"))):
        problems += _source(seen, i, _as_dict(s))
        problems += _source_places(seen, i, _as_dict(s))
    for i, e in enumerate(_as_list(data.get("exchanges"))):
        e = _as_dict(e)
        problems += _exchange_id(seen, i, e)
        problems += _exchange_regions(seen, i, e)
        problems += _exchange_lists(seen, i, e)
        problems += _exchange_weights(seen, i, e)
    problems += _list_ids(seen)
    for i, p in enumerate(_as_list(_as_dict(data.get("translation")).get("providers"))):
        problems += _provider(i, _as_dict(p))
    return [
        ConfigError(msg, file=filename, line=lookup_line(lines, path)) for msg, path in problems
    ]


def _region_ids(seen: _Seen) -> Iterator[Problem]:
    for rid in seen.regions:
        if not ID_RE.match(str(rid)):
            yield f"regions: {rid!r} is not a valid id", ("regions", rid)


def _list_ids(seen: _Seen) -> Iterator[Problem]:
    for lid in seen.lists:
        if not ID_RE.match(str(lid)):
            yield f"lists: {lid!r} is not a valid id", ("lists", lid)


def _source(seen: _Seen, i: int, s: dict[str, Any]) -> Iterator[Problem]:
    """A source's id is used once; its region exists."""
    sid, region = s.get("id"), s.get("region")
    if isinstance(sid, str):
        if sid in seen.sources:
            yield (
                f"sources[{i}].id: duplicate source id {sid!r} (first used in "
                f"sources[{seen.sources[sid]}])",
                ("sources", i, "id"),
            )
        seen.sources.setdefault(sid, i)
    if isinstance(region, str) and region not in seen.regions:
        yield (
            f"sources[{i}].region: unknown region {region!r} (expected one of: "
            f"{seen.known_regions})",
            ("sources", i, "region"),
        )


def _source_places(seen: _Seen, i: int, s: dict[str, Any]) -> Iterator[Problem]:
    """A ``require_place`` source's region lists places (else it would keep nothing)."""
    region = s.get("region")
    if s.get("require_place") is not True or not isinstance(region, str):
        return
    if region in seen.regions and not _as_list(_as_dict(seen.regions[region]).get("places")):
        yield (
            f"sources[{i}].require_place: region {region!r} lists no places "
            f"(regions.{region}.places), so this source would keep no item",
            ("sources", i, "require_place"),
        )


def _exchange_id(seen: _Seen, i: int, e: dict[str, Any]) -> Iterator[Problem]:
    eid = e.get("id")
    if isinstance(eid, str):
        if eid in seen.exchanges:
            yield f"exchanges[{i}].id: duplicate exchange id {eid!r}", ("exchanges", i, "id")
        seen.exchanges.add(eid)


def _exchange_regions(seen: _Seen, i: int, e: dict[str, Any]) -> Iterator[Problem]:
    """An exchange's ``from`` regions and its ``to`` region exist."""
    for j, r in enumerate(_as_list(e.get("from"))):
        if isinstance(r, str) and r not in seen.regions:
            yield (
                f"exchanges[{i}].from: unknown region {r!r} (expected one of: "
                f"{seen.known_regions})",
                ("exchanges", i, "from", j),
            )
    to = e.get("to")
    if isinstance(to, str) and to not in seen.regions:
        yield (
            f"exchanges[{i}].to: unknown region {to!r} (expected one of: {seen.known_regions})",
            ("exchanges", i, "to"),
        )


def _exchange_lists(seen: _Seen, i: int, e: dict[str, Any]) -> Iterator[Problem]:
    """An exchange's lists exist and are in the language of its digests."""
    for j, lst in enumerate(_as_list(e.get("lists"))):
        if not isinstance(lst, str):
            continue
        if lst not in seen.lists:
            known = ", ".join(sorted(map(str, seen.lists))) or "none defined"
            yield (
                f"exchanges[{i}].lists: unknown list {lst!r} (expected one of: {known})",
                ("exchanges", i, "lists", j),
            )
            continue
        lang = _as_dict(seen.lists[lst]).get("language")
        if lang and e.get("language") and lang != e.get("language"):
            yield (
                f"exchanges[{i}].lists: list {lst!r} is in {lang!r} but the "
                f"exchange's digests are in {e.get('language')!r}",
                ("exchanges", i, "lists", j),
            )


def _exchange_weights(seen: _Seen, i: int, e: dict[str, Any]) -> Iterator[Problem]:
    """An exchange weighs only sources that exist."""
    for sid in _as_dict(e.get("source_weights")):
        if sid not in seen.sources:
            yield (
                f"exchanges[{i}].source_weights: unknown source {sid!r}",
                ("exchanges", i, "source_weights", sid),
            )


def _provider(i: int, p: dict[str, Any]) -> Iterator[Problem]:
    """A provider has what it cannot work without."""
    if p.get("name") == "libre" and not p.get("url"):
        yield (
            f"translation.providers[{i}]: libre needs url: (the LibreTranslate server)",
            ("translation", "providers", i),
        )
    if p.get("name") in ("deepl", "microsoft") and not p.get("api_key_env"):
        yield (
            f"translation.providers[{i}]: {p.get('name')} needs api_key_env: (the "
            "variable holding the key)",
            ("translation", "providers", i),
        )
