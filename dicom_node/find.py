"""C-FIND SCP (PS3.4 C.4.1): Patient Root and Study Root queries at every level."""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.dataset import Dataset
from pynetdicom.events import Event as DimseEvent

from arkiv.services import Archive
from dicom_node.peers import PeerPolicy

UNABLE_TO_PROCESS = 0xC000


def handle_find(
    event: DimseEvent, archive: Archive, policy: PeerPolicy
) -> Iterator[tuple[int, Dataset | None]]:
    yield UNABLE_TO_PROCESS, None
