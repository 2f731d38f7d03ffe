"""The same-person threshold the planner clusters identities with (pairing.same_person_similarity), resolved for
one run: an explicit value, or calibrated from the run's sources (qc/same_person.py), or no merging.

clusters.py only receives the value (None: merge nothing); this module decides it and says why (run.json
`identity_calibration.same_person`, the identity_clusters rows' `threshold`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from manifests.integrity import read_checked_shard, read_shard
from manifests.schemas import SOURCES
from manifests.store import ManifestStore
from pipeline.planning.config import PairingConfig
from pipeline.planning.inputs import PlanInputs, fixed_bytes
from qc.identity_calibration import source_embeddings
from qc.same_person import MAX_IDENTITIES, SamePersonCalibration, calibrate_same_person, sampled_names


@dataclass(frozen=True)
class SamePersonThreshold:
    value: float | None  # the centroid cosine at which identities merge; None: nothing is merged
    source: str  # "config", "calibrated", "overlap" (calibrated: no separating value), "uncalibrated", "off"
    calibration: SamePersonCalibration | None

    def record(self) -> dict:
        """What run.json records."""
        cal = self.calibration
        if self.source == "off":
            note = "identities are NOT merged: pairing.merge_same_person is false"
        elif self.source == "config":
            note = f"identities merged at centroid similarity >= {self.value} (pairing.same_person_similarity)"
        else:
            note = cal.describe() if cal else "identities are NOT merged: no sources"
        return dict(same_person_similarity=self.value, source=self.source, merged=self.value is not None,
                    calibration=cal.to_dict() if cal else None, note=note)


def resolve_same_person(pairing: PairingConfig, identities: list[str] | np.ndarray, embeddings: np.ndarray,
                        corpus_identities: int | None = None) -> SamePersonThreshold:
    """pairing.same_person_similarity for these sources (rows in input order: the halves alternate photos)."""
    if not pairing.merge_same_person:
        return SamePersonThreshold(None, "off", None)
    if pairing.same_person_similarity is not None:
        return SamePersonThreshold(pairing.same_person_similarity, "config", None)
    if not len(identities):
        return SamePersonThreshold(None, "uncalibrated", None)
    cal = calibrate_same_person(identities, embeddings, pairing.same_person_frr, pairing.same_person_false_merges,
                                corpus_identities=corpus_identities)
    source = "calibrated" if cal.separable else "uncalibrated" if cal.reason else "overlap"
    return SamePersonThreshold(cal.threshold, source, cal)


def calibrated(pairing: PairingConfig) -> bool:
    """Whether the same-person threshold is calibrated on the run's sources (else it is configured, or off)."""
    return pairing.merge_same_person and pairing.same_person_similarity is None


def resolve_from_sources(pairing: PairingConfig, sources: pa.Table) -> SamePersonThreshold:
    """resolve_same_person over a sources table (identity, embedding, input_key, file_sha256), rows in input_key
    order, every copy of a file found in two places left out (the planner keeps one of them, in its identity). On a
    large corpus only the identities calibration samples are read into memory (qc/same_person.py)."""
    if not calibrated(pairing) or sources.num_rows == 0:
        return resolve_same_person(pairing, [], np.zeros((0, 0)))
    if "file_sha256" in sources.column_names:  # a file in two folders (dedup keeps one): neither copy calibrates
        counts = pc.value_counts(sources.column("file_sha256"))
        repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
        if len(repeated):
            sources = sources.filter(pc.invert(pc.is_in(sources.column("file_sha256"), repeated)))
    n = pc.count_distinct(sources.column("identity")).as_py()
    if n > MAX_IDENTITIES:  # calibrate on a sample of identities; the bound still counts every pair of the corpus
        keep = sampled_names(pc.unique(sources.column("identity")).to_pylist(), MAX_IDENTITIES)
        sources = sources.filter(pc.is_in(sources.column("identity"), pa.array(keep)))
    order = pc.sort_indices(sources, [("identity", "ascending"), ("input_key", "ascending")]) \
        if "input_key" in sources.column_names else pa.array(np.arange(sources.num_rows))
    sources = sources.take(order)
    return resolve_same_person(pairing, sources.column("identity").to_pylist(), source_embeddings(sources), n)


@dataclass(frozen=True)
class CalibrationSample:
    """The source rows the calibration reads the embeddings of (sorted by identity, then input_key), their
    identities, and how many identities the corpus has (what the bound counts)."""

    rows: np.ndarray
    identities: list[str]
    corpus_identities: int


def calibration_sample(inputs: PlanInputs) -> CalibrationSample:
    """resolve_from_sources' sample over the planner's compact inputs: rows of files that occur once, of at most
    MAX_IDENTITIES identities (sampled_names), in (identity, input_key) order."""
    rows = np.flatnonzero(~repeated_files(inputs.sha))  # a file in two folders: neither copy calibrates
    present = np.unique(inputs.identity_code[rows])  # codes in name order (identity_names is sorted)
    if len(present) > MAX_IDENTITIES:  # as resolve_from_sources: a sample of identities, the bound counts all
        chosen = set(sampled_names([inputs.identity_names[c] for c in present.tolist()], MAX_IDENTITIES))
        keep = np.array([inputs.identity_names[c] in chosen for c in present.tolist()])
        rows = rows[np.isin(inputs.identity_code[rows], present[keep])]
    rows = rows[np.lexsort((inputs.key_rank[rows], inputs.identity_code[rows]))]  # (identity, input_key), stable
    identities = [inputs.identity_names[c] for c in inputs.identity_code[rows].tolist()]
    return CalibrationSample(rows, identities, len(present))


def resolve_from_sample(pairing: PairingConfig, sample: CalibrationSample,
                        embeddings: np.ndarray) -> SamePersonThreshold:
    """The threshold from a calibration sample and the (k, d) float64 embeddings of its rows, in its order."""
    return resolve_same_person(pairing, sample.identities, embeddings if len(sample.rows) else np.zeros((0, 0)),
                               sample.corpus_identities)


def resolve_from_inputs(pairing: PairingConfig, inputs: PlanInputs,
                        embeddings: Callable[[np.ndarray], np.ndarray]) -> SamePersonThreshold:
    """resolve_from_sources over the planner's compact inputs (rows in the committed order), `embeddings(rows)` the
    (k, d) float64 embeddings of source rows: the same value and calibration, but only the sampled identities'
    embeddings are ever read (ray_planner.py reads them with the embedding blocks)."""
    if not calibrated(pairing) or not len(inputs):
        return resolve_same_person(pairing, [], np.zeros((0, 0)))
    sample = calibration_sample(inputs)
    return resolve_from_sample(pairing, sample, embeddings(sample.rows) if len(sample.rows) else np.zeros((0, 0)))


def repeated_files(sha: np.ndarray) -> np.ndarray:
    """Per row, whether its file_sha256 (fixed-width bytes) occurs on another row too: rows are first grouped by a
    64-bit key of the digest's first 16 bytes, then only rows whose key repeats are compared whole (exact)."""
    n = len(sha)
    if n < 2:
        return np.zeros(n, bool)
    key = _digest_keys(sha)
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    maybe = np.flatnonzero(counts[inverse] > 1)
    out = np.zeros(n, bool)
    if len(maybe):
        _, inv, cnt = np.unique(sha[maybe], return_inverse=True, return_counts=True)
        out[maybe] = cnt[inv] > 1
    return out


def resolve_from_store(pairing: PairingConfig, store: ManifestStore) -> SamePersonThreshold:
    """The run's same-person threshold from its committed sources, as resolve_from_sources gives it over the whole
    table, reading a file at a time: the identities and a 64-bit key of each digest first, the digests whose key
    repeats, then the rows of the sampled identities (memory: ~12 bytes per source, and the sample)."""
    if not calibrated(pairing):
        return resolve_same_person(pairing, [], np.zeros((0, 0)))
    files, digests = store.committed_files("sources"), store.file_digests()
    code_of: dict[str, int] = {}
    codes, keys, first = [], [], [0]
    for path in files:  # each file checked against its marker's sha256 once, as read_table does
        table = read_checked_shard(store.fs, path, digests.get(path), ["identity", "file_sha256"], SOURCES)
        encoded = table.column("identity").combine_chunks().dictionary_encode()
        mapping = np.array([code_of.setdefault(x, len(code_of)) for x in encoded.dictionary.to_pylist()], np.int64)
        codes.append(mapping[encoded.indices.to_numpy(zero_copy_only=False)] if len(table) else np.zeros(0, np.int64))
        keys.append(_digest_keys(fixed_bytes(table.column("file_sha256").combine_chunks())))
        first.append(first[-1] + table.num_rows)
    if first[-1] == 0:
        return resolve_same_person(pairing, [], np.zeros((0, 0)))
    code, key = np.concatenate(codes), np.concatenate(keys)
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    maybe = np.flatnonzero(counts[inverse] > 1)
    repeated = np.zeros(len(code), bool)
    if len(maybe):  # the digests of the rows whose key repeats, compared whole
        _, inv, cnt = np.unique(_digests(store, files, first, maybe), return_inverse=True, return_counts=True)
        repeated[maybe] = cnt[inv] > 1
    names = np.array(sorted(code_of, key=code_of.__getitem__), dtype=object)
    present = np.unique(code[~repeated])
    chosen = present
    if len(present) > MAX_IDENTITIES:  # as resolve_from_sources: a sample of identities, the bound counts all
        sample = set(sampled_names(names[present].tolist(), MAX_IDENTITIES))
        chosen = present[np.array([n in sample for n in names[present].tolist()])]
    rows = np.flatnonzero(~repeated & np.isin(code, chosen))
    parts = [read_shard(store.fs, files[f], ["identity", "input_key", "embedding"], SOURCES)
             .take(pa.array(rows[(rows >= first[f]) & (rows < first[f + 1])] - first[f]))
             for f in range(len(files)) if np.any((rows >= first[f]) & (rows < first[f + 1]))]
    sources = pa.concat_tables(parts) if parts else SOURCES.empty_table().select(["identity", "input_key",
                                                                                   "embedding"])
    sources = sources.take(pc.sort_indices(sources, [("identity", "ascending"), ("input_key", "ascending")]))
    return resolve_same_person(pairing, sources.column("identity").to_pylist(), source_embeddings(sources),
                               len(present))


def _digest_keys(sha: np.ndarray) -> np.ndarray:
    """A 64-bit key per file_sha256 (fixed-width bytes) from its first 16 bytes: equal digests, equal keys."""
    raw = np.ascontiguousarray(sha).view(np.uint8).reshape(len(sha), -1) if sha.dtype.itemsize \
        else np.zeros((len(sha), 0), np.uint8)
    head = np.zeros((len(sha), 16), np.uint8)
    head[:, :min(16, raw.shape[1])] = raw[:, :16]
    words = head.view(np.uint64)
    return words[:, 0] ^ (words[:, 1] * np.uint64(0x9E3779B97F4A7C15))


def _digests(store: ManifestStore, files: list[str], first: list[int], rows: np.ndarray) -> np.ndarray:
    """file_sha256 of the (sorted) source rows `rows`, as Python strings."""
    out: list[str] = []
    for f, path in enumerate(files):
        mine = rows[(rows >= first[f]) & (rows < first[f + 1])] - first[f]
        if len(mine):
            out.extend(read_shard(store.fs, path, ["file_sha256"], SOURCES).column("file_sha256")
                       .take(pa.array(mine)).to_pylist())
    return np.array(out, dtype=object)


def resolved_pairing(pairing: PairingConfig, threshold: SamePersonThreshold) -> PairingConfig:
    """The pairing section the planner runs with: same_person_similarity is the resolved value (None: no merge)."""
    return pairing.model_copy(update={"same_person_similarity": threshold.value})
