"""The multi-node cluster of these tests: a head with no CPUs and two one-CPU worker nodes, each its own raylet
(ray.cluster_utils.Cluster). Module-scoped, so each test module gets a fresh cluster."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster
    c = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        workers = [c.add_node(num_cpus=1) for _ in range(2)]
        c.wait_for_nodes()
        yield c, workers
    finally:
        c.shutdown()
