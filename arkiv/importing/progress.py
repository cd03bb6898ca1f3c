"""The import's progress on the operator's terminal: objects and bytes, their rates, time left.

Drawn on stderr, so that the readable report on stdout can be piped or saved without the bars.
Updated from the ingest workers' threads (rich's progress takes its own lock), and told of
every file, whether it was imported, skipped as not DICOM or refused, so the bars reach their
end exactly when the walk does.
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class AmountColumn(ProgressColumn):
    """ "1,204/5,000 objects 38.2/s", "612.0/2,048.3 MB 19.4 MB/s", "12/40 studies 0.5/s" or
    "3/?? date windows", by the task's `unit` field."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed or 0.0
        unit = str(task.fields.get("unit", "objects"))
        if unit == "MB":
            whole = "?" if task.total is None else f"{task.total / 1e6:,.1f}"
            line = f"{task.completed / 1e6:,.1f}/{whole} MB {speed / 1e6:,.1f} MB/s"
            return Text(line, style="progress.download")
        whole = "?" if task.total is None else f"{int(task.total):,}"
        if unit == "windows":
            return Text(f"{int(task.completed):,}/{whole} date windows")
        line = f"{int(task.completed):,}/{whole} {unit} {speed:,.1f}/s"
        return Text(line, style="progress.data.speed")


def progress_bars(console: Console, speed_period: float) -> Progress:
    """The import's bars: a name, the bar, the amount with its rate, the time left."""
    return Progress(
        TextColumn("{task.description:<8}"),
        BarColumn(),
        AmountColumn(),
        TimeRemainingColumn(),
        console=console,
        speed_estimate_period=speed_period,
    )


class ImportProgress:
    """Two bars: files (objects) and bytes. Totals come from the pre-pass; for a PACS, where
    nothing is known in advance, they may grow as the run learns more."""

    def __init__(self, console: Console, files: int | None, size: int | None) -> None:
        self._progress = progress_bars(console, 60.0)
        self._objects = self._progress.add_task("objects", total=files, unit="objects")
        self._bytes = self._progress.add_task("bytes", total=size, unit="MB")
        self._moved: list[logging.StreamHandler[Any]] = []

    def __enter__(self) -> ImportProgress:
        self._progress.start()
        # Log lines (a conflict kept for review) above the bars, not through them.
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.__stderr__:
                handler.setStream(sys.stderr)
                self._moved.append(handler)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()
        for handler in self._moved:
            handler.setStream(sys.__stderr__)

    def advance(self, size: int, objects: int = 1) -> None:
        self._progress.advance(self._objects, objects)
        self._progress.advance(self._bytes, size)

    def grow(self, files: int, size: int) -> None:
        """More lies ahead than the pre-pass knew (a PACS study list, a DICOMDIR's extras)."""
        for task, amount in ((self._objects, files), (self._bytes, size)):
            total = self._progress.tasks[task].total
            self._progress.update(task, total=(total or 0) + amount)
