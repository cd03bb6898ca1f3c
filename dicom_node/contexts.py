"""Which presentation contexts the node accepts: Verification and every storage SOP class,
each in every transfer syntax, so objects are kept exactly as the modality encoded them."""

from __future__ import annotations

from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AllStoragePresentationContexts, build_context
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]


def accepted_transfer_syntaxes() -> list[str]:
    """All transfer syntaxes pydicom knows, native first so they win when a sender offers both."""
    native = [
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.1.99",
    ]
    rest = sorted(str(ts) for ts in AllTransferSyntaxes if str(ts) not in native)
    return native + rest


def storage_contexts() -> list[PresentationContext]:
    syntaxes = accepted_transfer_syntaxes()
    return [
        build_context(cx.abstract_syntax, syntaxes)
        for cx in AllStoragePresentationContexts
        if cx.abstract_syntax is not None
    ]


def verification_context() -> PresentationContext:
    return build_context(Verification)
