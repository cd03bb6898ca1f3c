"""C-MOVE and C-GET SCP (PS3.4 C.4.2, C.4.3)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pynetdicom.events import Event as DimseEvent

from arkiv.services import Archive
from dicom_node.peers import PeerPolicy

UNABLE_TO_PROCESS = 0xC000


def handle_move(event: DimseEvent, archive: Archive, policy: PeerPolicy) -> Iterator[Any]:
    yield None, None


def handle_get(event: DimseEvent, archive: Archive, policy: PeerPolicy) -> Iterator[Any]:
    yield 0
    yield UNABLE_TO_PROCESS, None
