"""The one error type of the simulator: an XAPI API error, sent as a Failure envelope.

XAPI never reports API errors as XML-RPC faults; every refusal is `ErrorDescription =
[code, *params]` with all params as strings, so that is the only shape an error may take here.
"""

from __future__ import annotations


class ApiError(Exception):
    """An XAPI error: `code` (the wire string) and its params, already stringified."""

    def __init__(self, code: str, *params: object) -> None:
        self.code = code
        self.params = [str(p) for p in params]
        super().__init__(f"{code} {self.params}")

    @property
    def description(self) -> list[str]:
        """What goes into ErrorDescription (and into a failed task's error_info)."""
        return [self.code, *self.params]
