"""The XML-RPC endpoint: SimpleXMLRPCServer with a thread per request, loopback only, paths
/ and /RPC2 (as XAPI), one `_dispatch` that hands every call to the API table."""

from __future__ import annotations

import socketserver
import threading
from typing import Any
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

from hypervisor.xapi_sim.api import Api


class _Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = ("/", "/RPC2")


class _ThreadingServer(socketserver.ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True
    allow_reuse_address = True


class _Dispatcher:
    """What SimpleXMLRPCServer calls for every method name."""

    def __init__(self, api: Api) -> None:
        self._api = api

    def _dispatch(self, method: str, params: tuple[Any, ...]) -> dict[str, Any]:
        return self._api.dispatch(method, params)


class XmlRpcServer:
    """Serves one Api on 127.0.0.1:`port` (0 = a free port) in a background thread."""

    def __init__(self, api: Api, port: int = 0) -> None:
        self._server = _ThreadingServer(
            ("127.0.0.1", port),
            requestHandler=_Handler,
            logRequests=False,
            allow_none=True,
        )
        self._server.register_instance(_Dispatcher(api))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="xapi-sim", daemon=True
        )
        self._thread.start()

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
