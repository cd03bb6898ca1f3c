"""Outgoing C-STORE sub-operations: which contexts to propose, what to send on what was accepted.

A retrieved object should arrive as it was stored, so for each SOP class the stored transfer
syntaxes are proposed first, each in a context of its own, then Explicit and Implicit VR Little
Endian as separate contexts, the fallbacks every storage SCP accepts. An object goes out in its
stored syntax when that was accepted, else transcoded (`arkiv.transcoding`) to an accepted one,
else not at all: that sub-operation fails.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context

from arkiv.transcoding import TranscodeError, can_transcode, transcode
from storage.records import StoredInstance

FALLBACK_SYNTAXES = (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian))
MAX_CONTEXTS = 128
"""PS3.8 9.3.2.2: presentation context IDs are odd numbers 1-255."""

UNSENDABLE_SOP_CLASS = "1.2.826.0.1.3680043.10.1453.9.9"
"""A SOP class never proposed: a sub-operation whose object cannot be sent (damaged, no
acceptable syntax) is handed to pynetdicom under it, so pynetdicom counts it as failed and lists
its SOP Instance UID in the Failed SOP Instance UID List, without a byte being sent."""


class NotSendable(Exception):
    """This object cannot go over this association; the message says why."""


@dataclass(frozen=True)
class Outgoing:
    """One object ready for a C-STORE sub-operation."""

    dataset: Dataset
    transcoded: bool


def proposed_contexts(instances: Iterable[StoredInstance]) -> list[PresentationContext]:
    """One context per (SOP class, stored syntax), plus the two uncompressed fallbacks per class.

    More SOP classes than 128 contexts allow are cut: objects of a class left out fail.
    """
    wanted: dict[str, list[str]] = {}
    for instance in instances:
        syntaxes = wanted.setdefault(instance.sop_class_uid, [])
        if instance.transfer_syntax_uid not in syntaxes:
            syntaxes.append(instance.transfer_syntax_uid)
    contexts: list[PresentationContext] = []
    for sop_class, stored in wanted.items():
        syntaxes = stored + [s for s in FALLBACK_SYNTAXES if s not in stored]
        for syntax in syntaxes:
            if len(contexts) < MAX_CONTEXTS:
                contexts.append(build_context(sop_class, syntax))
    return contexts


def accepted_syntaxes(assoc: Association, sop_class: str, as_scp: bool = False) -> list[str]:
    """Transfer syntaxes the peer accepted for this SOP class; with `as_scp`, only contexts
    where the peer took the SCP role, i.e. the archive may act as SCU on them (C-GET: the
    caller stores what the archive sends over its own association)."""
    found: list[str] = []
    for cx in assoc.accepted_contexts:
        if str(cx.abstract_syntax) != sop_class or not cx.transfer_syntax:
            continue
        if as_scp and not cx.as_scu:
            continue
        found.append(str(cx.transfer_syntax[0]))
    return found


def prepare(data: bytes, instance: StoredInstance, accepted: list[str]) -> Outgoing:
    """The verified stored bytes as a dataset in the stored syntax if the peer accepted it, else
    transcoded to the first accepted syntax that can be reached."""
    stored = instance.transfer_syntax_uid
    if stored in accepted:
        return Outgoing(dcmread(BytesIO(data)), transcoded=False)
    for target in accepted:
        if not can_transcode(stored, target):
            continue
        try:
            return Outgoing(dcmread(BytesIO(transcode(data, target))), transcoded=True)
        except TranscodeError:
            continue
    if not accepted:
        raise NotSendable(
            f"the receiver accepted no context for SOP class {instance.sop_class_uid}"
        )
    raise NotSendable(
        f"instance {instance.sop_uid} in {stored} cannot be sent in any accepted syntax "
        f"({', '.join(accepted)})"
    )


def unsendable(instance: StoredInstance) -> Dataset:
    """A stand-in that pynetdicom counts as a failed sub-operation for `instance` (see
    `UNSENDABLE_SOP_CLASS`)."""
    ds = Dataset()
    ds.SOPClassUID = UNSENDABLE_SOP_CLASS
    ds.SOPInstanceUID = instance.sop_uid
    return ds
