"""Issue 21: the identity pair search's shards as Ray tasks on a real two-worker-node cluster (ray.cluster_utils),
from a driver of its own. Its own cluster: a driver that ran tasks there and left made the next test's ingest actor
die before it started (tests/cluster/test_multinode.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


# Issue 21: the identity pair search's shards as Ray tasks on this cluster, from a driver of its own (the test
# process already holds the session's local Ray). 2,500 planted centroids, the matrix and flat limits lowered so that
# the IVF index and ten shard tasks run; the pairs must be the whole float64 matrix's.
_PAIR_SEARCH = """
import logging, sys
import numpy as np, ray
from benchmarks.bench_identity_search import planted_centroids
from pipeline.planning import pair_search as ps
from pipeline.planning.ray_features import ray_shards
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
ray.init(address=sys.argv[1], logging_level=logging.WARNING)
cent = planted_centroids(2500, 0.10, seed=7)[0]
pairs = ps.similar_pairs(cent, 0.96, ps.PairSearch(ray_shards, matrix_limit=10, flat_limit=10, shard_rows=250))
a, b = np.nonzero(np.triu(cent @ cent.T >= 0.96, k=1))
print("PAIRS", len(pairs), pairs == sorted(zip(a.tolist(), b.tolist(), strict=True)))
ray.shutdown()
"""


def test_identity_pair_search_shards_run_on_both_worker_nodes(cluster):
    c, _workers = cluster
    res = subprocess.run([sys.executable, "-c", _PAIR_SEARCH, c.address], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert res.returncode == 0, res.stderr[-4000:]
    assert "identity pair search: 10 shards of 2500 centroids on 2 node(s)" in res.stdout, res.stdout[-4000:]
    count, same = next(line.split()[1:] for line in res.stdout.splitlines() if line.startswith("PAIRS "))
    assert same == "True" and int(count) > 100
