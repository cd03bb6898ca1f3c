"""What a pull from a running PACS has done so far, kept in a small JSON file beside the operator.

Why a state file at all: a county's PACS holds years of studies, the pull takes hours to days
while the clinics keep using that PACS, and it will be interrupted (Ctrl-C, a reboot, the
archive unavailable). Starting again from nothing would ask the PACS to send everything again.

What it holds (`--state FILE`, default `arkiv-import-<AE>-<host>-<port>.state.json` in the
current directory):

- every study retrieved completely, with the PACS's NumberOfStudyRelatedInstances at the time
  (and how many objects actually arrived);
- for the run in progress, the date windows whose studies have all been dealt with.

Resuming and repeating:

- *Interrupted run* (the file still has a run in progress): the next run with the same file
  skips the windows that run finished and the studies it completed, and continues.
- *Later run* (the previous run finished): every window is asked again, because studies arrive
  at the old PACS while the clinics keep working, and only studies that are new or whose
  instance count grew are retrieved. A study whose retrieve failed in part is never recorded
  as complete, so it is retried.
- Why this is safe when the guess is wrong (a study changed without its count growing, a state
  file lost): the ingest path skips an object already stored with the same bytes, so a study
  retrieved again costs time, never a duplicate. Deleting the file is always allowed.

The file is written atomically after every study and every window (`arkiv.atomic_file`: a
temporary file, fsync, rename, fsync of the directory), so a kill at any moment leaves either
the state before or the state after, never half a file. A file that cannot be read is an error
that names it, never silently replaced: the operator decides whether to delete it.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from arkiv.atomic_file import write_atomically
from arkiv.errors import ArkivError

VERSION = 1


class PullStateError(ArkivError):
    """The state file cannot be used; the message names it and what to do."""


def default_state_path(ae_title: str, host: str, port: int) -> Path:
    """`arkiv-import-<AE>-<host>-<port>.state.json` in the current directory, with characters
    that are awkward in a file name replaced."""
    raw = f"arkiv-import-{ae_title}-{host}-{port}"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in raw)
    return Path(f"{safe}.state.json")


@dataclass(frozen=True)
class CompletedStudy:
    instances: int | None
    """NumberOfStudyRelatedInstances as the PACS answered when the study was retrieved."""
    received: int
    completed_at: str


class PullState:
    """The state of pulls from one PACS; safe to use from the retrieving threads at once."""

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.source = source
        self._lock = threading.Lock()
        self._studies: dict[str, CompletedStudy] = {}
        self._run: dict[str, Any] | None = None
        self._last_run: dict[str, Any] | None = None
        self.resumed = False
        """True when `begin_run` continued an interrupted run."""
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text("utf-8"))
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {VERSION}")
            studies = {
                uid: CompletedStudy(
                    instances=None if s.get("instances") is None else int(s["instances"]),
                    received=int(s.get("received", 0)),
                    completed_at=str(s.get("completed_at", "")),
                )
                for uid, s in dict(data.get("studies", {})).items()
            }
            run = data.get("run")
            last_run = data.get("last_run")
            source = str(data.get("source", ""))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise PullStateError(
                f"the import state file {self.path} cannot be read ({exc}); move it away to "
                "start over (objects already imported are skipped, not duplicated)"
            ) from exc
        if source != self.source:
            raise PullStateError(
                f"the import state file {self.path} is for {source}, not {self.source}: "
                "give each PACS its own --state file"
            )
        self._studies = studies
        self._run = run if isinstance(run, dict) else None
        self._last_run = last_run if isinstance(last_run, dict) else None

    # -- the run ---------------------------------------------------------------------------

    def has_run_in_progress(self) -> bool:
        """An earlier run was interrupted: the next `begin_run` continues it."""
        with self._lock:
            return self._run is not None

    def begin_run(self, plan: str) -> None:
        """Continue the interrupted run if there is one, else start a new one (all windows
        asked again). `plan` describes the windows (since, until, size): an interrupted run
        with another plan still resumes, but only windows with the same dates count as done."""
        with self._lock:
            if self._run is not None:
                self.resumed = True
                self._run["resumed_at"] = _now()
                self._run["plan"] = plan
            else:
                self.resumed = False
                self._run = {"started_at": _now(), "plan": plan, "windows_done": []}
            self._save()

    def finish_run(self) -> None:
        with self._lock:
            if self._run is None:
                return
            self._last_run = {
                "started_at": self._run.get("started_at", ""),
                "finished_at": _now(),
                "plan": self._run.get("plan", ""),
            }
            self._run = None
            self._save()

    def window_done(self, key: str) -> bool:
        with self._lock:
            return self._run is not None and key in self._run.get("windows_done", [])

    def finish_window(self, key: str) -> None:
        with self._lock:
            if self._run is None:
                return
            done = self._run.setdefault("windows_done", [])
            if key not in done:
                done.append(key)
            self._save()

    # -- studies ----------------------------------------------------------------------------

    def needs(self, study_uid: str, instances: int | None) -> bool:
        """Retrieve this study? Yes if never completed, or the PACS now counts more instances
        than when it was (a count the PACS does not give cannot show growth)."""
        with self._lock:
            done = self._studies.get(study_uid)
        if done is None:
            return True
        if instances is None or done.instances is None:
            return False
        return instances > done.instances

    def complete_study(self, study_uid: str, instances: int | None, received: int) -> None:
        with self._lock:
            self._studies[study_uid] = CompletedStudy(instances, received, _now())
            self._save()

    def completed(self) -> dict[str, CompletedStudy]:
        with self._lock:
            return dict(self._studies)

    def _save(self) -> None:
        data = {
            "version": VERSION,
            "source": self.source,
            "run": self._run,
            "last_run": self._last_run,
            "studies": {
                uid: {
                    "instances": s.instances,
                    "received": s.received,
                    "completed_at": s.completed_at,
                }
                for uid, s in sorted(self._studies.items())
            },
        }
        try:
            write_atomically(self.path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        except OSError as exc:
            raise PullStateError(
                f"the import state file {self.path} cannot be written ({exc}); the run stops so "
                "that a resume does not repeat what is not recorded"
            ) from exc


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
