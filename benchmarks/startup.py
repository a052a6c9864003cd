"""Start-up: how long a console command takes before it does any work (issue 16).

    .venv/bin/python benchmarks/startup.py [--runs 11] [--exe PATH …] [--no-bytecode-cache]

Runs each command ``--runs`` times as a fresh process from the repository's folder, on the
bundled ``./feeds.yaml``: ``--help``, ``check``, ``check --json``, and two that open a
database already at the newest migration (a temporary SQLite file, through
``NEWSEXCHANGE_DATABASE_URL``): ``check --sources --json`` and ``items --json``. Beside
them, the floor: the same interpreter starting and doing nothing (``python -c pass``, with
the venv's site-packages and the editable install's finder).

The children keep compiled bytecode (in a temporary ``PYTHONPYCACHEPREFIX``), as an installed
package does (pip compiles on install), even where ``PYTHONDONTWRITEBYTECODE`` is set, as on
the project's shared machine: there every run compiles the project's own modules from
source again. ``--no-bytecode-cache`` measures that instead.

Prints, per command, the median wall-clock seconds, the median CPU seconds (user + system
of the child, from ``resource.getrusage``, which a loaded machine disturbs less), the ratio
of that CPU to the floor's, and the target where issue 16 set one, held against both (on
the shared 2-CPU machine the wall clock mostly measures the other processes). JSON with
every figure on the last line. ``--exe`` (repeatable) measures other installs' ``newsexchange`` in the same
run, their runs interleaved, for a before/after: e.g. ``--exe /work/main/.venv/bin/newsexchange
--exe .venv/bin/newsexchange``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EXE = Path(sys.executable).with_name("newsexchange")

#: Issue 16's targets, in seconds (wall clock on the bundled config).
TARGETS: dict[str, float] = {"--help": 0.25, "check": 0.5, "check --json": 0.5}


def _once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one run (the CPU of the child alone)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {res.returncode}:\n{res.stderr}{res.stdout}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _commands(exe: str) -> dict[str, list[str]]:
    return {
        "python -c pass (floor)": [str(Path(exe).with_name("python")), "-c", "pass"],
        "--help": [exe, "--help"],
        "check": [exe, "check"],
        "check --json": [exe, "check", "--json"],
        "check --sources --json": [exe, "check", "--sources", "--json"],
        "items --json": [exe, "items", "--json"],
    }


def _table(exe: str, runs: int, samples: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
    figures: dict[str, dict[str, float | None]] = {}
    floor_cpu = statistics.median(cpu for _, cpu in samples["python -c pass (floor)"])
    print(f"{exe}, {runs} runs each")
    print(f"{'command':<26} {'wall s':>7} {'cpu s':>7} {'cpu/floor':>9}  target")
    for name, got in samples.items():
        wall = statistics.median(w for w, _ in got)
        cpu = statistics.median(c for _, c in got)
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            verdict = f"≤ {target:.2f} s: wall {'met' if wall <= target else 'NOT met'}, "
            verdict += f"cpu {'met' if cpu <= target else 'NOT met'}"
        ratio = cpu / floor_cpu if floor_cpu else float("nan")
        print(f"{name:<26} {wall:>7.3f} {cpu:>7.3f} {ratio:>9.1f}  {verdict}")
        figures[name] = {"wall_s": round(wall, 4), "cpu_s": round(cpu, 4), "target_s": target}
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=11, help="runs of each command (median kept)")
    ap.add_argument(
        "--exe",
        type=Path,
        action="append",
        help="a newsexchange to time (repeatable; runs interleave; default: this venv's)",
    )
    ap.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="compile every module from source on every run (PYTHONDONTWRITEBYTECODE)",
    )
    args = ap.parse_args()
    exes = [str(e) for e in (args.exe or [DEFAULT_EXE])]

    with tempfile.TemporaryDirectory() as tmp:
        base = {**os.environ, "NEWSEXCHANGE_SECRET_KEY": "benchmark"}
        if args.no_bytecode_cache:
            base["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            base.pop("PYTHONDONTWRITEBYTECODE", None)
            base["PYTHONPYCACHEPREFIX"] = f"{tmp}/pycache"
        envs: dict[str, dict[str, str]] = {}
        for i, exe in enumerate(exes):
            envs[exe] = {**base, "NEWSEXCHANGE_DATABASE_URL": f"sqlite:///{tmp}/startup{i}.db"}
            _once([exe, "migrate"], envs[exe])  # created and at the newest migration
            for argv in _commands(exe).values():  # warm the file cache and the .pyc files
                _once(argv, envs[exe])
        samples: dict[str, dict[str, list[tuple[float, float]]]] = {
            exe: {name: [] for name in _commands(exe)} for exe in exes
        }
        for _ in range(args.runs):  # interleaved, so a burst of load hits every command
            for exe in exes:
                for name, argv in _commands(exe).items():
                    samples[exe][name].append(_once(argv, envs[exe]))

    load = os.getloadavg()
    cache = "compiled from source on every run" if args.no_bytecode_cache else "cached"
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; bytecode {cache}")
    out = {exe: _table(exe, args.runs, samples[exe]) for exe in exes}
    print(json.dumps({"runs": args.runs, "load": load, "bytecode": cache, "figures": out}))


if __name__ == "__main__":
    main()
