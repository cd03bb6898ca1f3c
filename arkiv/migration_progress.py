"""How `arkiv migrate` looks to the operator: a progress bar while it runs (objects with their
bytes, rows per table), then the counts side by side and the verdict. The migration itself is in
`arkiv/migration.py`; this module only shows it and turns its outcome into the exit code.
"""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console
from rich.filesize import decimal
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table as RichTable

from arkiv.audit import Actor
from arkiv.config import Settings
from arkiv.migration import Migration, MigrationFailed, MigrationReport, Options, Status


class RichObserver:
    """A rich progress bar: objects with their bytes, rows per table."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress = Progress(
            TextColumn("{task.description:<30}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeRemainingColumn(),
            console=console,
        )
        self._task: TaskID | None = None
        self._unit = ""
        self._items = self._items_total = 0
        self._size = 0
        self._size_total: int | None = None
        self._started = False

    def __enter__(self) -> RichObserver:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._started:
            self._progress.stop()

    def _show(self) -> None:
        """The bar appears with the first step, so a run that stops at once prints only why."""
        if not self._started:
            self._progress.start()
            self._started = True

    def start(
        self,
        label: str,
        total: int,
        *,
        completed: int = 0,
        size: int | None = None,
        unit: str = "rows",
    ) -> None:
        self.finish()
        self._show()
        self._unit = unit
        self._items, self._items_total = completed, total
        self._size, self._size_total = 0, size
        bar_total = size if size is not None else total
        self._task = self._progress.add_task(
            label, total=max(bar_total, 1), completed=0 if size else completed, detail=""
        )
        self._refresh()

    def advance(self, items: int = 1, size: int = 0) -> None:
        self._items += items
        self._size += size
        self._refresh()

    def _refresh(self) -> None:
        if self._task is None:
            return
        detail = f"{self._items}/{self._items_total} {self._unit}"
        if self._size_total is not None:
            detail += f", {decimal(self._size)}/{decimal(self._size_total)}"
            completed = self._size if self._size_total else self._items
        else:
            completed = self._items
        self._progress.update(self._task, completed=completed, detail=detail)

    def finish(self) -> None:
        if self._task is not None:
            total = self._progress.tasks[-1].total or 1
            self._progress.update(self._task, completed=total)
            self._task = None

    def say(self, message: str) -> None:
        self._show()
        self._progress.console.print(message, highlight=False)


def render_report(console: Console, report: MigrationReport) -> None:
    """The counts side by side, then the verdict and what differs."""
    table = RichTable(title="source and target", title_justify="left")
    table.add_column("")
    table.add_column("source", justify="right")
    table.add_column("target", justify="right")
    table.add_column("")
    for check in report.tables:
        shown = f"{check.target}" + (f" (+{check.later} since)" if check.later else "")
        table.add_row(check.table, str(check.source), shown, _status_text(check.status))
    checked = "read back and hashed" if report.read_back else "sha256 recorded"
    objects_ok = not report.object_problems
    table.add_row(
        f"objects ({checked})",
        str(report.objects),
        str(report.objects_verified),
        _status_text(Status.MATCH if objects_ok else Status.DIFFERS),
    )
    head_ok = not report.audit_problems
    table.add_row(
        "audit head",
        f"{report.source_head[0]} {report.source_head[1][:12]}",
        f"{report.target_head[0]} {report.target_head[1][:12]}",
        _status_text(Status.MATCH if head_ok else Status.DIFFERS),
    )
    console.print(table)
    if not report.already_done:
        console.print(
            f"objects: {report.objects_copied} copied ({decimal(report.bytes_copied)}), "
            f"{report.objects_present} already in the target",
            highlight=False,
        )
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    differences = report.differences()
    if differences:
        console.print("[bold red]the target does NOT match the source:[/bold red]")
        for line in differences:
            console.print(f"  {line}", highlight=False, markup=False)
        console.print("Nothing was marked as migrated; find the cause and run migrate again.")
    elif report.already_done:
        console.print(
            f"already migrated: the target still matches the source ({report.target})",
            highlight=False,
        )
    else:
        console.print(
            f"[bold green]migration complete[/bold green]: the target matches the source; "
            f"recorded as audit event {report.completion_seq} in {report.target}",
            highlight=False,
        )


def _status_text(status: Status) -> str:
    if status is Status.MATCH:
        return "[green]match[/green]"
    if status is Status.LIVE:
        return "[dim]not compared (live)[/dim]"
    return "[bold red]DIFFERS[/bold red]"


def run_command(
    source: Settings,
    target: Settings,
    actor: Actor,
    options: Options,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """`arkiv migrate`: 0 when the target matches, 1 when a check failed, 130 when interrupted;
    MigrationError (cannot run) propagates for the command's exit code 2."""
    stdout = Console(file=out or sys.stdout, soft_wrap=True)
    stderr = Console(file=err or sys.stderr, soft_wrap=True)
    for console in (stdout, stderr):
        if not console.is_terminal:  # a log file or a pipe: no narrow 80-column default
            console.width = 120
    try:
        with RichObserver(stderr) as observer:
            report = Migration(source, target, actor, options, observer).run()
    except MigrationFailed as exc:
        stderr.print(f"arkiv: migration stopped: {exc}", highlight=False, markup=False)
        return 1
    except KeyboardInterrupt:
        stderr.print("arkiv: interrupted; run the same command again to continue")
        return 130
    render_report(stdout, report)
    return 0 if report.ok else 1
