"""DIMSE status codes the node answers with (PS3.4 B.2.3 and PS3.7 C), named for what they mean."""

import unicodedata

SUCCESS = 0x0000
DUPLICATE_SOP_INSTANCE = 0x0111
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
NOT_AUTHORIZED = 0x0124
"""Refused: Not Authorized — a general status of PS3.7 Annex C that C-STORE (PS3.7 9.1.1.1.9) and
the other DIMSE services may return: the calling AE may not invoke this operation here, e.g. a
configured peer without the "store" service. Not 0xA7xx (out of resources): that invites the
sender to retry."""

ERROR_COMMENT_LIMIT = 64
"""Error Comment (0000,0902) is LO: 64 characters at most."""


_ASCII_FOR = {"×": "x", "…": "...", "æ": "ae", "ø": "o", "å": "a", "Æ": "AE", "Ø": "O", "Å": "A"}


def comment(message: str) -> str:
    """Fit a message into Error Comment: plain ASCII (the command set has no character set, PS3.7
    6.3.1) and 64 characters; the full text goes to the log and the audit event."""
    text = " ".join(message.split())
    for char, plain in _ASCII_FOR.items():
        text = text.replace(char, plain)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "replace").decode("ascii")
    if len(text) <= ERROR_COMMENT_LIMIT:
        return text
    return text[: ERROR_COMMENT_LIMIT - 3] + "..."
