"""Event handlers: each turns one DIMSE request into a call of the archive's services.

Protocol code stays here; what makes an object acceptable and how it is kept lives in `arkiv`.
Every handler answers with a status: an exception must never reach pynetdicom, or the sender
would get a generic failure without a reason.
"""

from __future__ import annotations

import logging
import socket

from pydicom.dataset import Dataset
from pynetdicom.events import Event as DimseEvent

from arkiv.audit import Actor
from arkiv.errors import ArchiveUnavailable, InvalidObject, UnsupportedObject
from arkiv.ingest import IngestOutcome
from arkiv.services import Archive
from dicom_node import statuses

log = logging.getLogger(__name__)


def _status(code: int, message: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = code
    if message:
        ds.ErrorComment = statuses.comment(message)
    return ds


def calling_actor(event: DimseEvent, archive: Archive) -> Actor:
    requestor = event.assoc.requestor
    return Actor(
        name=str(requestor.ae_title).strip(),
        kind="dicom-ae",
        county=archive.settings.county.value,
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


def handle_echo(event: DimseEvent) -> int:
    return statuses.SUCCESS


def handle_store(event: DimseEvent, archive: Archive) -> Dataset:
    actor = calling_actor(event, archive)
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
