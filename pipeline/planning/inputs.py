"""What the planner decides from: compact per-source arrays (PlanInputs), no Python object per source.

The driver reads only PLANNER_COLUMNS of the sources, batch by batch; the big columns (landmarks, embeddings,
descriptors of every image, paths) stay where they are (features.py, ray_features.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.planning.rules import with_predicted_labels
from stages.face.expression import DESCRIPTOR_NAMES

# What the planner itself reads, compactly (PlanInputs); expression_probs too when the sources have it.
PLANNER_COLUMNS = ["input_key", "identity", "expression", "path", "file_sha256", "expression_descriptor"]


def _descriptors(column: pa.ChunkedArray, dtype: type = np.float64) -> np.ndarray:
    """The expression descriptors as an (n, D) matrix (float32 values, widened exactly when dtype is float64)."""
    n = len(column)
    if n == 0:
        return np.zeros((0, len(DESCRIPTOR_NAMES)), dtype)
    flat = pa.concat_arrays([c for c in column.chunks]) if column.num_chunks != 1 else column.chunk(0)
    lengths = pc.list_value_length(flat).to_numpy(zero_copy_only=False)
    if flat.null_count or (lengths != len(DESCRIPTOR_NAMES)).any():
        bad = int(np.flatnonzero(np.isnan(lengths.astype(float)) | (lengths != len(DESCRIPTOR_NAMES)))[0])
        raise ValueError(f"descriptors must have length {len(DESCRIPTOR_NAMES)}, got {lengths[bad]} at row {bad}")
    values = pc.list_flatten(flat).to_numpy(zero_copy_only=False).astype(dtype)
    return values.reshape(n, len(DESCRIPTOR_NAMES))


def _concat(chunks: list[pa.Array], kind: pa.DataType) -> pa.Array:
    return pa.concat_arrays([c.cast(kind) for c in chunks]) if chunks else pa.array([], kind)


def fixed_bytes(array: pa.Array) -> np.ndarray:
    """A string column as numpy fixed-width bytes (UTF-8), from Arrow's buffers when all values have one length."""
    n = len(array)
    if array.type != pa.string():
        array = array.cast(pa.string())  # int32 offsets below
    lengths = pc.binary_length(array).to_numpy(zero_copy_only=False) if n else np.zeros(0)
    if n and not array.null_count and lengths.min() == lengths.max() > 0:
        width = int(lengths[0])
        offsets = np.frombuffer(array.buffers()[1], np.int32)[array.offset:array.offset + n + 1]
        data = np.frombuffer(array.buffers()[2], np.uint8)[offsets[0]:offsets[-1]]
        return data.view(f"S{width}").copy()
    return np.array([x.encode() for x in array.to_pylist()], np.bytes_)


class _Filler:
    """numpy rows added batch by batch: into one preallocated array when the total is known, else concatenated."""

    def __init__(self, rows: int | None) -> None:
        self.rows, self.at = rows, 0
        self.parts: list[np.ndarray] = []
        self.array: np.ndarray | None = None

    def add(self, values: np.ndarray) -> None:
        if self.rows is not None and self.array is None and not self.parts:
            self.array = np.empty((self.rows, *values.shape[1:]), values.dtype)
        if self.array is not None and (values.dtype.itemsize > self.array.dtype.itemsize
                                       or self.at + len(values) > len(self.array)):
            self.parts, self.array = [self.array[:self.at]], None  # wider strings, or more rows than announced
        if self.array is None:
            self.parts.append(values)
        else:
            self.array[self.at:self.at + len(values)] = values
        self.at += len(values)

    def result(self, empty: np.ndarray) -> np.ndarray:
        if self.array is not None:
            return self.array[:self.at] if self.at < len(self.array) else self.array
        return np.concatenate(self.parts) if self.parts else empty


@dataclass
class PlanInputs:
    """What the planner decides from, per source row (in the order read), a few dozen bytes each: no Python
    object per row. Strings only pairing needs whole (input_key, path: refusals) stay in Arrow."""

    keys: pa.Array  # input_key
    paths: pa.Array  # path
    key_rank: np.ndarray  # dense rank of input_key (orders exactly as the strings do)
    identity_code: np.ndarray  # index into identity_names
    identity_names: list[str]  # sorted
    label: np.ndarray  # pairing expression label (the corpus's, else the expression net's): 0 none, > 0 a label
    sha: np.ndarray  # file_sha256, fixed-width bytes
    desc: np.ndarray  # (n, D) float32 expression descriptors
    label_codes: dict[str, int] = field(default_factory=dict)  # pairing label -> its code in `label`

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def from_batches(cls, batches: Iterable[pa.RecordBatch | pa.Table], rows: int | None = None) -> PlanInputs:
        """From record batches (or tables) with PLANNER_COLUMNS (and expression_probs when the sources have it),
        read one after another: only the compact columns of every batch are kept (`rows`, the total when known,
        lets them be filled in place instead of concatenated at the end)."""
        return cls.from_parts([InputsPart.of_batches(batches, rows)])

    @classmethod
    def from_parts(cls, parts: Sequence[InputsPart]) -> PlanInputs:
        """The inputs of consecutive row ranges (each read on its own, e.g. by a task), in order: the same
        PlanInputs as from_batches over all their rows (labels coded by first appearance, ranks over every key)."""
        codes: dict[str, int] = {}
        labels = []
        for part in parts:  # the parts' label codes renumbered in order: first appearance over all rows
            mapping = np.array([0] + [codes.setdefault(x, len(codes) + 1) for x in part.label_names], np.int32)
            labels.append(mapping[part.label])
        key_array = _concat([p.keys for p in parts], pa.string())
        ident = _concat([p.idents for p in parts], pa.string())
        names = sorted(pc.unique(ident).to_pylist())
        code = pc.index_in(ident, value_set=pa.array(names, pa.string())).to_numpy(zero_copy_only=False)
        del ident
        rank = (pc.rank(key_array, tiebreaker="dense").to_numpy() if len(key_array) else np.zeros(0, np.uint64))
        one = len(parts) == 1  # one part: its arrays as they are (no copy)
        return cls(key_array, _concat([p.paths for p in parts], pa.string()), rank.astype(np.int64),
                   code.astype(np.int32), names,
                   labels[0] if one else _stack(labels, np.zeros(0, np.int32)),
                   parts[0].sha if one else _stack([p.sha for p in parts], np.zeros(0, np.bytes_)),
                   parts[0].desc if one else _stack([p.desc for p in parts],
                                                    np.zeros((0, len(DESCRIPTOR_NAMES)), np.float32)),
                   codes)

    def key(self, row: int) -> str:
        return self.keys[row].as_py()

    def path(self, row: int) -> str:
        return self.paths[row].as_py()

    def identity(self, row: int) -> str:
        return self.identity_names[self.identity_code[row]]


def _stack(arrays: list[np.ndarray], empty: np.ndarray) -> np.ndarray:
    return np.concatenate(arrays) if arrays else empty


@dataclass
class InputsPart:
    """PlanInputs of a range of consecutive source rows before they are put together (PlanInputs.from_parts):
    the strings in Arrow, the pairing labels coded in order of first appearance in this range (`label_names`)."""

    keys: pa.Array
    paths: pa.Array
    idents: pa.Array
    label: np.ndarray  # 0 none, k > 0: label_names[k - 1]
    label_names: list[str]
    sha: np.ndarray
    desc: np.ndarray

    @classmethod
    def of_batches(cls, batches: Iterable[pa.RecordBatch | pa.Table], rows: int | None = None) -> InputsPart:
        """The part of record batches (or tables) with PLANNER_COLUMNS (and expression_probs when the sources
        have it), read one after another (`rows`: the total when known, filled in place)."""
        keys: list[pa.Array] = []
        paths: list[pa.Array] = []
        idents: list[pa.Array] = []
        labels, shas, descs = _Filler(rows), _Filler(rows), _Filler(rows)
        codes: dict[str, int] = {}
        for batch in batches:
            one = batch.combine_chunks() if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            if not one.num_rows:
                continue
            keys.append(one.column("input_key").chunk(0))
            paths.append(one.column("path").chunk(0))
            idents.append(one.column("identity").chunk(0))
            named = with_predicted_labels(one.column("expression").to_pylist(), one)
            labels.add(np.array([codes.setdefault(x, len(codes) + 1) if x else 0 for x in named], np.int32))
            shas.add(fixed_bytes(one.column("file_sha256").chunk(0)))
            descs.add(_descriptors(one.column("expression_descriptor"), np.float32))
            del one, named
        return cls(_concat(keys, pa.string()), _concat(paths, pa.string()), _concat(idents, pa.string()),
                   labels.result(np.zeros(0, np.int32)), list(codes), shas.result(np.zeros(0, np.bytes_)),
                   descs.result(np.zeros((0, len(DESCRIPTOR_NAMES)), np.float32)))
