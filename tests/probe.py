"""What a real ``newsexchange`` process imports: :func:`run_cli` runs the command line in a
fresh interpreter and returns its exit code, its output and the modules it loaded (each
module's full name and its top-level package's), for tests that keep start-up and a fetch
free of what they do not need (tests/test_startup.py, tests/test_lazy_ingest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_PROBE = """
import contextlib, io, json, sys
from newsexchange.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "out": out.getvalue(), "loaded": sorted(sys.modules)}))
"""


def run_cli(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, set[str]]:
    """(exit code, standard output, loaded modules) of ``newsexchange ARGV…`` run in the
    repository with ``env`` on top of this process's environment."""
    res = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        cwd=ROOT,
        env={**os.environ, "NEWSEXCHANGE_SECRET_KEY": "s3cret", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    data = json.loads(res.stdout.splitlines()[-1])
    loaded = set(data["loaded"])
    return data["code"], data["out"], loaded | {m.split(".")[0] for m in loaded}
