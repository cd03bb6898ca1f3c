"""Marshalling between the object store's Python values and XAPI's XML-RPC wire format.

XAPI sends every 64-bit int as a decimal string (xmlrpc.client cannot even carry ints above
2^31-1), void as "", datetimes as `dateTime.iso8601`, and wraps every answer in a
Success/Failure envelope. The store keeps native ints and datetimes; only this module decides
how they look on the wire, so nothing else can get it wrong.
"""

from __future__ import annotations

import xmlrpc.client
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape

from hypervisor.xapi_sim.errors import ApiError

NULL_REF = "OpaqueRef:NULL"


def marshal(value: Any) -> Any:
    """A store value as XAPI puts it on the wire (bool before int: bool is an int in Python)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float | str):
        return value
    if isinstance(value, datetime):
        return xmlrpc.client.DateTime(value.strftime("%Y%m%dT%H:%M:%SZ"))
    if isinstance(value, dict):
        return {str(k): marshal(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [marshal(v) for v in value]
    if value is None:
        return ""
    raise TypeError(f"cannot marshal {type(value).__name__}")


def success(value: Any) -> dict[str, Any]:
    """The Success envelope around a marshalled value."""
    return {"Status": "Success", "Value": marshal(value)}


def failure(error: ApiError) -> dict[str, Any]:
    """The Failure envelope: ErrorDescription is [code, *params], all strings."""
    return {"Status": "Failure", "ErrorDescription": error.description}


def task_result(value: Any) -> str:
    """A task's `result` field: the XML-RPC serialisation of the value (`<value>…</value>`),
    as XAPI's TaskHelper stores it; a void result stays ""."""
    wired = marshal(value)
    if wired == "":
        return ""
    if isinstance(wired, str):
        return f"<value>{escape(wired)}</value>"
    body = xmlrpc.client.dumps((wired,), allow_none=False)
    start, end = body.index("<value>"), body.rindex("</value>") + len("</value>")
    return body[start:end]


def as_int(value: Any, name: str) -> int:
    """An int64 argument: clients send them as strings, as XAPI does; ints are accepted too."""
    if isinstance(value, bool):
        raise ApiError("FIELD_TYPE_ERROR", name)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ApiError("FIELD_TYPE_ERROR", name) from None
    raise ApiError("FIELD_TYPE_ERROR", name)


def as_bool(value: Any, name: str) -> bool:
    """A bool argument (`<boolean>`; the strings "true"/"false" are tolerated)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ApiError("FIELD_TYPE_ERROR", name)


def as_str(value: Any, name: str) -> str:
    """A string or ref argument."""
    if not isinstance(value, str):
        raise ApiError("FIELD_TYPE_ERROR", name)
    return value


def as_map(value: Any, name: str) -> dict[str, Any]:
    """A map argument (an XML-RPC struct)."""
    if not isinstance(value, dict):
        raise ApiError("FIELD_TYPE_ERROR", name)
    return value


def as_list(value: Any, name: str) -> list[Any]:
    """A set argument (an XML-RPC array)."""
    if not isinstance(value, list):
        raise ApiError("FIELD_TYPE_ERROR", name)
    return value
