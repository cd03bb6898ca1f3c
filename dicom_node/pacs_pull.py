"""Pulling a whole archive out of a running PACS: C-FIND over date windows, then C-GET or C-MOVE
study by study, each object through `ImportRun.ingest` as it arrives.

Why this shape:

- *Date windows.* One C-FIND for a county's whole archive would be refused or cut by the PACS
  (Orthanc's `LimitFindResults`, other PACS' 0xA700) and would load it for minutes. Studies are
  asked for at STUDY level (Study Root) window by window from `since` to `until`; a window whose
  answer is refused for size (0xA700) or reaches `max_per_query` answers is cancelled, split in
  halves and asked again, down to single days. A single day is asked for without a limit
  (studies of one day cannot be paged by date); if its answer still reaches the limit it is
  named in the warnings, and if the PACS refuses it for size the day is left for the next run.
- *Studies without StudyDate.* Range matching never matches them (Orthanc 1.12: a study without
  StudyDate is absent from every `StudyDate=A-B` answer, also from open ranges), and DICOM has
  no key meaning "no date". So they are asked for once per run with universal matching on
  StudyDate, asking only StudyInstanceUID and StudyDate (cheap for the PACS; answers with a date
  are dropped, the windows cover them), then the undated ones are asked for by their UIDs with
  the full keys. This one query cannot be paged: a PACS that cuts it loses undated studies from
  the view of this run only, and the warnings say when the answer reached `max_per_query`.
- *C-GET by default*: nothing needs configuring on the source PACS beyond knowing the calling
  AE. The objects come back on the same association, on storage contexts proposed with the SCP
  role. A request has at most 128 presentation contexts, fewer than the storage SOP classes
  pynetdicom knows, so the classes are those the PACS names in SOPClassesInStudy (each with one
  context per transfer syntax, so the PACS can send every object in its stored syntax), else
  pynetdicom's 120 common storage classes with every transfer syntax in one context each.
- *C-MOVE* (`retrieve="move"`): a temporary Storage SCP on `listen_port` under `listen_ae`,
  accepting associations only from the source PACS's AE title, with every storage class in
  every syntax (`dicom_node.contexts`); the PACS must know `listen_ae` with this host and port.
- *Each object as it arrives* goes to `ImportRun.ingest` from the association's thread. The
  ingest path is thread-safe, the run's counters are not, so calls are serialised by one lock;
  an ingest that is slow therefore slows the PACS's sending (back-pressure), never piles up
  memory. The bytes handed on are the C-STORE dataset exactly as received with the same file
  meta group the archive's own C-STORE SCP writes, so an object pulled twice, by C-GET or by
  C-MOVE, is byte-identical and the ingest path counts it a duplicate.
- *Load on the PACS*: at most `concurrency` studies retrieved at once (one association each) and
  at most `rate` study retrieves started per minute.
- *Failures*: a study whose retrieve ends with anything but success (some sub-operations failed,
  the PACS refused) is reported in the run's refusals with the status and the counts and is not
  recorded as complete, so the next run retries it. An object the ingest path refuses is
  answered with a failure status, so the study is retried too (and refused again, visibly). An
  object held for review because it differs from the stored one is answered with success: it is
  kept, and retrying would not change it. When the first retrieves of a run (three) fail with
  nothing sent at all, the pull stops with the likely cause named (the PACS does not know the
  move destination — Orthanc then answers 0xC000 without a comment, not 0xA801 — or does not
  let the calling AE retrieve): every other study would fail the same way. `ArchiveUnavailable`,
  Ctrl-C or any error while ingesting stops the whole pull: open associations are aborted,
  completed studies are already in the state file (`arkiv.importing.pacs_state`), and the
  error propagates.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom import AE, StoragePresentationContexts, build_context, build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import Event as DimseEvent
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from arkiv.errors import ArkivError
from arkiv.importing.pacs_state import PullState
from arkiv.importing.run import Disposition, ImportRun, SourceObject
from dicom_node import transport
from dicom_node.contexts import (
    NATIVE_TRANSFER_SYNTAXES,
    accepted_transfer_syntaxes,
    storage_contexts,
)
from dicom_node.handlers import handle_connection_open

log = logging.getLogger(__name__)

PENDING = (0xFF00, 0xFF01)
SUCCESS = 0x0000
CANCELLED = 0xFE00
WARNING = 0xB000
OUT_OF_RESOURCES = 0xA700
"""C-FIND: Refused: Out of resources — what a PACS answers to a query with too many matches."""
MOVE_DESTINATION_UNKNOWN = 0xA801
STORE_OUT_OF_RESOURCES = 0xA700
STORE_CANNOT_UNDERSTAND = 0xC000
MAX_CONTEXTS = 128
MAX_PDU = 256 * 1024
"""As the archive's own node: fewer, larger PDUs for images of megabytes."""
EMPTY_FAILURES_TO_STOP = 3
"""Failed retrieves, with nothing sent and nothing received yet in the run, that stop it."""
UID_BATCH = 100
"""StudyInstanceUIDs per list-matching C-FIND when asking for the undated studies."""
EARLIEST = date(1990, 1, 1)

STATUS_MEANING = {
    0x0000: "success",
    0xB000: "some sub-operations failed",
    0xFE00: "cancelled",
    0xA701: "out of resources: unable to calculate number of matches",
    0xA702: "out of resources: unable to perform sub-operations",
    0xA801: "move destination unknown",
    0xA900: "identifier does not match SOP class",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0xC000: "unable to process",
}


class PacsError(ArkivError):
    """The source PACS cannot be used as asked; the message says what to check."""


class PacsUnreachable(PacsError):
    """No association: nothing listens there, or the PACS rejected or dropped us."""


class QueryRefused(PacsError):
    """The PACS answered a C-FIND with a failure that splitting cannot help."""


# -- what the operator gives ------------------------------------------------------------------

_ADDRESS = re.compile(
    r"^(?P<ae>[^@]{1,16})@(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@\s]+):(?P<port>\d{1,5})$"
)


@dataclass(frozen=True)
class PacsAddress:
    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> PacsAddress:
        """`AE@host:port`; PacsError naming the expected form otherwise."""
        match = _ADDRESS.match(text.strip())
        if match is None:
            raise PacsError(
                f"--from-pacs {text!r} is not AE@host:port (for example OLDPACS@10.20.0.5:104): "
                "the AE title (at most 16 characters), the host and the DICOM port of the PACS"
            )
        ae = match["ae"].strip()
        port = int(match["port"])
        if not ae or "\\" in ae or not ae.isprintable():
            raise PacsError(f"--from-pacs: {ae!r} is not a usable AE title")
        if not 0 < port < 65536:
            raise PacsError(f"--from-pacs: port {port} is not a TCP port (1-65535)")
        return cls(ae, match["host"].strip("[]"), port)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    def origin(self, study_uid: str) -> str:
        return f"pacs:{self}/study/{study_uid}"


@dataclass(frozen=True)
class PullOptions:
    calling_ae: str = "ARKIVIMPORT"
    retrieve: str = "get"
    listen_ae: str = "ARKIVIMPORT"
    listen_port: int | None = None
    listen_host: str = ""
    """Where the C-MOVE Storage SCP binds: all interfaces by default (the PACS is elsewhere)."""
    since: date = EARLIEST
    until: date | None = None
    """Inclusive; today when None."""
    window_days: int = 30
    max_per_query: int = 1000
    concurrency: int = 1
    rate: float | None = None
    """Study retrieves started per minute at most; None for no limit."""
    timeout: float = 120.0
    """Seconds without a message from the PACS before an association is given up."""

    def check(self) -> None:
        if self.retrieve not in ("get", "move"):
            raise PacsError(f"--retrieve {self.retrieve!r}: use get or move")
        if self.retrieve == "move" and not self.listen_port:
            raise PacsError(
                "--retrieve move needs --listen-port N: the port of the temporary Storage SCP "
                "the PACS sends to (and the PACS must know --listen-ae with this host and port)"
            )
        if self.listen_port is not None and not 0 < self.listen_port < 65536:
            raise PacsError(f"--listen-port {self.listen_port} is not a TCP port")
        for name, title in (("--calling-ae", self.calling_ae), ("--listen-ae", self.listen_ae)):
            if not 0 < len(title.strip()) <= 16:
                raise PacsError(f"{name} {title!r}: an AE title has 1 to 16 characters")
        if self.window_days < 1:
            raise PacsError("--window-days must be at least 1")
        if self.max_per_query < 1:
            raise PacsError("--max-per-query must be at least 1")
        if self.concurrency < 1:
            raise PacsError("--concurrency must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise PacsError("--rate must be a positive number of studies per minute")
        if self.last_day() < self.since:
            raise PacsError(f"--since {self.since} is after --until {self.last_day()}")

    def last_day(self) -> date:
        return self.until or date.today()


# -- what the PACS answers --------------------------------------------------------------------


@dataclass(frozen=True)
class FoundStudy:
    study_uid: str
    study_date: str
    patient_id: str
    instances: int | None
    modalities: tuple[str, ...] = ()
    sop_classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Window:
    """Study dates `first` to `last` inclusive; both None for the undated studies."""

    first: date | None
    last: date | None

    @property
    def key(self) -> str:
        if self.first is None or self.last is None:
            return "undated"
        return f"{self.first:%Y%m%d}-{self.last:%Y%m%d}"

    @property
    def days(self) -> int:
        if self.first is None or self.last is None:
            return 0
        return (self.last - self.first).days + 1

    def halves(self) -> tuple[Window, Window]:
        assert self.first is not None and self.last is not None
        middle = self.first + timedelta(days=self.days // 2 - 1)
        return Window(self.first, middle), Window(middle + timedelta(days=1), self.last)


def plan_windows(since: date, until: date, days: int) -> list[Window]:
    windows = []
    start = since
    while start <= until:
        end = min(until, start + timedelta(days=days - 1))
        windows.append(Window(start, end))
        start = end + timedelta(days=1)
    return windows


@dataclass
class PullResult:
    """What the pull did, beyond the objects the run counts."""

    source: str
    resumed: bool = False
    queries: int = 0
    windows_split: int = 0
    studies_found: int = 0
    studies_skipped: int = 0
    """Found, but complete in the state file with no more instances: not retrieved."""
    studies_retrieved: int = 0
    studies_failed: int = 0
    objects_received: int = 0
    bytes_received: int = 0
    retrieve_requests: list[str] = field(default_factory=list)
    """Study Instance UIDs in the order C-GET/C-MOVE requests were sent."""
    warnings: list[str] = field(default_factory=list)


class PullListener:
    """Told of progress: windows and studies from the main thread, objects from the receiving
    threads. The methods do nothing here; a progress display overrides what it shows."""

    def windows_planned(self, count: int) -> None:
        """`count` windows of dates (and one query for undated studies) lie ahead."""

    def window_finished(self) -> None:
        """One of the planned windows (with its halves, if it was split) is done."""

    def studies_found(self, found: list[FoundStudy], wanted: list[FoundStudy]) -> None:
        """A window answered `found`; `wanted` are those to retrieve."""

    def study_finished(self, study: FoundStudy, ok: bool) -> None:
        """A retrieve ended: complete (`ok`) or reported and left for the next run."""

    def object_received(self, disposition: Disposition, size: int) -> None:
        """An object arrived and went through the ingest path."""


# -- the puller --------------------------------------------------------------------------------


class _Stop(Exception):
    """Internal: another thread failed; this one stops too."""


@dataclass
class _Retrieval:
    """One study being retrieved: what arrived for it and how the PACS ended it."""

    study: FoundStudy
    received: int = 0
    refused: int = 0
    final_status: int | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0
    error_comment: str = ""


def pull(
    address: PacsAddress,
    options: PullOptions,
    run: ImportRun,
    state: PullState,
    listener: PullListener | None = None,
) -> PullResult:
    """Import every study of the PACS at `address` that the state does not show complete.

    Raises PacsError (unreachable, rejected, query refused), ArchiveUnavailable, KeyboardInterrupt
    or whatever else stopped the ingest; what was completed before is kept in `state`."""
    options.check()
    return _Puller(address, options, run, state, listener).pull()


class _Puller:
    def __init__(
        self,
        address: PacsAddress,
        options: PullOptions,
        run: ImportRun,
        state: PullState,
        listener: PullListener | None,
    ) -> None:
        self.address = address
        self.options = options
        self.run = run
        self.state = state
        self.listener = listener or PullListener()
        self.result = PullResult(source=str(address))
        transport.install()
        self._ae = AE(ae_title=options.calling_ae)
        self._ae.maximum_pdu_size = MAX_PDU
        self._ae.acse_timeout = 30
        self._ae.connection_timeout = 15
        self._ae.dimse_timeout = options.timeout
        self._ae.network_timeout = options.timeout
        self._ingest_lock = threading.Lock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._open: set[Association] = set()
        self._moving: dict[str, _Retrieval] = {}
        self._next_start = 0.0
        self._empty_failures = 0
        self._find_assoc: Association | None = None
        self._find_id = 0
        self._server: Any = None

    # -- the whole run ------------------------------------------------------------------------

    def pull(self) -> PullResult:
        options = self.options
        plan = f"{options.since:%Y%m%d}-{options.last_day():%Y%m%d}/{options.window_days}d"
        self.state.begin_run(plan)
        self.result.resumed = self.state.resumed
        self.run.report.sources.append(f"pacs:{self.address}")
        pool = ThreadPoolExecutor(options.concurrency, thread_name_prefix="pacs-retrieve")
        try:
            if options.retrieve == "move":
                self._start_storage_scp()
            windows = plan_windows(options.since, options.last_day(), options.window_days)
            windows.append(Window(None, None))
            self.listener.windows_planned(len(windows))
            for window in windows:
                self._window(window, pool)
                self.listener.window_finished()
            self.state.finish_run()
            return self.result
        except BaseException as exc:
            self._fail(exc)
            raise self._failure or exc from None
        finally:
            with contextlib.suppress(Exception):
                self._end_find_association()
            self._stop.set()
            self._abort_open()
            pool.shutdown(wait=True, cancel_futures=True)
            if self._server is not None:
                self._server.shutdown()

    def _window(self, window: Window, pool: ThreadPoolExecutor) -> None:
        if self.state.window_done(window.key):
            return
        if window.first is None:
            studies = self._undated()
        else:
            answered = self._find_window(window)
            if answered is None:
                if window.days > 1:
                    self.result.windows_split += 1
                    for half in window.halves():
                        self._window(half, pool)
                    self.state.finish_window(window.key)
                    return
                self.result.warnings.append(
                    f"{window.first}: the PACS refused the query for this single day for its "
                    "size (0xA700); this day is asked again on the next run"
                )
                return
            studies = answered
        self._retrieve_all(studies, pool)
        self.state.finish_window(window.key)

    def _retrieve_all(self, studies: list[FoundStudy], pool: ThreadPoolExecutor) -> None:
        wanted = [s for s in studies if self.state.needs(s.study_uid, s.instances)]
        self.result.studies_found += len(studies)
        self.result.studies_skipped += len(studies) - len(wanted)
        self.listener.studies_found(studies, wanted)
        if wanted:
            # Retrieving may take long; a PACS closes an idle query association meanwhile.
            self._end_find_association()
        slots = threading.BoundedSemaphore(self.options.concurrency)
        futures: list[Future[None]] = []
        for study in wanted:
            while not slots.acquire(timeout=0.2):
                self._check()
            self._check()
            self._pace()
            future = pool.submit(self._retrieve_guarded, study)
            future.add_done_callback(lambda _f: slots.release())
            futures.append(future)
        for future in futures:
            while not future.done():
                self._check()
                time.sleep(0.05)
        self._check()

    def _pace(self) -> None:
        """At most `rate` retrieves started per minute: starts spaced 60/rate seconds apart."""
        if self.options.rate is None:
            return
        now = time.monotonic()
        wait = self._next_start - now
        while wait > 0:
            self._check()
            time.sleep(min(wait, 0.2))
            wait = self._next_start - time.monotonic()
        self._next_start = max(now, self._next_start) + 60.0 / self.options.rate

    def _check(self) -> None:
        """Raise in the main thread what stopped another one."""
        if self._failure is not None:
            raise self._failure

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._failure is None and not isinstance(exc, _Stop):
                self._failure = exc
        self._stop.set()
        self._abort_open()

    def _abort_open(self) -> None:
        with self._lock:
            open_now = list(self._open)
        if self._server is not None:
            open_now += list(self._server.active_associations)
        for assoc in open_now:
            try:
                assoc.abort()
                # pynetdicom's C-GET/C-MOVE/C-FIND loop waits for the next message up to the
                # DIMSE timeout even after an abort; an empty item wakes it at once.
                assoc.dimse.msg_queue.put((None, None))
            except Exception:  # already gone
                log.debug("abort of an association failed", exc_info=True)

    # -- associations -------------------------------------------------------------------------

    def _associate(
        self,
        contexts: list[PresentationContext],
        ext_neg: list[Any] | None = None,
        handlers: list[Any] | None = None,
    ) -> Association:
        if self._stop.is_set():
            raise _Stop()
        assoc = self._ae.associate(
            self.address.host,
            self.address.port,
            contexts=contexts,
            ae_title=self.address.ae_title,
            ext_neg=ext_neg,
            evt_handlers=[(evt.EVT_CONN_OPEN, handle_connection_open), *(handlers or [])],
        )
        if assoc.is_established:
            with self._lock:
                self._open.add(assoc)
            return assoc
        if assoc.is_rejected:
            answer = assoc.acceptor.primitive
            detail = ""
            if answer is not None:
                detail = (
                    f" (result {answer.result}, source {answer.result_source}, "
                    f"reason {answer.diagnostic})"
                )
            raise PacsUnreachable(
                f"the PACS {self.address} rejected the association{detail}: check that it "
                f"knows the calling AE title {self.options.calling_ae!r} from this host and "
                f"that its own AE title is {self.address.ae_title!r}"
            )
        raise PacsUnreachable(
            f"no DICOM association with {self.address}: nothing answers on "
            f"{self.address.host}:{self.address.port}, or the PACS dropped the association "
            f"(is it the PACS's DICOM port, and does it accept calling AE title "
            f"{self.options.calling_ae!r}?)"
        )

    def _release(self, assoc: Association) -> None:
        with self._lock:
            self._open.discard(assoc)
        if assoc.is_established:
            assoc.release()

    # -- C-FIND -------------------------------------------------------------------------------

    def _find(self, identifier: Dataset, limit: int | None) -> list[Dataset] | None:
        """The answers, or None when the PACS refused for size or the answers reached `limit`
        (the query is then cancelled)."""
        self.result.queries += 1
        try:
            return self._find_once(identifier, limit)
        except PacsUnreachable:
            if self._stop.is_set():
                raise
            # A PACS may drop a query association it found idle, or at random under load:
            # one more try on a new association before the run stops.
            log.warning("C-FIND association to %s lost; trying once more", self.address)
            return self._find_once(identifier, limit)

    def _find_once(self, identifier: Dataset, limit: int | None) -> list[Dataset] | None:
        assoc = self._find_association()
        self._find_id = self._find_id % 0xFFFF + 1
        msg_id = self._find_id
        answers: list[Dataset] = []
        refused_for_size = False
        cancelled = False
        try:
            responses = assoc.send_c_find(
                identifier, StudyRootQueryRetrieveInformationModelFind, msg_id=msg_id
            )
            for status, found in responses:
                code = _status_code(status)
                if code is None:
                    raise self._lost("C-FIND")
                if code in PENDING:
                    if found is not None and not cancelled:
                        answers.append(found)
                    if limit is not None and len(answers) >= limit and not cancelled:
                        cancelled = True
                        assoc.send_c_cancel(
                            msg_id, query_model=StudyRootQueryRetrieveInformationModelFind
                        )
                    continue
                if code in (SUCCESS, CANCELLED):
                    break
                if code == OUT_OF_RESOURCES:
                    refused_for_size = True
                    break
                raise QueryRefused(
                    f"the PACS {self.address} refused the C-FIND with status 0x{code:04X} "
                    f"({STATUS_MEANING.get(code, 'failure')}"
                    f"{': ' + _comment(status) if _comment(status) else ''})"
                )
        except BaseException:
            self._end_find_association()
            raise
        if cancelled:
            # A PACS may answer the C-CANCEL after its final response (Orthanc does), which
            # would be taken for an answer to the next query on this association.
            self._end_find_association()
        if refused_for_size or (limit is not None and len(answers) >= limit):
            return None
        return answers

    def _find_association(self) -> Association:
        """One association for all the run's queries (kept open between windows)."""
        if self._find_assoc is not None and self._find_assoc.is_established:
            return self._find_assoc
        context = build_context(
            StudyRootQueryRetrieveInformationModelFind, list(NATIVE_TRANSFER_SYNTAXES[:2])
        )
        self._find_assoc = self._associate([context])
        return self._find_assoc

    def _end_find_association(self) -> None:
        assoc, self._find_assoc = self._find_assoc, None
        if assoc is not None:
            self._release(assoc)

    def _lost(self, what: str) -> PacsUnreachable:
        return PacsUnreachable(
            f"the PACS {self.address} ended the association during {what} without an answer: "
            f"does it accept calling AE title {self.options.calling_ae!r} for queries and "
            "retrieves from this host? (its log says why)"
        )

    def _find_window(self, window: Window) -> list[FoundStudy] | None:
        """The window's studies; None when it must be split (refused for size, or the answers
        reached the limit). A single day cannot be split: it is asked for without a limit, and
        only a refusal for size leaves it unanswered."""
        single_day = window.days == 1
        identifier = _study_keys(f"{window.first:%Y%m%d}-{window.last:%Y%m%d}")
        limit = self.options.max_per_query
        answers = self._find(identifier, None if single_day else limit)
        if answers is None:
            return None
        if single_day and len(answers) >= limit:
            self.result.warnings.append(
                f"{window.first}: {len(answers)} studies on one day, at least --max-per-query; "
                "a PACS that cuts long answers may have left some out (its log would say so)"
            )
        return [_found(a) for a in answers if str(a.get("StudyInstanceUID", "")).strip()]

    def _undated(self) -> list[FoundStudy]:
        """Studies without StudyDate: one universal query for UIDs and dates, then the undated
        ones by UID with the full keys (see the module docstring)."""
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyDate = ""
        identifier.StudyInstanceUID = ""
        answers = self._find(identifier, None) or []
        if len(answers) >= self.options.max_per_query:
            self.result.warnings.append(
                f"the query for studies without a date answered {len(answers)} studies (all "
                "studies, since DICOM cannot ask for a missing date); a PACS that cuts long "
                "answers may have hidden some undated studies"
            )
        undated = [
            str(a.StudyInstanceUID).strip()
            for a in answers
            if str(a.get("StudyInstanceUID", "")).strip()
            and not str(a.get("StudyDate", "")).strip()
        ]
        studies: list[FoundStudy] = []
        for start in range(0, len(undated), UID_BATCH):
            keys = _study_keys("")
            keys.StudyInstanceUID = undated[start : start + UID_BATCH]
            for answer in self._find(keys, None) or []:
                if not str(answer.get("StudyDate", "")).strip():
                    studies.append(_found(answer))
        return studies

    # -- C-GET and C-MOVE ----------------------------------------------------------------------

    def _retrieve_guarded(self, study: FoundStudy) -> None:
        try:
            self._retrieve(study)
        except _Stop:
            return
        except BaseException as exc:
            self._fail(exc)

    def _retrieve(self, study: FoundStudy) -> None:
        retrieval = _Retrieval(study)
        with self._lock:
            self.result.retrieve_requests.append(study.study_uid)
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = study.study_uid
        if self.options.retrieve == "get":
            self._get(identifier, retrieval)
        else:
            self._move(identifier, retrieval)
        if self._stop.is_set():
            raise _Stop()
        ok = (
            retrieval.final_status in (SUCCESS, WARNING)
            and retrieval.failed == 0
            and retrieval.refused == 0
        )
        if ok:
            self.state.complete_study(study.study_uid, study.instances, retrieval.received)
            with self._lock:
                self.result.studies_retrieved += 1
        else:
            service = "C-GET" if self.options.retrieve == "get" else "C-MOVE"
            code = retrieval.final_status
            meaning = "no final status" if code is None else STATUS_MEANING.get(code, "failure")
            comment = f", {retrieval.error_comment}" if retrieval.error_comment else ""
            reason = (
                f"{service} ended with status "
                f"{'none' if code is None else f'0x{code:04X}'} ({meaning}{comment}): "
                f"{retrieval.completed} completed, {retrieval.failed} failed, "
                f"{retrieval.warning} warning, {retrieval.received} received, "
                f"{retrieval.refused} refused by the archive; retried on the next run"
            )
            with self._ingest_lock:
                self.run.report.refuse(self.address.origin(study.study_uid), reason)
            with self._lock:
                self.result.studies_failed += 1
            self._nothing_ever_sent(retrieval)
        self.listener.study_finished(study, ok)

    def _get(self, identifier: Dataset, retrieval: _Retrieval) -> None:
        contexts = [
            build_context(
                StudyRootQueryRetrieveInformationModelGet, list(NATIVE_TRANSFER_SYNTAXES[:2])
            )
        ]
        storage = get_storage_contexts(retrieval.study.sop_classes, MAX_CONTEXTS - 1)
        contexts += storage
        classes = sorted({str(cx.abstract_syntax) for cx in storage})
        roles = [build_role(uid, scp_role=True) for uid in classes]
        handler: Callable[[DimseEvent], Dataset] = lambda event: self._store(event, retrieval)  # noqa: E731
        assoc = self._associate(contexts, roles, [(evt.EVT_C_STORE, handler)])
        try:
            responses = assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)
            self._follow(responses, retrieval, "C-GET")
        finally:
            self._release(assoc)

    def _move(self, identifier: Dataset, retrieval: _Retrieval) -> None:
        context = build_context(
            StudyRootQueryRetrieveInformationModelMove, list(NATIVE_TRANSFER_SYNTAXES[:2])
        )
        uid = retrieval.study.study_uid
        with self._lock:
            self._moving[uid] = retrieval
        try:
            assoc = self._associate([context])
            try:
                responses = assoc.send_c_move(
                    identifier, self.options.listen_ae, StudyRootQueryRetrieveInformationModelMove
                )
                self._follow(responses, retrieval, "C-MOVE")
            finally:
                self._release(assoc)
        finally:
            with self._lock:
                self._moving.pop(uid, None)
        if retrieval.final_status == MOVE_DESTINATION_UNKNOWN:
            raise self._move_destination_unknown()

    def _move_destination_unknown(self) -> PacsError:
        return PacsError(
            f"the PACS {self.address} does not know the move destination "
            f"{self.options.listen_ae!r}: add it there with this host and port "
            f"{self.options.listen_port}, or use --retrieve get"
        )

    def _nothing_ever_sent(self, retrieval: _Retrieval) -> None:
        """Stop when the first retrieves of a run all fail without sending anything: that is
        the PACS's configuration (Orthanc answers an unknown move destination with 0xC000 and
        no comment), and every other study would fail the same way."""
        if retrieval.received or retrieval.completed or retrieval.failed:
            return
        with self._lock:
            if self.result.objects_received:
                return
            self._empty_failures += 1
            if self._empty_failures < EMPTY_FAILURES_TO_STOP:
                return
        if self.options.retrieve == "move":
            raise PacsError(
                f"the PACS {self.address} sent nothing for the first {EMPTY_FAILURES_TO_STOP} "
                "studies asked for by C-MOVE: most likely it does not know the move "
                f"destination {self.options.listen_ae!r} (add it there with this host and port "
                f"{self.options.listen_port}), or it does not let calling AE title "
                f"{self.options.calling_ae!r} retrieve; or use --retrieve get"
            )
        raise PacsError(
            f"the PACS {self.address} sent nothing for the first {EMPTY_FAILURES_TO_STOP} "
            f"studies asked for by C-GET: check that it allows calling AE title "
            f"{self.options.calling_ae!r} to retrieve (its log says why)"
        )

    def _follow(
        self, responses: Iterator[tuple[Dataset, Dataset | None]], got: _Retrieval, what: str
    ) -> None:
        for status, _identifier in responses:
            code = _status_code(status)
            if code is None:
                if self._stop.is_set():
                    raise _Stop()
                raise self._lost(what)
            got.completed = int(status.get("NumberOfCompletedSuboperations", got.completed) or 0)
            got.failed = int(status.get("NumberOfFailedSuboperations", got.failed) or 0)
            got.warning = int(status.get("NumberOfWarningSuboperations", got.warning) or 0)
            if code in PENDING:
                continue
            got.final_status = code
            got.error_comment = _comment(status)

    def _start_storage_scp(self) -> None:
        """The temporary Storage SCP the PACS sends C-MOVE sub-operations to."""
        scp = AE(ae_title=self.options.listen_ae)
        scp.require_calling_aet = [self.address.ae_title]
        scp.maximum_pdu_size = MAX_PDU
        scp.acse_timeout = 30
        scp.dimse_timeout = self.options.timeout
        scp.network_timeout = self.options.timeout
        contexts = storage_contexts()
        for context in contexts:
            context.scu_role = None
            context.scp_role = None
        contexts.append(build_context(Verification))
        shared = transport.SharedContexts(contexts)
        port = self.options.listen_port
        assert port is not None
        try:
            self._server = scp.start_server(
                (self.options.listen_host, port),
                block=False,
                contexts=shared,
                evt_handlers=[
                    (evt.EVT_CONN_OPEN, handle_connection_open),
                    (evt.EVT_C_STORE, self._store_moved),
                ],
            )
        except OSError as exc:
            raise PacsError(
                f"the Storage SCP for C-MOVE cannot listen on port {port} ({exc}): choose a free "
                "--listen-port and tell the PACS"
            ) from exc

    def _store_moved(self, event: DimseEvent) -> Dataset:
        try:
            study_uid = str(event.dataset.StudyInstanceUID).strip()
        except Exception:
            return _store_status(STORE_CANNOT_UNDERSTAND, "no Study Instance UID")
        with self._lock:
            retrieval = self._moving.get(study_uid)
        if retrieval is None:
            return _store_status(STORE_CANNOT_UNDERSTAND, "not a study this import asked for")
        return self._store(event, retrieval)

    def _store(self, event: DimseEvent, retrieval: _Retrieval) -> Dataset:
        """One received object into the ingest path; never raises into pynetdicom."""
        if self._stop.is_set():
            return _store_status(STORE_OUT_OF_RESOURCES, "import stopped")
        try:
            data = event.encoded_dataset(include_meta=True)
            found = SourceObject(self.address.origin(retrieval.study.study_uid), data)
            with self._ingest_lock:
                disposition = self.run.ingest(found)
        except BaseException as exc:  # ArchiveUnavailable, an observer's Ctrl-C, anything
            self._fail(exc)
            return _store_status(STORE_OUT_OF_RESOURCES, "import stopped")
        with self._lock:
            retrieval.received += 1
            self.result.objects_received += 1
            self.result.bytes_received += len(data)
            if disposition is Disposition.REFUSED:
                retrieval.refused += 1
        self.listener.object_received(disposition, len(data))
        if disposition is Disposition.REFUSED:
            return _store_status(STORE_CANNOT_UNDERSTAND, "refused by the archive")
        return _store_status(SUCCESS, "")


def get_storage_contexts(sop_classes: tuple[str, ...], budget: int) -> list[PresentationContext]:
    """Storage contexts for a C-GET, SCP role proposed for each (see the module docstring)."""
    syntaxes = accepted_transfer_syntaxes()
    if not sop_classes:
        classes = [str(cx.abstract_syntax) for cx in StoragePresentationContexts][:budget]
        return [_scp_context(uid, syntaxes) for uid in classes]
    classes = list(dict.fromkeys(sop_classes))[:budget]
    each = max(1, budget // len(classes))
    contexts: list[PresentationContext] = []
    for uid in classes:
        single = syntaxes[: each - 1] if each < len(syntaxes) else syntaxes
        for syntax in single:
            contexts.append(_scp_context(uid, [syntax]))
        rest = [s for s in syntaxes if s not in single]
        if rest:
            contexts.append(_scp_context(uid, rest))
    return contexts


def _scp_context(sop_class: str, syntaxes: list[str]) -> PresentationContext:
    context = build_context(sop_class, syntaxes)
    context.scu_role = False
    context.scp_role = True
    return context


def _study_keys(study_date: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyDate = study_date
    identifier.StudyInstanceUID = ""
    identifier.PatientID = ""
    identifier.NumberOfStudyRelatedInstances = ""
    identifier.ModalitiesInStudy = ""
    identifier.SOPClassesInStudy = ""
    return identifier


def _found(answer: Dataset) -> FoundStudy:
    raw = answer.get("NumberOfStudyRelatedInstances")
    try:
        instances = int(raw) if raw not in (None, "") else None
    except (TypeError, ValueError):
        instances = None
    return FoundStudy(
        study_uid=str(answer.StudyInstanceUID).strip(),
        study_date=str(answer.get("StudyDate", "") or "").strip(),
        patient_id=str(answer.get("PatientID", "") or "").strip(),
        instances=instances,
        modalities=_multi(answer.get("ModalitiesInStudy")),
        sop_classes=_multi(answer.get("SOPClassesInStudy")),
    )


def _multi(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    items = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    return tuple(str(v).strip() for v in items if str(v).strip())


def _status_code(status: Dataset | None) -> int | None:
    if status is None or "Status" not in status:
        return None
    return int(status.Status)


def _comment(status: Dataset) -> str:
    return str(status.get("ErrorComment", "") or "").strip()


def _store_status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    if comment:
        status.ErrorComment = comment[:64]
    return status
