"""The console's progress bar for ``newsexchange send``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

__all__ = ["Progress", "send_progress"]

Progress = Callable[[int, int], None]  # (done, total)


@contextlib.contextmanager
def send_progress(*, enabled: bool) -> Iterator[Progress | None]:
    """A rich progress bar on a terminal; nothing otherwise (cron, --json, pipes)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as RichProgress

    with RichProgress(
        TextColumn("sending"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("send", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
