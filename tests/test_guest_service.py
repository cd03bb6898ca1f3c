"""What a restart asks the services inside the VMs, against the real servers: a four-node MinIO
cluster lets one node go down and, with one already down, refuses a second (its write quorum);
PostgreSQL says whether it is the primary, which is not to be restarted without a switchover;
and a cluster file without an endpoint or drain token is refused with what to set."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hypervisor.guest_service import GuestServiceError, GuestServices, MinioNode, PostgresNode
from hypervisor.model import cluster_from_dict
from tests.servers import MinioServer, PostgresServer


@pytest.fixture
def minio_cluster() -> Iterator[MinioServer]:
    cluster = MinioServer.start(nodes=4, drives=1)
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


def test_minio_lets_one_node_go_but_not_a_second(minio_cluster: MinioServer) -> None:
    nodes = [
        MinioNode(f"minio-{n}", f"http://{node.endpoint}")
        for n, node in enumerate(minio_cluster.nodes, 1)
    ]
    assert all(node.ready().ok for node in nodes)
    assert nodes[0].smoke().ok, nodes[0].smoke().detail
    assert nodes[1].may_go_down().ok, nodes[1].may_go_down().detail
    minio_cluster.nodes[0].kill()  # one node already down (rebooting, or its blade failed)
    assert not nodes[0].ready().ok
    refused = nodes[1].may_go_down()
    assert not refused.ok and "would lose quorum" in refused.detail, refused.detail


def test_postgres_says_it_is_the_primary(postgres_server: PostgresServer) -> None:
    node = PostgresNode("pg-primary-1", postgres_server.dsn("postgres"), "database-primary")
    assert node.ready().ok
    assert node.ready().detail == "pg-primary-1 answers as a primary"
    refused = node.may_go_down()
    assert not refused.ok and "every write stops" in refused.detail
    gone = PostgresNode("pg-replica-1", "postgresql://arkiv@127.0.0.1:9/x", "database-replica")
    assert not gone.ready().ok and "did not answer" in gone.ready().detail


def test_a_vm_without_endpoint_or_token_is_refused_with_what_to_set() -> None:
    cluster = cluster_from_dict(
        {
            "host": [{"name": "blade1", "memory_gib": 64, "cpus": 8}],
            "role": [
                {"name": "web", "count": 1, "memory_gib": 8, "vcpus": 2, "drain": "web"},
                {
                    "name": "db",
                    "count": 1,
                    "memory_gib": 8,
                    "vcpus": 2,
                    "drain": "database-primary",
                    "endpoint": "postgresql://{name}.lan/postgres",
                },
            ],
        }
    )
    with pytest.raises(GuestServiceError, match=r"no endpoint for web-1; set `endpoint`"):
        GuestServices(cluster, "token").for_vm("web-1", "web")
    with_url = cluster_from_dict(
        {
            "host": [{"name": "blade1", "memory_gib": 64, "cpus": 8}],
            "role": [{"name": "web", "count": 1, "memory_gib": 8, "vcpus": 2, "drain": "web"}],
            "endpoints": {"web-1": "http://127.0.0.1:9"},
        }
    )
    with pytest.raises(GuestServiceError, match="--drain-token-file"):
        GuestServices(with_url, None).for_vm("web-1", "web")
    db = GuestServices(cluster, None).for_vm("db-1", "db")
    assert isinstance(db, PostgresNode) and db.url == "postgresql://db-1.lan/postgres"
