"""feeds.yaml read with the line of every key, and pydantic's validation errors turned into
``feeds.yaml:LINE: what is wrong (expected …)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from yaml.reader import Reader, ReaderError

from newsexchange.config.schema import Config
from newsexchange.errors import ConfigError, ConfigErrors

__all__ = ["LinePath", "compose", "lookup_line", "validation_errors"]

LinePath = tuple[str | int, ...]


#: libyaml's parser where PyYAML was built with it (about 8x quicker on the bundled
#: feeds.yaml: 2.7 ms against 21.6), else the pure-Python one.
_FAST_LOADER: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)


def _pure_only(text: str) -> bool:
    """Whether ``text`` holds what libyaml accepts and the pure loader refuses, so that only
    the pure loader may read it. Found by fuzzing feeds.yaml (a few characters inserted or
    deleted; 3 mutants in 100 parsed differently, all of these kinds): a tab (the pure loader
    refuses one after a colon, before a comment, inside [ ] or { }), a character that loader
    refuses outright, and a "?" inside [ ] or { } (ending a plain scalar there, ``{url:
    https://x/?a=1}``, which libyaml keeps in the scalar). A "?" in a file without flow
    collections (a URL's query in block style) keeps the fast path."""
    if "\t" in text or Reader.NON_PRINTABLE.search(text):
        return True
    return "?" in text and ("[" in text or "{" in text)


def compose(text: str, filename: str) -> tuple[Any, dict[LinePath, int]]:
    """Parse YAML keeping the line of every key, and refuse duplicate keys.

    libyaml reads the file when PyYAML has it; the pure-Python loader reads it again when
    libyaml refuses it, and alone when the text holds what the two parsers read differently
    (:func:`_pure_only`), so a file is accepted or refused the same, and the message and the
    line of a mistake are the pure loader's, word for word, whichever parser is present."""
    if _FAST_LOADER is not None and not _pure_only(text):
        try:
            return _compose(_FAST_LOADER, text, filename)
        except ConfigError as exc:
            if not isinstance(exc.__cause__, yaml.YAMLError):
                raise  # duplicate keys: found the same way by either parser
    return _compose(yaml.SafeLoader, text, filename)


def _compose(
    loader_class: type[yaml.SafeLoader], text: str, filename: str
) -> tuple[Any, dict[LinePath, int]]:
    try:
        loader = loader_class(text)
    except ReaderError as exc:  # a control character: refused before parsing
        at = text.count("\n", 0, exc.position) + 1
        what = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
        raise ConfigError(f"invalid YAML: {what}", file=filename, line=at) from exc
    try:
        node = loader.get_single_node()
        lines: dict[LinePath, int] = {}
        errors: list[ConfigError] = []

        def walk(n: yaml.Node, path: LinePath) -> None:
            lines.setdefault(path, n.start_mark.line + 1)
            if isinstance(n, yaml.MappingNode):
                seen: dict[str, int] = {}
                for k, v in n.value:
                    key = str(k.value)
                    line = k.start_mark.line + 1
                    if key in seen:
                        errors.append(
                            ConfigError(
                                f"duplicate key {key!r} (first at line {seen[key]})",
                                file=filename,
                                line=line,
                            )
                        )
                    seen[key] = line
                    lines[(*path, key)] = line
                    walk(v, (*path, key))
            elif isinstance(n, yaml.SequenceNode):
                for i, v in enumerate(n.value):
                    walk(v, (*path, i))

        if node is not None:
            walk(node, ())
        if errors:
            raise ConfigErrors(errors)
        data = loader.construct_document(node) if node is not None else {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"invalid YAML: {what}", file=filename, line=line) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=filename) from exc
    finally:
        loader.dispose()
    return data, lines


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The pydantic model class that a validation error location points into."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = None
            for name, f in current.model_fields.items():
                if part in (name, f.alias):
                    field = f
            if field is None:
                return current
            current = _unwrap(field.annotation)
        else:
            current = None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    origin = get_origin(tp)
    if origin is None:
        return tp
    for arg in get_args(tp):
        inner = _unwrap(arg)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return None


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _fmt_loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def lookup_line(lines: Mapping[LinePath, int], loc: tuple[str | int, ...]) -> int | None:
    path = tuple(loc)
    while True:
        if path in lines:
            return lines[path]
        if not path:
            return None
        path = path[:-1]


# pydantic's error types in the house form ("what is wrong (expected …)"); the value given is
# put in front, except for the types in _NO_INPUT.
_HOUSE: dict[str, str] = {
    "int_type": "is not a whole number (expected an integer such as 5, without quotes)",
    "int_parsing": "is not a whole number (expected an integer such as 5, without quotes)",
    "int_from_float": "is not a whole number (expected an integer such as 5)",
    "float_type": "is not a number (expected a number such as 1.5, without quotes)",
    "float_parsing": "is not a number (expected a number such as 1.5, without quotes)",
    "bool_type": "is not true or false (expected true or false)",
    "bool_parsing": "is not true or false (expected true or false)",
    "string_type": "is not text (expected a text value)",
    "list_type": "is not a list (expected [a, b] or one '- item' per line)",
    "dict_type": "is not a mapping (expected key: value pairs)",
    "model_type": "is not a mapping (expected key: value pairs)",
    "model_attributes_type": "is not a mapping (expected key: value pairs)",
    "greater_than": "is too small (expected more than {gt})",
    "greater_than_equal": "is too small (expected at least {ge})",
    "less_than": "is too large (expected less than {lt})",
    "less_than_equal": "is too large (expected at most {le})",
    "too_short": "has too few entries (expected at least {min_length})",
    "too_long": "has too many entries (expected at most {max_length})",
    "union_tag_invalid": "is not one of the allowed kinds",
}
_NO_INPUT = frozenset({"list_type", "dict_type", "model_type", "model_attributes_type"})


def validation_errors(
    exc: ValidationError, filename: str, lines: Mapping[LinePath, int]
) -> list[ConfigError]:
    out: list[ConfigError] = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        line = lookup_line(lines, loc)
        where = _fmt_loc(loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = _model_at(Config, loc[:-1])
            allowed = ", ".join(_keys_of(parent)) if parent else ""
            msg = f"unknown key {loc[-1]!r}" + (f" (expected one of: {allowed})" if allowed else "")
            if len(loc) > 1:
                msg = f"{_fmt_loc(loc[:-1])}: {msg}"
        elif kind == "missing":
            msg = f"{where}: missing required key" if len(loc) > 0 else "missing required key"
            parent_path = loc[:-1]
            line = lookup_line(lines, parent_path)
            msg = f"{_fmt_loc(parent_path) or 'top level'}: missing required key {loc[-1]!r}"
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            msg = f"{where}: {err['input']!r} is not allowed (expected {expected})"
        elif kind in _HOUSE:
            got = err.get("input")
            shown = ("true" if got else "false") if isinstance(got, bool) else repr(got)
            text = _HOUSE[kind].format(**{k: v for k, v in (err.get("ctx") or {}).items()})
            msg = f"{where}: {shown} {text}" if kind not in _NO_INPUT else f"{where}: {text}"
        else:
            text = str(err["msg"])
            text = text.removeprefix("Value error, ")
            msg = f"{where}: {text}" if where else text
        out.append(ConfigError(msg, file=filename, line=line))
    return out
