"""The DICOM node's listener: AE title, presentation contexts and the association settings a
real modality needs (large PDUs, timeouts, TCP_NODELAY), bound to the archive's services."""

from __future__ import annotations

import logging
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from arkiv.services import Archive
from dicom_node.contexts import storage_contexts, verification_context
from dicom_node.handlers import handle_connection_open, handle_echo, handle_store
from dicom_node.transport import SharedContexts, install

log = logging.getLogger(__name__)


class DicomNode:
    """Start and stop the DICOM listener of one archive."""

    def __init__(self, archive: Archive) -> None:
        self._archive = archive
        settings = archive.settings
        ae = AE(ae_title=settings.ae_title)
        ae.maximum_pdu_size = settings.max_pdu_size
        ae.acse_timeout = settings.acse_timeout
        ae.dimse_timeout = settings.dimse_timeout
        ae.network_timeout = settings.network_timeout
        ae.maximum_associations = settings.max_associations
        ae.require_called_aet = True
        ae.require_calling_aet = []
        ae.supported_contexts = [verification_context(), *storage_contexts()]
        self._contexts = SharedContexts(ae.supported_contexts)
        install()
        self._ae = ae
        self._server: ThreadedAssociationServer | None = None

    def start(self, host: str, port: int) -> None:
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, handle_connection_open),
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_C_STORE, handle_store, [self._archive]),
        ]
        self._server = self._ae.start_server(
            (host, port), block=False, evt_handlers=handlers, contexts=self._contexts
        )
        log.info("DICOM node %s listening on %s:%d", self._ae.ae_title, host, port)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the DICOM node is not started")
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
