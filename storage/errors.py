"""Errors raised by storage, typed so that callers can map them to a protocol answer."""


class StorageError(Exception):
    """Storage could not do what was asked; the message says what and where."""


class BlobNotFound(StorageError):
    """A blob the index points at is missing from the blob store."""


class BlobStoreUnavailable(StorageError):
    """The blob store cannot be written or read at all (disk full, permissions, unreachable)."""


class IndexUnavailable(StorageError):
    """The index database cannot be reached or written."""
