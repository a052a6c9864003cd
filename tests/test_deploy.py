"""The deploy files say what the code does: every newsexchange command that the compose file
and the systemd units run is a real command with real options, workers and web migrate
first, and no secret is written into them."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from newsexchange.cli import build_parser

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _parses(argv: list[str]) -> None:
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's way of refusing
        pytest.fail(f"not a valid command line: newsexchange {' '.join(argv)} ({exc})")


def test_compose_runs_migrate_then_two_workers_and_the_web_app() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == {"db", "migrate", "worker", "web"}
    for name in ("migrate", "worker", "web"):
        _parses(services[name]["command"])
    assert services["migrate"]["command"][0] == "migrate"
    assert services["worker"]["command"][0] == "worker"
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["web"]["command"][0] == "serve"
    for name in ("worker", "web"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
    url = services["worker"]["environment"]["NEWSEXCHANGE_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://") and "${POSTGRES_PASSWORD" in url


@pytest.mark.parametrize(
    ("unit", "command"),
    [("newsexchange-worker.service", "worker"), ("newsexchange-web.service", "serve")],
)
def test_systemd_units_migrate_before_they_start(unit: str, command: str) -> None:
    text = (DEPLOY / unit).read_text(encoding="utf-8")
    lines = dict(re.findall(r"^(ExecStartPre|ExecStart)=(.+)$", text, flags=re.MULTILINE))
    pre, start = shlex.split(lines["ExecStartPre"]), shlex.split(lines["ExecStart"])
    assert Path(pre[0]).name == Path(start[0]).name == "newsexchange"
    assert pre[1] == "migrate" and start[1] == command
    _parses(pre[1:])
    _parses(start[1:])
    assert "EnvironmentFile=/etc/newsexchange/env" in text  # secrets from there, not here
    assert not re.search(r"(PASSWORD|SECRET|API_KEY)\w*=\S", text)
