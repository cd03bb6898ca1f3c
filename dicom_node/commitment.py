"""Storage Commitment Push Model SCP (PS3.4 Annex J): the DIMSE side of `arkiv.commitment`.

A modality sends N-ACTION (Request Storage Commitment) naming the objects it wants to delete;
the archive answers the N-ACTION at once (PS3.4 J.3.2.1: success means "request received", not
"committed") and decides in a worker thread, since reading every object back to verify it can
take long and the DIMSE handler must not block the association. The decision goes back as an
N-EVENT-REPORT: on the same association if the modality still holds it open (the reactor of
pynetdicom is paused by `send_n_event_report`, which waits until the N-ACTION response has
gone out), else on a new association to the peer's configured port, where the archive proposes
the SCP role (SCP/SCU role selection, PS3.4 J.3.3), retried with backoff and audited when it
cannot be delivered.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Sequence

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import N_ACTION_RSP
from pynetdicom.events import Event as DimseEvent

from arkiv.accounts import Principal
from arkiv.commitment import CommitmentResult, ObjectReference
from arkiv.config import Peer
from arkiv.dicom_object import is_valid_uid
from arkiv.errors import Forbidden
from arkiv.services import Archive
from dicom_node import peers, statuses
from dicom_node.handlers import caller_of, refuse_service
from dicom_node.peers import Caller, PeerPolicy

log = logging.getLogger(__name__)

STORAGE_COMMITMENT_PUSH_MODEL = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
"""The well-known SOP Instance every commitment request is addressed to (PS3.4 J.3.1)."""
REQUEST_STORAGE_COMMITMENT = 1
"""Action Type ID of PS3.4 J.3.2.1; no other action exists."""
ALL_COMMITTED = 1
SOME_FAILED = 2
"""Event Type IDs of the N-EVENT-REPORT (PS3.4 J.3.3.1)."""

MAX_REFERENCES = 10_000
"""Objects one request may name; more is answered 0x0213 (resource limitation): a study from
a CBCT is a few thousand objects, and each is read back in full to be verified."""

SUCCESS = statuses.SUCCESS
PROCESSING_FAILURE = 0x0110
NO_SUCH_SOP_INSTANCE = 0x0112
INVALID_ARGUMENT_VALUE = 0x0115
INVALID_OBJECT_INSTANCE = 0x0117
NO_SUCH_ACTION = 0x0123
RESOURCE_LIMITATION = 0x0213
"""N-ACTION failure statuses (PS3.7 10.1.4.1.10 and Annex C)."""


class InvalidRequest(Exception):
    """An N-ACTION the archive cannot act on, with the status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _status(code: int, message: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = code
    if message:
        ds.ErrorComment = statuses.comment(message)
    return ds


def handle_commitment_request(
    event: DimseEvent, archive: Archive, policy: PeerPolicy
) -> tuple[Dataset, Dataset | None]:
    """Answer an N-ACTION: a failure status for a request that cannot be acted on, else
    success, with the objects checked and reported from a worker thread."""
    try:
        refused = refuse_service(event, archive, policy, peers.COMMIT)
        if refused is not None:
            return refused, None
        transaction_uid, references = parse_request(event)
        caller = caller_of(event.assoc)
        principal = policy.principal(caller)
    except InvalidRequest as exc:
        ae_title = str(event.assoc.requestor.ae_title).strip()
        log.warning("storage commitment request from %s refused: %s", ae_title, exc)
        return _status(exc.status, str(exc)), None
    except Exception as exc:  # the node must answer and keep serving, whatever happened
        log.exception("storage commitment request could not be checked")
        return _status(PROCESSING_FAILURE, f"internal error: {type(exc).__name__}"), None
    reporter = CommitmentReporter(archive, principal, policy.peer(caller.ae_title), caller)
    answered = _watch_response(event.assoc, int(getattr(event.request, "MessageID", 0) or 0))
    threading.Thread(
        target=reporter.run,
        args=(event.assoc, answered, transaction_uid, references),
        name=f"commitment-{transaction_uid[-12:]}",
        daemon=True,
    ).start()
    log.info(
        "storage commitment %s from %s: %d objects to check",
        transaction_uid,
        caller.ae_title,
        len(references),
    )
    return _status(SUCCESS), None


def _watch_response(assoc: Association, message_id: int) -> threading.Event:
    """An event set once the N-ACTION response has gone out: only then may the report follow
    on the same association (PS3.4 J.3.3: the report comes after the response; while the
    handler runs, pynetdicom would let another thread send at once)."""
    answered = threading.Event()

    def on_sent(sent: DimseEvent) -> None:
        message = sent.message
        if not isinstance(message, N_ACTION_RSP):
            return
        responded_to = message.command_set.get("MessageIDBeingRespondedTo")
        if responded_to == message_id:
            answered.set()
            assoc.unbind(evt.EVT_DIMSE_SENT, on_sent)

    assoc.bind(evt.EVT_DIMSE_SENT, on_sent)
    return answered


def parse_request(event: DimseEvent) -> tuple[str, tuple[ObjectReference, ...]]:
    """The Transaction UID and the referenced objects of a Request Storage Commitment action,
    or InvalidRequest saying what is wrong with it."""
    instance = str(getattr(event.request, "RequestedSOPInstanceUID", "") or "").strip()
    if not is_valid_uid(instance):
        raise InvalidRequest(INVALID_OBJECT_INSTANCE, f"invalid Requested SOP Instance {instance}")
    if instance != STORAGE_COMMITMENT_INSTANCE:
        raise InvalidRequest(
            NO_SUCH_SOP_INSTANCE,
            f"Requested SOP Instance must be {STORAGE_COMMITMENT_INSTANCE}",
        )
    if event.action_type != REQUEST_STORAGE_COMMITMENT:
        raise InvalidRequest(
            NO_SUCH_ACTION,
            f"Action Type ID {event.action_type} unknown; only 1 (request commitment)",
        )
    try:
        information = event.action_information
        transaction_uid = str(information.get("TransactionUID", "") or "").strip()
        items = list(information.get("ReferencedSOPSequence", None) or [])
        references = tuple(_reference(item, n) for n, item in enumerate(items, start=1))
    except InvalidRequest:
        raise
    except Exception as exc:
        raise InvalidRequest(
            INVALID_ARGUMENT_VALUE, f"Action Information cannot be read: {type(exc).__name__}"
        ) from exc
    if not transaction_uid:
        raise InvalidRequest(INVALID_ARGUMENT_VALUE, "Transaction UID (0008,1195) missing")
    if not is_valid_uid(transaction_uid):
        raise InvalidRequest(INVALID_ARGUMENT_VALUE, "Transaction UID is not a valid UID")
    if not references:
        raise InvalidRequest(
            INVALID_ARGUMENT_VALUE, "Referenced SOP Sequence (0008,1199) missing or empty"
        )
    if len(references) > MAX_REFERENCES:
        raise InvalidRequest(
            RESOURCE_LIMITATION,
            f"{len(references)} objects in one request; send at most {MAX_REFERENCES}",
        )
    return transaction_uid, references


def _reference(item: Dataset, number: int) -> ObjectReference:
    sop_class = str(item.get("ReferencedSOPClassUID", "") or "").strip()
    sop_instance = str(item.get("ReferencedSOPInstanceUID", "") or "").strip()
    if not is_valid_uid(sop_class) or not is_valid_uid(sop_instance):
        raise InvalidRequest(
            INVALID_ARGUMENT_VALUE,
            f"Referenced SOP item {number}: SOP class or instance UID missing or invalid",
        )
    return ObjectReference(sop_class_uid=sop_class, sop_instance_uid=sop_instance)


def event_information(result: CommitmentResult, ae_title: str) -> Dataset:
    """The Event Information of PS3.4 J.3.3.1.1 (Referenced SOP Sequence only when something
    was committed, Failed SOP Sequence only when something failed)."""
    ds = Dataset()
    ds.TransactionUID = result.transaction_uid
    if result.committed:
        ds.RetrieveAETitle = ae_title
        ds.ReferencedSOPSequence = DicomSequence(
            [_item(r.sop_class_uid, r.sop_instance_uid) for r in result.committed]
        )
    if result.failed:
        failed = []
        for failure in result.failed:
            item = _item(failure.reference.sop_class_uid, failure.reference.sop_instance_uid)
            item.FailureReason = int(failure.reason)
            failed.append(item)
        ds.FailedSOPSequence = DicomSequence(failed)
    return ds


def _item(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    return item


class CommitmentReporter:
    """Check one transaction through the archive and get its N-EVENT-REPORT to the modality."""

    def __init__(
        self, archive: Archive, principal: Principal, peer: Peer | None, caller: Caller
    ) -> None:
        self._archive = archive
        self._principal = principal
        self._peer = peer
        self._caller = caller

    def run(
        self,
        assoc: Association,
        answered: threading.Event,
        transaction_uid: str,
        references: Sequence[ObjectReference],
    ) -> None:
        try:
            result = self._archive.commitment.check(self._principal, transaction_uid, references)
        except Forbidden as exc:  # the peer lost its commit scope: nothing is vouched for
            log.warning("storage commitment %s refused: %s", transaction_uid, exc)
            return
        except Exception:
            log.exception("storage commitment %s could not be checked", transaction_uid)
            return
        log.info(
            "storage commitment %s: %d committed, %d failed",
            transaction_uid,
            len(result.committed),
            len(result.failed),
        )
        report = event_information(result, self._archive.settings.ae_title)
        event_type = ALL_COMMITTED if result.all_committed else SOME_FAILED
        if self._send_on_same(assoc, answered, report, event_type):
            return
        reason = self._send_on_new(report, event_type)
        if reason is None:
            return
        log.error("storage commitment %s: report not delivered: %s", transaction_uid, reason)
        try:
            self._archive.commitment.record_undelivered(self._principal, result, reason)
        except Exception:
            log.exception("could not audit the undelivered commitment %s", transaction_uid)

    def _send_on_same(
        self, assoc: Association, answered: threading.Event, report: Dataset, event_type: int
    ) -> bool:
        """Whether the modality took the report on its requesting association.

        A modality that released it, or answers with a failure status (some accept reports
        only on their own SCP), gets it on a new association instead.
        """
        deadline = time.monotonic() + self._archive.settings.dimse_timeout
        while not answered.wait(0.05):
            if not assoc.is_alive() or time.monotonic() > deadline:
                return False  # the response was never sent: the association is gone
        if not (assoc.is_established and assoc.is_alive()):
            return False
        try:
            status, _ = assoc.send_n_event_report(
                report, event_type, STORAGE_COMMITMENT_PUSH_MODEL, STORAGE_COMMITMENT_INSTANCE
            )
        except Exception as exc:  # released or aborted while sending
            log.info("commitment report not sent on the requesting association: %s", exc)
            return False
        code = status.get("Status")
        if code == SUCCESS:
            return True
        log.info("commitment report on the requesting association answered %r", code)
        return False

    def _send_on_new(self, report: Dataset, event_type: int) -> str | None:
        """None once delivered on a new association, else why the last try failed."""
        settings = self._archive.settings
        if self._peer is None or not self._peer.port:
            return f"no port configured for {self._caller.ae_title} to send the report to"
        host = report_host(self._peer, self._caller)
        delay = settings.commitment_report_backoff_seconds
        reason = ""
        for attempt in range(1, max(1, settings.commitment_report_attempts) + 1):
            reason = self._send_once(host, self._peer, report, event_type)
            if not reason:
                return None
            log.warning(
                "commitment report to %s at %s:%d, try %d: %s",
                self._peer.ae_title,
                host,
                self._peer.port,
                attempt,
                reason,
            )
            if attempt < settings.commitment_report_attempts:
                time.sleep(delay)
                delay *= 2
        return reason

    def _send_once(self, host: str, peer: Peer, report: Dataset, event_type: int) -> str:
        """Empty when the modality answered success, else what went wrong."""
        settings = self._archive.settings
        ae = AE(ae_title=settings.ae_title)
        ae.acse_timeout = settings.acse_timeout
        ae.dimse_timeout = settings.dimse_timeout
        ae.network_timeout = settings.network_timeout
        ae.add_requested_context(STORAGE_COMMITMENT_PUSH_MODEL)
        role = build_role(STORAGE_COMMITMENT_PUSH_MODEL, scu_role=False, scp_role=True)
        try:
            assoc = ae.associate(host, peer.port, ae_title=peer.ae_title, ext_neg=[role])
        except Exception as exc:
            return f"cannot associate: {exc}"
        if not assoc.is_established:
            return "association rejected, aborted or not answered"
        try:
            status, _ = assoc.send_n_event_report(
                report, event_type, STORAGE_COMMITMENT_PUSH_MODEL, STORAGE_COMMITMENT_INSTANCE
            )
        except Exception as exc:
            return f"N-EVENT-REPORT not sent: {exc}"
        finally:
            if assoc.is_established:
                assoc.release()
        code = status.get("Status")
        if code == SUCCESS:
            return ""
        return f"N-EVENT-REPORT answered {code!r}" if code is not None else "no answer"


def report_host(peer: Peer, caller: Caller) -> str:
    """Where to reach the modality: its configured host, unless that is a network (CIDR) or
    empty, in which case the address its request came from."""
    host = peer.host.strip()
    if not host or "/" in host:
        return _plain_address(caller.address)
    return host


def _plain_address(address: str) -> str:
    """An IPv4-mapped IPv6 source (dual-stack listener) as the IPv4 address it stands for."""
    try:
        value = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(value, ipaddress.IPv6Address) and value.ipv4_mapped is not None:
        return str(value.ipv4_mapped)
    return str(value)
