"""Errors of the archive's services, typed so that each adapter can answer in its own protocol.

Every error carries a message a user can act on; the DICOM node turns them into a failure status
with that message as Error Comment, the web app into an HTTP status with a JSON `reason`.
"""


class ArkivError(Exception):
    """Base of all errors the services raise on purpose."""


class InvalidObject(ArkivError):
    """The object is malformed or incomplete; nothing was stored."""


class UnsupportedObject(ArkivError):
    """The object is well formed but of a kind the archive does not take (unknown SOP class)."""


class ArchiveUnavailable(ArkivError):
    """The index or blob store cannot be written; the object was not accepted."""


class AuditUnavailable(ArkivError):
    """The audit event could not be written, so the action it records did not happen."""


class NotFound(ArkivError):
    """No such patient, study, series or instance that this user may see."""


class Forbidden(ArkivError):
    """The user is authenticated but their role or county does not allow this."""


class AuthenticationFailed(ArkivError):
    """Wrong user name or password (deliberately not saying which)."""


class TooManyAttempts(ArkivError):
    """Too many failed sign-ins; the account or address must wait before trying again."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidQuery(ArkivError):
    """A search key has a value the archive cannot interpret."""


class BreakGlassRequired(Forbidden):
    """The patient's images belong to another county; the user may ask for time-limited access
    with a reason (break the glass)."""

    def __init__(
        self, message: str, counties: tuple[str, ...], patient_key: int | None = None
    ) -> None:
        super().__init__(message)
        self.counties = counties
        self.patient_key = patient_key
        """The patient's opaque key, so a page can offer the grant without the national ID."""
