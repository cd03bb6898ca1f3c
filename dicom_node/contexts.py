"""Which presentation contexts the node accepts.

Storage: every storage SOP class in every transfer syntax, so objects are kept exactly as the
modality encoded them; the same contexts accept the SCP role a C-GET requestor proposes for them
(PS3.7 D.3.3.4), since over C-GET the archive sends its objects back on the requestor's
association. Query/retrieve: the Patient Root and Study Root models for C-FIND, C-MOVE and
C-GET. Storage Commitment Push Model for modalities that ask whether their images are safe.
"""

from __future__ import annotations

from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AllStoragePresentationContexts, build_context
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

NATIVE_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
)
"""Explicit VR little endian, implicit VR little endian, explicit big endian, deflated."""

QUERY_RETRIEVE_MODELS = (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
)


def accepted_transfer_syntaxes() -> list[str]:
    """All transfer syntaxes pydicom knows, native first so they win when a sender offers both."""
    native = list(NATIVE_TRANSFER_SYNTAXES)
    rest = sorted(str(ts) for ts in AllTransferSyntaxes if str(ts) not in native)
    return native + rest


def storage_contexts() -> list[PresentationContext]:
    """Storage contexts that accept both roles: a modality storing (archive as SCP) and a C-GET
    requestor receiving (archive as SCU, the requestor as SCP)."""
    syntaxes = accepted_transfer_syntaxes()
    contexts = []
    for cx in AllStoragePresentationContexts:
        if cx.abstract_syntax is None:
            continue
        context = build_context(cx.abstract_syntax, syntaxes)
        context.scu_role = True
        context.scp_role = True
        contexts.append(context)
    return contexts


def query_retrieve_contexts() -> list[PresentationContext]:
    return [
        build_context(model, list(NATIVE_TRANSFER_SYNTAXES[:2])) for model in QUERY_RETRIEVE_MODELS
    ]


def commitment_context() -> PresentationContext:
    return build_context(StorageCommitmentPushModel, list(NATIVE_TRANSFER_SYNTAXES[:2]))


def verification_context() -> PresentationContext:
    return build_context(Verification)
