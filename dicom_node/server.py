"""The DICOM node's listener: AE title, presentation contexts and the association settings a
real modality needs (large PDUs, timeouts, TCP_NODELAY), the peer policy (who may associate,
from where, for what) and optionally TLS, bound to the archive's services."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from arkiv.services import Archive
from dicom_node import peers
from dicom_node.commitment import handle_commitment_request
from dicom_node.contexts import (
    commitment_context,
    query_retrieve_contexts,
    storage_contexts,
    verification_context,
)
from dicom_node.find import handle_find
from dicom_node.handlers import (
    handle_association_request,
    handle_connection_open,
    handle_echo,
    handle_store,
)
from dicom_node.listener import open_listener, server_on
from dicom_node.peers import Caller, PeerPolicy, record_security_alert
from dicom_node.retrieve import handle_get, handle_move
from dicom_node.tls import HandshakeFailure, TlsGate, server_context
from dicom_node.transport import SharedContexts, install

log = logging.getLogger(__name__)

_LISTEN_POLL_SECONDS = 0.02

TLS_CLIENT = "(TLS, before association)"
"""The actor name of an audited TLS handshake failure: no AE title has been sent yet, and this
is longer than any AE title can be, so it never names a real one."""


class DicomNode:
    """Start and stop the DICOM listener of one archive.

    Both ways of starting — `start` (one process) and `start_on` (a socket shared with worker
    processes, as `arkiv serve` runs it) — use the same server class, peer policy and TLS gate,
    so a worker process enforces exactly what the main process does; workers get the settings,
    peers included, through the environment (`Settings.as_environment`).
    """

    def __init__(self, archive: Archive) -> None:
        self._archive = archive
        settings = archive.settings
        self._policy = PeerPolicy(settings)
        context = server_context(settings)  # raises ConfigError on a half or broken TLS setup
        self._tls = (
            TlsGate(context, settings.acse_timeout, self._tls_refused)
            if context is not None
            else None
        )
        ae = AE(ae_title=settings.ae_title)
        ae.maximum_pdu_size = settings.max_pdu_size
        ae.acse_timeout = settings.acse_timeout
        ae.dimse_timeout = settings.dimse_timeout
        ae.network_timeout = settings.network_timeout
        ae.maximum_associations = settings.max_associations
        ae.require_called_aet = True
        ae.require_calling_aet = []
        contexts = [
            verification_context(),
            *storage_contexts(),
            *query_retrieve_contexts(),
            commitment_context(),
        ]
        # The same objects for both: pynetdicom's `supported_contexts` setter copies only the
        # syntaxes and drops the SCU/SCP roles the storage contexts accept for C-GET.
        ae.supported_contexts = contexts
        self._contexts = SharedContexts(contexts)
        install()
        self._ae = ae
        self._server: ThreadedAssociationServer | None = None
        self._stopping = threading.Event()
        self._serving = threading.Event()

    def start(self, host: str, port: int) -> None:
        """Listen on host:port in this process alone."""
        self.start_on(open_listener(host, port))

    def start_on(self, listener: socket.socket) -> None:
        """Accept associations on a socket shared with the worker processes.

        The socket may not be listening yet (the main process listens once every worker is
        ready); a bound socket that does not listen polls as readable, so serving waits for
        it to listen instead of spinning on failed accepts.
        """
        archive, policy = self._archive, self._policy
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, handle_connection_open),
            (evt.EVT_REQUESTED, handle_association_request, [archive, policy]),
            (evt.EVT_C_ECHO, handle_echo, [archive, policy]),
            (evt.EVT_C_STORE, handle_store, [archive, policy]),
            (evt.EVT_C_FIND, handle_find, [archive, policy]),
            (evt.EVT_C_MOVE, handle_move, [archive, policy]),
            (evt.EVT_C_GET, handle_get, [archive, policy]),
            (evt.EVT_N_ACTION, handle_commitment_request, [archive, policy]),
        ]
        server = self._ae.make_server(
            listener.getsockname()[:2],
            contexts=self._contexts,
            evt_handlers=handlers,
            server_class=server_on(listener, self._tls),
        )
        self._server = server
        archive.drain.add_probe("dicom associations", self.open_associations)
        archive.drain.on_drain(self.stop_accepting)

        def serve() -> None:
            while not _is_listening(listener):
                if self._stopping.wait(_LISTEN_POLL_SECONDS):
                    return
            self._serving.set()
            server.serve_forever()

        threading.Thread(target=serve, name="dicom-acceptor", daemon=True).start()
        host, port = listener.getsockname()[:2]
        log.info(
            "DICOM node %s listening on %s:%d (%s; %d configured peers, unknown AEs %s)",
            self._ae.ae_title,
            host,
            port,
            self._transport_description(),
            len(self._archive.settings.peers),
            "refused" if self._archive.settings.dicom_require_known_peers else "admitted",
        )

    def _transport_description(self) -> str:
        if self._tls is None:
            return "plain TCP"
        if self._archive.settings.dicom_tls_ca:
            return "TLS, client certificates required"
        return "TLS"

    def _tls_refused(self, failure: HandshakeFailure) -> None:
        """Audit a client certificate that was missing or not trusted (node authentication);
        other handshake failures (probes, plain-TCP clients) are only logged."""
        if failure.certificate_problem:
            record_security_alert(
                self._archive,
                Caller(ae_title=TLS_CLIENT, address=failure.address),
                peers.NODE_AUTHENTICATION,
                failure.reason,
                {"transport": "tls"},
            )

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the DICOM node is not started")
        return int(self._server.server_address[1])

    def open_associations(self) -> int:
        """Associations of this process still open (a drain waits for them)."""
        return sum(1 for a in self._ae.active_associations if a.is_acceptor)

    def stop_accepting(self) -> None:
        """Drain: take no new association; the open ones carry on in their own threads.

        Shutting the server down shuts the listening socket itself down, which is shared with
        the worker processes, so new connections are refused at once instead of waiting in a
        backlog no one accepts from; the workers are told to stop their loops too.
        """
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            if self._serving.is_set():
                self._server.shutdown()
            else:
                self._server.server_close()
            self._server = None


def _is_listening(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
