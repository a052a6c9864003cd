"""feeds.yaml and the environment → one validated, frozen :class:`Config`.

Nothing below this package reads YAML or environment variables. Every mistake in the file is
reported as ``feeds.yaml:LINE: what is wrong (expected …)``; all mistakes are collected so a
user can fix them in one pass. Unknown keys are errors, never silently ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from newsexchange.config.checks import cross_check
from newsexchange.config.schema import DEFAULT_CONFIG, Config
from newsexchange.config.yaml_lines import compose, validation_errors
from newsexchange.errors import ConfigError, ConfigErrors

__all__ = ["load_config", "load_config_text"]


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Read and validate feeds.yaml; raise :class:`ConfigError` with file:line on mistakes."""
    env = dict(os.environ if env is None else env)
    p = Path(path or DEFAULT_CONFIG)
    filename = str(path or DEFAULT_CONFIG)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"no such file (pass --config PATH, or run from the folder holding {DEFAULT_CONFIG})",
            file=filename,
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason})", file=filename) from exc
    return load_config_text(text, filename=filename, path=p, env=env)


def load_config_text(
    text: str,
    *,
    filename: str = DEFAULT_CONFIG,
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    env = dict(os.environ if env is None else env)
    data, lines = compose(text, filename)
    if data is None or data == {}:
        # Nothing to run: every default is fine, but an exchange without regions, sources
        # and exchanges does nothing, and an empty file is more likely the wrong file.
        raise ConfigError(
            "the file is empty (expected at least regions:, sources: and exchanges:; the "
            "bundled feeds.yaml is an example)",
            file=filename,
            line=1,
        )
    if not isinstance(data, dict):
        raise ConfigError(
            "the top level must be a mapping of keys (timezone:, sources: …)", file=filename, line=1
        )
    if env.get("NEWSEXCHANGE_DATABASE_URL"):
        data = {**data, "database_url": env["NEWSEXCHANGE_DATABASE_URL"]}
    errors: list[ConfigError] = []
    cfg: Config | None = None
    try:
        # Strict, as JSON: YAML has already typed every value, so nothing more is coerced
        # ("5" is not a number, yes/1 not a count, 2.0 not an integer, 1 not true), while
        # mappings still read as the nested models. Dates YAML parsed stay their text.
        cfg = Config.model_validate_json(json.dumps(data, default=str), strict=True)
    except ValidationError as exc:
        errors = validation_errors(exc, filename, lines)
    errors += cross_check(data, filename, lines)
    if errors or cfg is None:
        errors.sort(key=lambda e: e.line or 0)
        raise ConfigErrors(errors)
    cfg._path = path.resolve() if path else None
    cfg._env = env
    cfg._lines = lines
    return cfg
