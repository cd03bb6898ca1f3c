"""The listening socket, opened once and shared by the node's worker processes.

pynetdicom serves each association in a thread of one process, so one Python process uses one
core for the Python part of receiving and ingesting. Several processes accepting on the same,
inherited listening socket let the kernel hand associations to whichever is free — the classic
pre-fork model — without SO_REUSEPORT, which would also let an unrelated process on the same
port silently take a share of the modalities' traffic.
"""

from __future__ import annotations

import socket
import socketserver
import time
from typing import Any

from pynetdicom.transport import ThreadedAssociationServer

from dicom_node.tls import TlsGate

BACKLOG = 128
_BIAS_SECONDS = 0.003
_BIAS_LIMIT = 0.02


def open_listener(host: str, port: int, *, listen: bool = True) -> socket.socket:
    """Bind (and listen, unless told to wait); inheritable, so worker processes can accept on it.

    Binding at once reports a port in use at start; listening can wait until every worker is
    ready, so that a modality is never answered by a node that is still starting.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        if listen:
            sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def start_listening(sock: socket.socket) -> None:
    sock.listen(BACKLOG)


def server_on(
    listener: socket.socket, tls: TlsGate | None = None
) -> type[ThreadedAssociationServer]:
    """A pynetdicom server class that accepts on `listener` instead of binding its own socket,
    and with `tls` speaks DICOM over TLS only.

    pynetdicom's own TLS (`ssl_context`) wraps the socket in the accepting thread and so
    handshakes there: one client that connects and stays silent would stop every other from
    being accepted. Here the handshake runs in the connection's thread, with a deadline.
    """

    class InheritedSocketServer(ThreadedAssociationServer):
        # Connection threads live only until the association's own thread is started (or a
        # TLS handshake fails); a handshake still waiting for its deadline must not hold up
        # stopping the node.
        daemon_threads = True

        def server_bind(self) -> None:
            if self.socket is not None:
                self.socket.close()
            # Non-blocking: a process that loses the race for a connection must not sit in
            # accept() (it could then not be shut down until the next connection arrives).
            listener.setblocking(False)
            self.socket = listener
            self.server_address = listener.getsockname()

        def get_request(self) -> tuple[socket.socket, Any]:
            """Every process wakes for a new connection; the busier ones wait a moment, so
            associations spread over the processes instead of piling onto one."""
            busy = len(self.active_associations)
            if busy:
                time.sleep(min(_BIAS_SECONDS * busy, _BIAS_LIMIT))
            connection, address = listener.accept()
            connection.setblocking(True)
            return connection, address

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            """Secure the connection first when the port speaks TLS; a failed handshake closes
            that connection alone."""
            if tls is not None:
                secured = tls.secure(request, str(client_address[0]))
                if secured is None:
                    return
                request = secured
            super().process_request_thread(request, client_address)

        def server_activate(self) -> None:
            """Already listening."""

        def shutdown(self) -> None:
            """Stop accepting and close; this server is not registered with the AE."""
            socketserver.BaseServer.shutdown(self)
            self.server_close()

    return InheritedSocketServer
