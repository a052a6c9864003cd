#!/usr/bin/env python3
"""``python scheduler.py [--config PATH] [--host H] [--port P]`` = ``newsexchange serve``.

A thin entry point for hosts that start a script rather than a console command (the
scheduler and the web app run in one process; see docs/operations.md).
"""

from __future__ import annotations

import sys

from newsexchange.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["serve", *sys.argv[1:]]))
