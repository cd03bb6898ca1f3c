"""The service inside a VM, as a rolling restart or a rollout reaches it.

XAPI says whether a VM runs; only the service says whether it works. Before a VM goes down the
operator's tools ask its service to drain (or, for MinIO, whether the cluster keeps quorum
without it), and after it comes back they wait until the service answers as healthy, not merely
until the VM is Running. How to ask depends on what runs inside (`Role.drain` in cluster.toml):

* an arkiv node (`dicom`, `web`): `/readyz`, `/healthz` and the drain endpoints
  (`POST`/`GET /node/drain` with the node's bearer token);
* a MinIO node (`object-store`): `/minio/health/live`, `/minio/health/cluster` and its
  maintenance check (`?maintenance=true` answers 412 when this node going down would cost the
  cluster its write quorum);
* PostgreSQL (`database-primary`, `database-replica`): a connection that answers, and whether it
  is in recovery (a replica) or not (a primary).

Every answer is a `Check`: ok or not, and a sentence for the operator's report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx
import psycopg

from hypervisor.model import Cluster, DrainKind


class GuestServiceError(ValueError):
    """The cluster file does not say how to reach a VM's service."""


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


class GuestService(Protocol):
    @property
    def vm(self) -> str:
        """The VM's name."""

    def ready(self) -> Check:
        """Takes work now."""

    def smoke(self) -> Check:
        """Does real work (beyond saying it is ready), after a restart or an upgrade."""

    def start_drain(self) -> Check:
        """Stop taking new work; open work goes on."""

    def drained(self) -> Check:
        """All open work is done."""

    def may_go_down(self) -> Check:
        """Its peers manage without it for a while."""


def wait_for(
    check: Callable[[], Check],
    seconds: float,
    poll: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Check:
    """Poll `check` until it is ok or `seconds` have passed; the last answer either way."""
    deadline = clock() + seconds
    while True:
        result = check()
        if result.ok or clock() >= deadline:
            return result
        sleep(poll)


@dataclass(frozen=True)
class ArkivNode:
    """An `arkiv serve`, `arkiv web` or `arkiv dicom` node (its HTTP base URL)."""

    vm: str
    url: str
    token: str
    """The nodes' drain token (`GuestServices` refuses an arkiv node without one)."""
    timeout: float = 5.0

    def _get(self, path: str, auth: bool = False) -> httpx.Response | str:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        try:
            return httpx.get(self.url.rstrip("/") + path, headers=headers, timeout=self.timeout)
        except httpx.HTTPError as error:
            return f"{self.url}{path} did not answer: {error or type(error).__name__}"

    def ready(self) -> Check:
        answer = self._get("/readyz")
        if isinstance(answer, str):
            return Check(False, answer)
        return Check(answer.status_code == 200, f"{self.vm} /readyz: {_status_text(answer)}")

    def smoke(self) -> Check:
        for path in ("/healthz", "/readyz", "/metrics"):
            answer = self._get(path)
            if isinstance(answer, str):
                return Check(False, answer)
            if answer.status_code != 200:
                return Check(False, f"{self.vm} {path}: {_status_text(answer)}")
        return Check(True, f"{self.vm} answers /healthz, /readyz and /metrics")

    def start_drain(self) -> Check:
        try:
            answer = httpx.post(
                self.url.rstrip("/") + "/node/drain",
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=self.timeout,
            )
        except httpx.HTTPError as error:
            return Check(False, f"{self.vm} drain did not answer: {error or type(error).__name__}")
        return Check(answer.status_code == 202, f"{self.vm} drain: {_status_text(answer)}")

    def drained(self) -> Check:
        answer = self._get("/node/drain", auth=True)
        if isinstance(answer, str):
            return Check(False, answer)
        if answer.status_code != 200:
            return Check(False, f"{self.vm} drain status: {_status_text(answer)}")
        status = answer.json()
        open_work = {kind: n for kind, n in status.get("in_flight", {}).items() if n}
        if status.get("drained"):
            return Check(True, f"{self.vm} drained")
        return Check(False, f"{self.vm} still has open work: {open_work or 'not draining'}")

    def may_go_down(self) -> Check:
        return Check(True, f"{self.vm}: its peers take new work while it drains")


@dataclass(frozen=True)
class MinioNode:
    """A MinIO server node (its S3 URL)."""

    vm: str
    url: str
    timeout: float = 5.0

    def _probe(self, path: str, what: str) -> Check:
        try:
            answer = httpx.get(self.url.rstrip("/") + path, timeout=self.timeout)
        except httpx.HTTPError as error:
            return Check(False, f"{self.vm} {what} did not answer: {error or type(error).__name__}")
        return Check(answer.status_code == 200, f"{self.vm} {what}: HTTP {answer.status_code}")

    def ready(self) -> Check:
        return self._probe("/minio/health/live", "liveness")

    def smoke(self) -> Check:
        return self._probe("/minio/health/cluster", "cluster write quorum")

    def start_drain(self) -> Check:
        return Check(True, f"{self.vm}: MinIO needs no drain, clients retry on the other nodes")

    def drained(self) -> Check:
        return Check(True, f"{self.vm}: nothing to drain")

    def may_go_down(self) -> Check:
        check = self._probe("/minio/health/cluster?maintenance=true", "maintenance check")
        if check.ok:
            return check
        return Check(False, f"{check.detail}: without this node the cluster would lose quorum")


@dataclass(frozen=True)
class PostgresNode:
    """A PostgreSQL server (its `postgresql://` URL), primary or streaming replica."""

    vm: str
    url: str
    kind: DrainKind
    timeout: float = 5.0

    def _in_recovery(self) -> bool | str:
        try:
            with psycopg.connect(self.url, connect_timeout=max(1, round(self.timeout))) as db:
                row = db.execute("SELECT pg_is_in_recovery()").fetchone()
        except psycopg.Error as error:
            return f"{self.vm} PostgreSQL did not answer: {str(error).strip() or error!r}"
        return bool(row and row[0])

    def ready(self) -> Check:
        state = self._in_recovery()
        if isinstance(state, str):
            return Check(False, state)
        return Check(True, f"{self.vm} answers as a {'replica' if state else 'primary'}")

    def smoke(self) -> Check:
        return self.ready()

    def start_drain(self) -> Check:
        return Check(True, f"{self.vm}: clients reconnect after the restart")

    def drained(self) -> Check:
        return Check(True, f"{self.vm}: nothing to drain")

    def may_go_down(self) -> Check:
        state = self._in_recovery()
        if isinstance(state, str):
            return Check(False, state)
        if state:
            return Check(True, f"{self.vm} is a replica: the primary goes on")
        return Check(False, f"{self.vm} is the primary: every write stops while it is down")


class GuestServices:
    """The `GuestService` of each VM, from the endpoints in the cluster file."""

    def __init__(self, cluster: Cluster, drain_token: str | None, timeout: float = 5.0) -> None:
        self._cluster = cluster
        self._token = drain_token
        self._timeout = timeout

    def for_vm(self, vm_name: str, role_name: str) -> GuestService:
        url = self._cluster.endpoint(vm_name)
        if url is None:
            raise GuestServiceError(
                f"cluster file: no endpoint for {vm_name}; set `endpoint` on role "
                f'{role_name!r} (e.g. "https://{{name}}.arkiv.lan") or [endpoints].{vm_name}'
            )
        kind = self._cluster.role(role_name).drain
        if kind in ("dicom", "web"):
            if not self._token:
                raise GuestServiceError(
                    f"{vm_name} is an arkiv node: draining it needs the nodes' drain token "
                    "(--drain-token-file)"
                )
            return ArkivNode(vm_name, url, self._token, self._timeout)
        if kind == "object-store":
            return MinioNode(vm_name, url, self._timeout)
        return PostgresNode(vm_name, url, kind, self._timeout)


def _status_text(answer: httpx.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return f"HTTP {answer.status_code}"
    reason = body.get("reason") or body.get("status") if isinstance(body, dict) else None
    return f"HTTP {answer.status_code}" + (f" ({reason})" if reason else "")
