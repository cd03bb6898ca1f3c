"""Event handlers: each turns one DIMSE request into a call of the archive's services.

Protocol code stays here; what makes an object acceptable and how it is kept lives in `arkiv`,
and who may do what in `dicom_node.peers`. Every handler answers with a status: an exception must
never reach pynetdicom, or the sender would get a generic failure without a reason (and a
notification handler that raised would let an association through that should be rejected).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event as DimseEvent

from arkiv.audit import Actor
from arkiv.errors import ArchiveUnavailable, InvalidObject, UnsupportedObject
from arkiv.ingest import IngestOutcome
from arkiv.services import Archive
from dicom_node import peers, statuses
from dicom_node.peers import Caller, PeerPolicy, record_security_alert
from dicom_node.tls import peer_subject

log = logging.getLogger(__name__)

REJECTED_PERMANENT = 0x01
SOURCE_SERVICE_USER = 0x01
CALLING_AE_NOT_RECOGNISED = 0x03
"""A-ASSOCIATE-RJ result, source and reason for a caller the node does not accept (PS3.8
9.3.4): permanent, by the service user, calling AE title not recognised."""
REJECTED_TRANSIENT = 0x02
SOURCE_PRESENTATION = 0x03
TEMPORARY_CONGESTION = 0x01
"""… and for any caller while the node drains: transient, by the service provider
(presentation), temporary congestion, so the sender retries, reaching another node."""


def _status(code: int, message: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = code
    if message:
        ds.ErrorComment = statuses.comment(message)
    return ds


def caller_of(assoc: Association) -> Caller:
    """The calling AE title and source address of an association, and its TLS client
    certificate's subject if there is one. Works from the A-ASSOCIATE-RQ on, before pynetdicom
    has copied the calling AE title into the requestor."""
    request = assoc.requestor.primitive
    title = getattr(request, "calling_ae_title", None) or assoc.requestor.ae_title
    transport = assoc.dul.socket
    return Caller(
        ae_title=str(title).strip(),
        address=str(assoc.requestor.address),
        tls_subject=peer_subject(transport.socket if transport is not None else None),
    )


def calling_actor(event: DimseEvent, archive: Archive, policy: PeerPolicy) -> Actor:
    """The sender as the audit log and the index see it: a configured peer acts for its county,
    any other AE for the archive's own."""
    requestor = event.assoc.requestor
    ae_title = str(requestor.ae_title).strip()
    return Actor(
        name=ae_title,
        kind="dicom-ae",
        county=policy.county(ae_title).value,
        address=str(requestor.address),
    )


def handle_connection_open(event: DimseEvent) -> None:
    """Send small PDUs (statuses) at once: Nagle's delay costs ~40 ms per C-STORE round trip."""
    try:
        transport = event.assoc.dul.socket
        sock = transport.socket if transport is not None else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):
        log.debug("could not set TCP_NODELAY", exc_info=True)


def handle_association_request(event: DimseEvent, archive: Archive, policy: PeerPolicy) -> None:
    """Reject (A-ASSOCIATE-RJ, permanent, calling AE not recognised) a caller the peer policy
    refuses, after auditing it as a Node Authentication alert.

    A wrong called AE title is left to pynetdicom (`require_called_aet`), which rejects it with
    its own reason. Anything unexpected here rejects too: this handler is the node's door.
    """
    assoc = event.assoc
    if archive.drain.draining:  # accepted just before the node closed its door: try elsewhere
        log.info(
            "association from %s rejected (transient): the node is draining",
            assoc.requestor.address,
        )
        _reject(assoc, REJECTED_TRANSIENT, SOURCE_PRESENTATION, TEMPORARY_CONGESTION)
        return
    caller = Caller(ae_title="", address=str(assoc.requestor.address))
    called = ""
    try:
        called = str(getattr(assoc.requestor.primitive, "called_ae_title", "")).strip()
        if called != archive.settings.ae_title.strip():
            return
        caller = caller_of(assoc)
        reason = policy.refuse_association(caller, proposed_sop_classes(assoc))
    except Exception as exc:
        log.exception("could not check the association request from %s", caller.address)
        reason = f"the association request could not be checked: {type(exc).__name__}"
    if reason is None:
        return
    log.warning("association from %r at %s rejected: %s", caller.ae_title, caller.address, reason)
    record_security_alert(
        archive,
        caller,
        peers.NODE_AUTHENTICATION,
        reason,
        {"called_ae": called},
        peer=policy.peer(caller.ae_title) if caller.ae_title else None,
    )
    _reject(assoc)


def proposed_sop_classes(assoc: Association) -> list[str]:
    """The abstract syntaxes of the presentation contexts the requestor proposes."""
    request = assoc.requestor.primitive
    contexts = request.presentation_context_definition_list if request is not None else []
    return [str(cx.abstract_syntax) for cx in contexts if cx.abstract_syntax is not None]


def _reject(
    assoc: Association,
    result: int = REJECTED_PERMANENT,
    source: int = SOURCE_SERVICE_USER,
    reason: int = CALLING_AE_NOT_RECOGNISED,
) -> None:
    """Send the A-ASSOCIATE-RJ as pynetdicom's own negotiation does; abort if even that fails."""
    try:
        assoc.acse.send_reject(result, source, reason)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()
    except Exception:
        log.exception("could not reject the association; aborting it")
        assoc.abort()


def refuse_service(
    event: DimseEvent,
    archive: Archive,
    policy: PeerPolicy,
    service: str,
    details: dict[str, Any] | None = None,
) -> Dataset | None:
    """A 0x0124 (Refused: Not Authorized) answer if the calling AE may not use `service`, after
    auditing the attempt (110132 Use of Restricted Function); None if it may.

    One check for every DIMSE service, so C-FIND, C-MOVE, C-GET and storage commitment handlers
    call this with their service name.
    """
    ae_title = str(event.assoc.requestor.ae_title).strip()
    if policy.allows(ae_title, service):
        return None
    reason = f"calling AE {ae_title} may not use the {service} service"
    log.warning("%s from %r refused: %s", service, ae_title, reason)
    caller = Caller(ae_title=ae_title, address=str(event.assoc.requestor.address))
    record_security_alert(
        archive,
        caller,
        peers.USE_OF_RESTRICTED_FUNCTION,
        reason,
        {"service": service, **(details or {})},
        peer=policy.peer(ae_title),
    )
    return _status(statuses.NOT_AUTHORIZED, f"AE {ae_title} not authorized for {service}")


def handle_echo(event: DimseEvent, archive: Archive, policy: PeerPolicy) -> Dataset:
    refused = refuse_service(event, archive, policy, peers.ECHO)
    return refused if refused is not None else _status(statuses.SUCCESS)


def handle_store(event: DimseEvent, archive: Archive, policy: PeerPolicy) -> Dataset:
    try:
        request = event.request
        refused = refuse_service(
            event,
            archive,
            policy,
            peers.STORE,
            {
                "sop_instance_uid": str(getattr(request, "AffectedSOPInstanceUID", "") or ""),
                "sop_class_uid": str(getattr(request, "AffectedSOPClassUID", "") or ""),
            },
        )
        if refused is not None:
            return refused
        actor = calling_actor(event, archive, policy)
    except Exception as exc:  # the node must answer and keep serving, whatever happened
        log.exception("C-STORE could not be checked")
        return _status(statuses.PROCESSING_FAILURE, f"internal error: {type(exc).__name__}")
    try:
        data = event.encoded_dataset(include_meta=True)
        result = archive.ingest.ingest_dicom(data, actor)
    except UnsupportedObject as exc:
        log.warning("C-STORE from %s refused: %s", actor.name, exc)
        return _status(statuses.SOP_CLASS_NOT_SUPPORTED, str(exc))
    except InvalidObject as exc:
        log.warning("C-STORE from %s refused: %s", actor.name, exc)
        return _status(statuses.CANNOT_UNDERSTAND, str(exc))
    except ArchiveUnavailable as exc:
        log.error("C-STORE from %s not accepted: %s", actor.name, exc)
        return _status(statuses.OUT_OF_RESOURCES, "archive cannot store now; retry later")
    except Exception as exc:  # the node must answer and keep serving, whatever happened
        log.exception("C-STORE from %s failed unexpectedly", actor.name)
        return _status(statuses.PROCESSING_FAILURE, f"internal error: {type(exc).__name__}")
    if result.outcome is IngestOutcome.CONFLICT:
        return _status(statuses.DUPLICATE_SOP_INSTANCE, "different object under this SOP UID held")
    return _status(statuses.SUCCESS)
