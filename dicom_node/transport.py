"""Transport tuning of pynetdicom for an archive that receives large images all day.

Two costs of pynetdicom's defaults matter here and are removed without changing behaviour:

* Every accepted association deep-copies the supported presentation contexts. Accepting every
  storage SOP class in every transfer syntax makes that ~6,600 objects, about 80 ms of CPU per
  association — more than storing the image when a modality opens one association per image.
  The contexts are only read during negotiation, so `SharedContexts` hands out the same objects.
* `AssociationSocket.recv` reads in 4 KiB pieces and grows a bytearray; a 1.5 MB intra-oral image
  becomes ~400 system calls and copies. `_recv_exactly` reads straight into one buffer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import AssociationSocket


class SharedContexts(list[PresentationContext]):
    """A context list whose deep copy is a shallow one (negotiation never mutates them)."""

    def __init__(self, contexts: Iterable[PresentationContext] = ()) -> None:
        super().__init__(contexts)

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedContexts:
        return SharedContexts(self)


def _recv_exactly(self: AssociationSocket, nr_bytes: int) -> bytearray:
    """Read `nr_bytes`, or fewer if the peer closes the connection (as pynetdicom's own does)."""
    sock = self.socket
    if sock is None:
        return bytearray()
    buffer = bytearray(nr_bytes)
    view = memoryview(buffer)
    received = 0
    while received < nr_bytes:
        count = sock.recv_into(view[received:], nr_bytes - received)
        if count == 0:
            del view
            return buffer[:received]
        received += count
    del view
    return buffer


def install() -> None:
    """Apply the faster receive path to pynetdicom's transport (idempotent)."""
    AssociationSocket.recv = _recv_exactly  # type: ignore[method-assign]
