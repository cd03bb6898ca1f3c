"""Sessions: login, logout, validation and forced expiry.

Every call but login names its session first; an unknown or expired one is SESSION_INVALID
[handle], which the real SDK answers by logging in again with the saved credentials and
retrying. Expiry is therefore a fault worth injecting, not an edge case.
"""

from __future__ import annotations

from typing import Any

from hypervisor.xapi_sim.errors import ApiError
from hypervisor.xapi_sim.objects import State
from hypervisor.xapi_sim.wire import NULL_REF


def login(state: State, users: dict[str, str], uname: Any, pwd: Any, *_: Any) -> str:
    """SESSION_AUTHENTICATION_FAILED [uname, msg] as xapi_session.ml sends it."""
    if not isinstance(uname, str) or users.get(uname) != pwd:
        raise ApiError("SESSION_AUTHENTICATION_FAILED", uname, "Authentication failure")
    return state.add(
        "session",
        {
            "this_host": next(iter(state.all("host")), NULL_REF),
            "this_user": NULL_REF,
            "last_active": state.now(),
            "pool": False,
            "other_config": {},
            "is_local_superuser": True,
            "subject": NULL_REF,
            "validation_time": state.now(),
            "auth_user_name": uname,
            "originator": str(_[1]) if len(_) > 1 else "",
        },
    )


def validate(state: State, handle: Any) -> str:
    if not isinstance(handle, str) or not state.exists("session", handle):
        raise ApiError("SESSION_INVALID", handle)
    state.get("session", handle)["last_active"] = state.now()
    return handle


def logout(state: State, handle: str) -> str:
    state.remove("session", handle)
    return ""


def expire_all(state: State) -> int:
    """Forget every session (as a toolstack restart does); returns how many there were."""
    count = len(state.all("session"))
    state.all("session").clear()
    return count
