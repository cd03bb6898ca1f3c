"""Storage Commitment Push Model SCP (PS3.4 J)."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pynetdicom.events import Event as DimseEvent

from arkiv.services import Archive
from dicom_node.peers import PeerPolicy

PROCESSING_FAILURE = 0x0110


def handle_commitment_request(
    event: DimseEvent, archive: Archive, policy: PeerPolicy
) -> tuple[Dataset, Dataset | None]:
    status = Dataset()
    status.Status = PROCESSING_FAILURE
    return status, None
