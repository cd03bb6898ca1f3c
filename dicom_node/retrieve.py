"""C-MOVE and C-GET SCP (PS3.4 C.4.2, C.4.3): select by unique keys, audit, send verified bytes.

pynetdicom drives both services: a C-MOVE handler yields the destination's (address, port,
association arguments), then the number of sub-operations, then one (status, dataset) per object;
pynetdicom opens the association to the destination and sends each dataset as a C-STORE with the
Move Originator AE title and Message ID. The association arguments carry the contexts proposed
(`dicom_node.sending`) and a hook that hands this handler the established association, so it can
see which transfer syntaxes the destination accepted before choosing how to send each object.

Rules (documented here because a clinic will ask):
- the *caller* needs the "move" (or "get") service; the Move Destination must be a configured
  peer with a host and port, but needs no service of its own: it is where the caller wants the
  images, and the caller's county bounds what is sent. A destination not configured gets
  0xA801 (Refused: Move Destination unknown), audited;
- the caller finds only its county's instances; others are not matched;
- the transfer is audited (110104, naming destination, patients, studies, object count) before
  any object leaves; if that fails, nothing is sent;
- each object is read through the access path, so its SHA-256 is verified; a damaged object is
  a failed sub-operation and is never sent.

Limits that come from pynetdicom driving the exchange: the objects are decoded and re-encoded
by pydicom in their stored transfer syntax (byte-identical for the objects tested, including
through Orthanc, but not proven for every object); a destination that does not accept the
association is answered 0xA801 by pynetdicom, not 0xA702; an unknown destination's 0xA801
carries no Error Comment (the reason is in the log and the audit event).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event as DimseEvent
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from arkiv.accounts import Principal
from arkiv.audit import Event, EventType, Outcome
from arkiv.errors import ArkivError, Forbidden
from arkiv.services import Archive
from dicom_node import peers, sending, statuses
from dicom_node.handlers import caller_of, refuse_service
from dicom_node.peers import PeerPolicy
from storage.records import StoredInstance, StudyQuery

log = logging.getLogger(__name__)

PENDING = 0xFF00
CANCELLED = 0xFE00
MOVE_DESTINATION_UNKNOWN = 0xA801
UNABLE_TO_PERFORM_SUBOPERATIONS = 0xA702
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
MAX_SUBOPERATIONS = 65535
"""Number of ... Sub-operations are US: a retrieve of more objects cannot be reported."""

PATIENT_ROOT = {"1.2.840.10008.5.1.4.1.2.1.2", "1.2.840.10008.5.1.4.1.2.1.3"}
STUDY_ROOT = {"1.2.840.10008.5.1.4.1.2.2.2", "1.2.840.10008.5.1.4.1.2.2.3"}
LEVEL_KEYS = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
LEVELS = tuple(LEVEL_KEYS)


class BadIdentifier(ArkivError):
    """The identifier does not name what to retrieve as PS3.4 C.4.2.2.1 requires."""


@dataclass(frozen=True)
class Selection:
    level: str
    query: StudyQuery
    text: str
    """The keys as the audit event shows them."""


def _values(identifier: Dataset, keyword: str) -> tuple[str, ...]:
    value = identifier.get(keyword)
    if value is None or value == "":
        return ()
    items = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    return tuple(str(v).strip() for v in items if str(v).strip())


def parse_selection(identifier: Dataset | None, model: str) -> Selection:
    """The unique keys of a retrieve identifier as a query; BadIdentifier when a level or its
    unique key is missing, or the level is PATIENT in the Study Root model."""
    if identifier is None:
        raise BadIdentifier("the request has no identifier")
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in LEVEL_KEYS:
        raise BadIdentifier(f"QueryRetrieveLevel {level!r} is not PATIENT, STUDY, SERIES or IMAGE")
    if level == "PATIENT" and model in STUDY_ROOT:
        raise BadIdentifier("the Study Root model has no PATIENT level")
    keys = {kw: _values(identifier, kw) for kw in LEVEL_KEYS.values()}
    if not keys[LEVEL_KEYS[level]]:
        raise BadIdentifier(f"{LEVEL_KEYS[level]} is required at the {level} level")
    for keyword, found in keys.items():
        if any("*" in v or "?" in v for v in found):
            raise BadIdentifier(f"{keyword} must be a unique key, not a wildcard")
    patient_ids = keys["PatientID"]
    if len(patient_ids) > 1:
        raise BadIdentifier("PatientID must be a single value")
    query = StudyQuery(
        patient_id=patient_ids[0] if patient_ids else None,
        study_uids=keys["StudyInstanceUID"],
        series_uids=keys["SeriesInstanceUID"] if LEVELS.index(level) >= 2 else (),
        sop_uids=keys["SOPInstanceUID"] if level == "IMAGE" else (),
    )
    text = " ".join(kw + "=" + "\\".join(v) for kw, v in keys.items() if v)
    return Selection(level, query, f"QueryRetrieveLevel={level} {text}")


def _status(code: int, message: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = statuses.comment(message)
    return ds


def _failed_list(uids: list[str]) -> Dataset:
    ds = Dataset()
    ds.FailedSOPInstanceUIDList = uids
    return ds


class _StoreAssociation:
    """Receives the association pynetdicom opens to the Move Destination (EVT_ACCEPTED).

    pynetdicom names its own AE title as Move Originator on the C-STORE sub-operations, but
    PS3.4 C.4.2.2.3 wants the AE that asked for the move (the destination may route by it), so
    the association's `send_c_store` is wrapped to pass the caller's title.
    """

    def __init__(self, originator: str = "") -> None:
        self._assoc: Association | None = None
        self._originator = originator

    def accepted(self, event: DimseEvent) -> None:
        assoc = event.assoc
        self._assoc = assoc
        if not self._originator:
            return
        send = assoc.send_c_store
        originator = self._originator

        def send_as_originator(
            dataset: Any,
            msg_id: int = 1,
            priority: int = 2,
            originator_aet: str | None = None,
            originator_id: int | None = None,
        ) -> Dataset:
            return send(dataset, msg_id, priority, originator, originator_id)

        assoc.send_c_store = send_as_originator  # type: ignore[method-assign]

    @property
    def assoc(self) -> Association | None:
        return self._assoc


def _audit_refusal(
    archive: Archive, principal: Principal, reason: str, details: dict[str, Any]
) -> None:
    try:
        archive.audit.record(
            Event(
                EventType.INSTANCES_TRANSFERRED,
                "R",
                principal.actor(),
                outcome=Outcome.MINOR_FAILURE,
                outcome_description=reason,
                details=details,
            )
        )
    except Exception:
        log.exception("could not audit a refused retrieve (%s)", reason)


def handle_move(event: DimseEvent, archive: Archive, policy: PeerPolicy) -> Iterator[Any]:
    """C-MOVE: every outcome is a status; an exception never reaches pynetdicom.

    pynetdicom can only answer an unknown destination (yield None, None: 0xA801) before it has
    associated with the destination, so a refusal for any other reason (service not allowed,
    bad identifier) is given once the destination is known, as the single sub-operation's final
    status, and nothing is sent.
    """
    failed: list[str] = []
    try:
        destination_ae = str(getattr(event.request, "MoveDestination", "") or "").strip()
        destination = policy.peer(destination_ae)
        if destination is None or not destination.host or not destination.port:
            reason = f"Move Destination {destination_ae!r} is not a configured peer with an address"
            log.warning("C-MOVE refused: %s", reason)
            principal = policy.principal(caller_of(event.assoc))
            _audit_refusal(
                archive, principal, reason, {"destination": {"ae_title": destination_ae}}
            )
            yield None, None
            return
    except Exception:
        log.exception("C-MOVE destination could not be resolved")
        yield None, None
        return
    store = _StoreAssociation(str(event.assoc.requestor.ae_title).strip())
    found: list[StoredInstance] = []
    refusal: Dataset | None = None
    try:
        model = str(event.request.AffectedSOPClassUID)
        refusal = refuse_service(
            event, archive, policy, peers.MOVE, {"move_destination": destination_ae}
        )
        if refusal is None:
            principal = policy.principal(caller_of(event.assoc))
            selection = parse_selection(event.identifier, model)
            where = {
                "ae_title": destination_ae,
                "host": destination.host,
                "port": destination.port,
                "keys": selection.text,
                "service": "C-MOVE",
            }
            found = archive.access.instances_for_transfer(
                principal, selection.query, where, MAX_SUBOPERATIONS
            )
            if len(found) > MAX_SUBOPERATIONS:
                refusal = _status(UNABLE_TO_PROCESS, f"more than {MAX_SUBOPERATIONS} objects")
    except BadIdentifier as exc:
        refusal = _status(IDENTIFIER_DOES_NOT_MATCH, str(exc))
    except Forbidden as exc:
        refusal = _status(statuses.NOT_AUTHORIZED, str(exc))
    except Exception as exc:  # the audit could not be written, the index is down, ...
        log.exception("C-MOVE could not be prepared")
        refusal = _status(UNABLE_TO_PROCESS, f"not sent: {type(exc).__name__}")
    yield (
        destination.host,
        destination.port,
        {
            "contexts": sending.proposed_contexts(found) or [build_context(Verification)],
            "evt_handlers": [(evt.EVT_ACCEPTED, store.accepted)],
        },
    )
    if refusal is not None:
        yield 1
        yield refusal, _failed_list([])
        return
    yield len(found)
    try:
        yield from _send_all(event, archive, principal, found, store, failed, as_scp=False)
    except Exception as exc:
        log.exception("C-MOVE failed unexpectedly")
        yield (
            _status(UNABLE_TO_PROCESS, f"internal error: {type(exc).__name__}"),
            _failed_list(failed),
        )


def handle_get(event: DimseEvent, archive: Archive, policy: PeerPolicy) -> Iterator[Any]:
    """C-GET: objects go back over the caller's association, on contexts where it is SCP."""
    failed: list[str] = []
    try:
        model = str(event.request.AffectedSOPClassUID)
        refused = refuse_service(event, archive, policy, peers.GET, {"sop_class_uid": model})
        if refused is not None:
            yield 1
            yield refused, None
            return
        principal = policy.principal(caller_of(event.assoc))
        selection = parse_selection(event.identifier, model)
        where = {
            "ae_title": str(event.assoc.requestor.ae_title).strip(),
            "host": str(event.assoc.requestor.address),
            "port": int(event.assoc.requestor.port or 0),
            "keys": selection.text,
            "service": "C-GET",
        }
        found = archive.access.instances_for_transfer(
            principal, selection.query, where, MAX_SUBOPERATIONS
        )
    except BadIdentifier as exc:
        yield 1
        yield _status(IDENTIFIER_DOES_NOT_MATCH, str(exc)), None
        return
    except Forbidden as exc:
        yield 1
        yield _status(statuses.NOT_AUTHORIZED, str(exc)), None
        return
    except Exception as exc:
        log.exception("C-GET could not be prepared")
        yield 1
        yield _status(UNABLE_TO_PROCESS, f"internal error: {type(exc).__name__}"), None
        return
    if len(found) > MAX_SUBOPERATIONS:
        yield 1
        yield _status(UNABLE_TO_PROCESS, f"more than {MAX_SUBOPERATIONS} objects"), None
        return
    yield len(found)
    store = _StoreAssociation()
    store.accepted(event)
    try:
        yield from _send_all(event, archive, principal, found, store, failed, as_scp=True)
    except Exception as exc:
        log.exception("C-GET failed unexpectedly")
        yield (
            _status(UNABLE_TO_PROCESS, f"internal error: {type(exc).__name__}"),
            _failed_list(failed),
        )


def _send_all(
    event: DimseEvent,
    archive: Archive,
    principal: Principal,
    found: list[StoredInstance],
    store: _StoreAssociation,
    failed: list[str],
    as_scp: bool,
) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """One pending (status, dataset) per object; a damaged or unsendable object goes as a
    stand-in that fails its sub-operation without sending a byte."""
    for instance in found:
        if event.is_cancelled:
            yield CANCELLED, _failed_list(failed)
            return
        assoc = store.assoc
        accepted = sending.accepted_syntaxes(assoc, instance.sop_class_uid, as_scp) if assoc else []
        try:
            data = archive.access.read_bytes(principal, instance)
            outgoing = sending.prepare(data, instance, accepted)
        except (ArkivError, sending.NotSendable) as exc:
            log.warning("retrieve: %s not sent: %s", instance.sop_uid, exc)
            failed.append(instance.sop_uid)
            yield PENDING, sending.unsendable(instance)
            continue
        yield PENDING, outgoing.dataset
