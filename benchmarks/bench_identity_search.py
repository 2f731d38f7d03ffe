"""Identity clustering at 1M identities on faiss (pipeline/planning/pair_search.py), and the candidate recall of its
IVF index against the exact search on a sample.

Synthetic unit centroids in 128 dimensions: random identities, and `--twins` of them with a near twin (another name,
the same person: the twin's centroid is the identity's plus Gaussian noise, cosine ~0.94-0.995 around the 0.96
threshold), some twins chained into clusters of three. Times the whole `cluster_centroids` (index, sharded range
search, float64 check, union) at each size; then, on a seeded sample of `--sample` identities closed under
the twin relation (a twin pair is in it whole), the exact pairs (flat index: every pair with float64 cosine >=
threshold, as the whole matrix gives them) against the pairs the IVF search found, and whether the clusters agree.

    python -m benchmarks.bench_identity_search --identities 100000 1000000 --sample 100000
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from benchmarks.common import PeakRSS, machine

DIM = 128


def planted_centroids(n: int, twins: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 128) unit float64 centroids and, per row, the row it was planted from (itself when not a twin)."""
    rng = np.random.default_rng(seed)
    cent = rng.standard_normal((n, DIM))
    origin = np.arange(n)
    twin_rows = rng.choice(n, int(n * twins), replace=False)
    sources = rng.integers(0, n, len(twin_rows))
    noise = rng.uniform(0.10, 0.35, len(twin_rows))[:, None]  # cosine 1/sqrt(1+s^2): 0.995-0.944
    for k in range(0, len(twin_rows), 65_536):  # a few chain onto a twin: clusters of three
        rows, src = twin_rows[k:k + 65_536], sources[k:k + 65_536]
        cent[rows] = cent[src] + noise[k:k + 65_536] * rng.standard_normal((len(rows), DIM))
        origin[rows] = origin[src]
    return cent / np.linalg.norm(cent, axis=1, keepdims=True), origin


def closed_sample(origin: np.ndarray, size: int, seed: int = 1) -> np.ndarray:
    """About `size` rows, sorted, drawn by planted family (a twin and what it was planted from come together)."""
    rng = np.random.default_rng(seed)
    families = np.unique(origin)
    picked = rng.choice(families, min(len(families), size), replace=False)
    rows = np.flatnonzero(np.isin(origin, picked))
    return np.sort(rows[:size] if len(rows) > size else rows)


def clusters_of_pairs(n: int, pairs: list[tuple[int, int]]) -> list[int]:
    """Each row's cluster (its smallest row) when the pairs are joined: connected components."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(x) for x in range(n)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--identities", type=int, nargs="+", default=[100_000])
    p.add_argument("--sample", type=int, default=100_000, help="identities of the recall sample (0: none)")
    p.add_argument("--twins", type=float, default=0.02, help="share of identities with a planted twin")
    p.add_argument("--threshold", type=float, default=0.96)
    args = p.parse_args(argv)
    from pipeline.planning import clusters, pair_search

    print(f"machine: {machine()}; load {os.getloadavg()[0]:.1f}; faiss threads {pair_search.search_threads()}",
          flush=True)
    for n in args.identities:
        cent, origin = planted_centroids(n, args.twins)
        names = [f"id{k:08d}" for k in range(n)]
        spec = pair_search.SearchSpec.for_size(n)
        captured: dict[str, list[tuple[int, int]]] = {}
        search = clusters.similar_pairs

        def keep(*a, captured=captured, search=search, **k):  # type: ignore[no-untyped-def]
            captured["pairs"] = search(*a, **k)  # the pairs cluster_centroids joined, for the recall below
            return captured["pairs"]
        clusters.similar_pairs = keep  # type: ignore[assignment]
        with PeakRSS() as rss:
            t, cpu = time.perf_counter(), time.process_time()
            found = clusters.cluster_centroids(names, cent, args.threshold)
            took, cpu = time.perf_counter() - t, time.process_time() - cpu
        clusters.similar_pairs = search
        multi = sum(size > 1 for size in found.size_of.values())
        print(f"{n} identities ({spec}): cluster_centroids {took:.1f} s ({cpu:.0f} CPU s), "
              f"peak RSS {rss.peak / 2**20:.0f} MiB, "
              f"{multi} clusters of 2+; load {os.getloadavg()[0]:.1f}", flush=True)
        if not args.sample or spec.kind == "flat":
            continue
        rows = closed_sample(origin, args.sample)
        sub = cent[rows]
        t = time.perf_counter()
        exact = pair_search.similar_pairs(sub, args.threshold, spec=pair_search.SearchSpec("flat"))
        exact_s = time.perf_counter() - t
        exact_set = {(int(rows[a]), int(rows[b])) for a, b in exact}
        ivf = captured["pairs"]
        in_sample = np.zeros(n, bool)
        in_sample[rows] = True
        ivf_set = {(a, b) for a, b in ivf if in_sample[a] and in_sample[b]}
        recall = pair_search.pair_recall(ivf_set, exact_set)
        # the clusters of the sample from the exact pairs and from the IVF pairs found among its rows
        position = {int(r): k for k, r in enumerate(rows)}
        by_exact = clusters_of_pairs(len(rows), exact)
        by_ivf = clusters_of_pairs(len(rows), [(position[a], position[b]) for a, b in ivf_set])
        print(f"  recall sample: {len(rows)} identities, {len(exact_set)} exact pairs (flat, {exact_s:.1f} s); "
              f"IVF search of all {n} (above) found {len(ivf_set & exact_set)} of them, "
              f"{len(ivf_set - exact_set)} others: candidate recall {recall:.4f}; sample clusters identical: "
              f"{by_exact == by_ivf}; load {os.getloadavg()[0]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
