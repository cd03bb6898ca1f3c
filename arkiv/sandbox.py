"""Photo decoding in worker processes, bounded in time and memory (`arkiv.photo_worker`).

The archive keeps a few long-lived workers (starting Python and Pillow for every photo would
cost more than decoding it). Each request has a deadline: a worker that has not answered by then
is killed and replaced, and the upload is refused with a reason. A worker that dies (its memory
limit reached inside a decoder) is replaced the same way. Either way the server goes on.
"""

from __future__ import annotations

import json
import os
import queue
import selectors
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from arkiv.errors import ArchiveUnavailable, InvalidObject


class PhotoRefused(InvalidObject):
    """The photo cannot be taken: too large, not decodable whole, or metadata left behind."""


class DecodingTimedOut(PhotoRefused):
    """Decoding took longer than the archive allows (a crafted or broken file)."""


_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)


_START_SECONDS = 60.0
"""How long a new worker may take to load Python and its decoders (a loaded machine is slow)."""


class _Worker:
    def __init__(self, memory_mb: int) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PROJECT_ROOT, env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "arkiv.photo_worker", str(memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._in = self.process.stdin.fileno()
        self._out = self.process.stdout.fileno()
        os.set_blocking(self._in, False)
        os.set_blocking(self._out, False)
        try:
            self.exchange(b"", time.monotonic() + _START_SECONDS)  # its "ready"
        except (TimeoutError, EOFError) as exc:
            self.kill()
            raise OSError("the photo decoding worker did not start") from exc

    def exchange(self, request: bytes, deadline: float) -> tuple[dict[str, Any], list[bytes]]:
        """Send one request and read the answer; TimeoutError or EOFError otherwise."""
        pending = memoryview(request)
        received = bytearray()
        needed: int | None = None
        with selectors.DefaultSelector() as selector:
            if pending:
                selector.register(self._in, selectors.EVENT_WRITE)
            selector.register(self._out, selectors.EVENT_READ)
            while needed is None or len(received) < needed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                for key, _events in selector.select(remaining):
                    if key.fd == self._in:
                        try:
                            written = os.write(self._in, pending[: 1 << 20])
                        except BrokenPipeError as exc:
                            raise EOFError from exc
                        pending = pending[written:]
                        if not pending:
                            selector.unregister(self._in)
                        continue
                    chunk = os.read(self._out, 1 << 20)
                    if not chunk:
                        raise EOFError
                    received += chunk
                    needed = _frame_length(received)
        header_length = struct.unpack(">I", received[:4])[0]
        header = json.loads(received[4 : 4 + header_length])
        parts, pos = [], 4 + header_length
        for size in header.get("sizes", []):
            parts.append(bytes(received[pos : pos + size]))
            pos += size
        return header, parts

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def _frame_length(received: bytearray) -> int | None:
    """The whole frame's length once its header has arrived."""
    if len(received) < 4:
        return None
    header_length = int(struct.unpack(">I", received[:4])[0])
    if len(received) < 4 + header_length:
        return None
    sizes = json.loads(received[4 : 4 + header_length]).get("sizes", [])
    return 4 + header_length + sum(int(s) for s in sizes)


class PhotoDecoder:
    """A small pool of photo workers, safe to use from many threads."""

    def __init__(self, workers: int, timeout_seconds: float, memory_mb: int) -> None:
        self._timeout = timeout_seconds
        self._memory_mb = memory_mb
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(max(1, workers))
        self._closed = False

    def inspect(
        self, data: bytes, pillow_format: str, max_pixels: int
    ) -> tuple[dict[str, Any], dict[str, bytes]]:
        """Facts read from the photo and its parts (original, thumbnail, web, maybe
        dicom_jpeg); PhotoRefused with the worker's reason when the photo cannot be taken."""
        header = json.dumps(
            {"format": pillow_format, "max_pixels": max_pixels, "sizes": [len(data)]}
        ).encode()
        request = struct.pack(">I", len(header)) + header + data
        with self._slots:
            worker = self._take()
            try:
                answer, parts = worker.exchange(request, time.monotonic() + self._timeout)
            except TimeoutError as exc:
                worker.kill()
                raise DecodingTimedOut(
                    f"decoding the photo took longer than {self._timeout:g} s; it was refused"
                ) from exc
            except (EOFError, OSError) as exc:
                worker.kill()
                raise PhotoRefused(
                    "the photo could not be decoded within the archive's limits "
                    f"({self._memory_mb} MB); it was refused"
                ) from exc
            self._idle.put(worker)
        if not answer.get("ok"):
            raise PhotoRefused(str(answer.get("reason", "the photo cannot be read")))
        return dict(answer["facts"]), dict(zip(answer["names"], parts, strict=True))

    def _take(self) -> _Worker:
        if self._closed:
            raise ArchiveUnavailable("the archive is shutting down")
        try:
            worker = self._idle.get_nowait()
            if worker.process.poll() is None:
                return worker
            worker.kill()
        except queue.Empty:
            pass
        try:
            return _Worker(self._memory_mb)
        except OSError as exc:
            raise ArchiveUnavailable(f"cannot start a photo decoding worker: {exc}") from exc

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().kill()
            except queue.Empty:
                return
