"""A labelled audit of a run's generated R: a blind random sample of its decided candidates for a person to label by
eye (`artificial`: a visible artifact; `fine`; `skip`: cannot tell), and what the labels say of the accept decision.

The automatic checks do not see every artifact a person sees (benchmarks/RESULTS.md: the subtle mouth artifacts of
generated R); the audit measures, on the run's own output, what share of the accepted R a person would throw away and
what share of the artificial R QC rejected, with 95 % intervals. The sample is stratified (accepted / rejected, a
fixed number drawn from each in the order of a seeded hash of the candidate id, so the draw is uniform within a
stratum and the same for the same seed) and shown mixed, without the decision, so labelling is blind. Estimates over
the whole run weigh each stratum by its size; their intervals combine the strata's Wilson intervals, bound by bound
(conservative: each of the two strata holds its interval with 95 %, so both hold with at least 90 %).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from qc.selftest import wilson_interval

LABELS = ("artificial", "fine", "skip")
STRATA = ("accepted", "rejected")


def draw_order(seed: int, candidate_id: str) -> str:
    """The sample's order key: sha256 of the seed and the candidate id."""
    return hashlib.sha256(f"audit\0{seed}\0{candidate_id}".encode()).hexdigest()


@dataclass(frozen=True)
class AuditSample:
    """The drawn sample: which run (its id, and its folder under the output root) and decision version, the seed,
    each stratum's population and the rows (index on the sheet, candidate id, stratum, R's image path), in sheet
    order."""

    run_id: str
    decision_version: int
    seed: int
    population: dict[str, int]
    rows: list[dict]
    run_folder: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> AuditSample:
        d = json.loads(text)
        missing = {"run_id", "decision_version", "seed", "population", "rows"} - set(d)
        if missing:
            raise ValueError(f"not an audit sample (no {sorted(missing)})")
        return cls(d["run_id"], int(d["decision_version"]), int(d["seed"]), dict(d["population"]), list(d["rows"]),
                   str(d.get("run_folder", "")))


def draw_sample(decided: Iterable[dict], per_stratum: dict[str, int], seed: int, run_id: str,
                decision_version: int, run_folder: str = "") -> AuditSample:
    """`per_stratum[s]` candidates of each stratum (decided rows: candidate_id, accepted, r_path), the first in
    draw_order; all of them mixed in draw_order, numbered from 0."""
    by: dict[str, list[dict]] = {s: [] for s in STRATA}
    for row in decided:
        by["accepted" if row["accepted"] else "rejected"].append(row)
    picked = []
    for stratum, rows in by.items():
        rows.sort(key=lambda r: draw_order(seed, r["candidate_id"]))
        picked += [dict(candidate_id=r["candidate_id"], stratum=stratum, r_path=r["r_path"])
                   for r in rows[:max(int(per_stratum.get(stratum, 0)), 0)]]
    picked.sort(key=lambda r: draw_order(seed, r["candidate_id"]))
    return AuditSample(run_id, decision_version, seed, {s: len(by[s]) for s in STRATA},
                       [dict(index=k, **r) for k, r in enumerate(picked)], run_folder)


def read_labels(rows: Iterable[dict], sample: AuditSample) -> dict[str, str]:
    """candidate id -> label from the filled-in audit.csv rows (candidate_id, label); every sampled R labelled once
    with one of LABELS, nothing else, else ValueError saying which rows."""
    wanted = {r["candidate_id"] for r in sample.rows}
    labels: dict[str, str] = {}
    seen: set[str] = set()
    problems = []
    for k, row in enumerate(rows, start=2):  # line 1 is the header
        cid = (row.get("candidate_id") or "").strip()
        label = (row.get("label") or "").strip().lower()
        if cid not in wanted:
            problems.append(f"line {k}: candidate {cid!r} is not in this sample")
        elif cid in seen:
            problems.append(f"line {k}: candidate {cid} labelled twice")
        elif label not in LABELS:
            problems.append(f"line {k}: label {label!r} is not one of {', '.join(LABELS)}")
        else:
            labels[cid] = label
        seen.add(cid)
    if wanted - seen:
        problems.append(f"{len(wanted - seen)} sampled R have no row")
    if problems:
        raise ValueError("audit labels: " + "; ".join(problems[:10]) + (" ..." if len(problems) > 10 else ""))
    return labels


def _share(a: int, n: int) -> dict:
    lo, hi = wilson_interval(a, n)
    return dict(value=a / n if n else None, ci_low=lo, ci_high=hi, n=n)


Bounds = tuple[float, float, float]  # a value and its interval's low and high ends


def _weighted(num: Bounds, den_other: Bounds) -> tuple[float | None, float | None, float | None]:
    """x / (x + y) for stratum totals x (num) and y (den_other) given as (value, low, high): the value and the
    bounds from the other ends of the two intervals."""
    def f(x: float, y: float) -> float | None:
        return x / (x + y) if x + y > 0 else None
    return f(num[0], den_other[0]), f(num[1], den_other[2]), f(num[2], den_other[1])


def audit_estimates(sample: AuditSample, labels: dict[str, str]) -> dict:
    """Per stratum: labelled R, artificial share with its 95 % Wilson interval; over the run: the share of the
    artificial R that QC rejected (its artifact recall) and the share of the fine R it rejected."""
    per: dict[str, dict] = {}
    totals: dict[str, dict[str, Bounds]] = {}
    for s in STRATA:
        got = [labels[r["candidate_id"]] for r in sample.rows if r["stratum"] == s]
        judged = [g for g in got if g != "skip"]
        a = sum(g == "artificial" for g in judged)
        share = _share(a, len(judged))
        pop = sample.population.get(s, 0)
        per[s] = dict(population=pop, sampled=len(got), skipped=len(got) - len(judged), artificial=a,
                      artificial_share=share)
        if share["value"] is None:
            totals[s] = {"artificial": (0.0, 0.0, float(pop)), "fine": (0.0, 0.0, float(pop))}
        else:
            totals[s] = {"artificial": (pop * share["value"], pop * share["ci_low"], pop * share["ci_high"]),
                         "fine": (pop * (1 - share["value"]), pop * (1 - share["ci_high"]),
                                  pop * (1 - share["ci_low"]))}
    # a stratum of the run with no labelled R leaves the run-wide shares without a value (bounds: anything it holds)
    unknown = any(per[s]["population"] and per[s]["artificial_share"]["value"] is None for s in STRATA)
    run = {}
    for name, kind in (("artificial_rejected", "artificial"), ("fine_rejected", "fine")):
        value, lo, hi = _weighted(totals["rejected"][kind], totals["accepted"][kind])
        run[name] = dict(value=None if unknown else value, ci_low=lo, ci_high=hi)
    return dict(run_id=sample.run_id, decision_version=sample.decision_version, seed=sample.seed, strata=per,
                **run, interval="95 % Wilson per stratum; run-wide shares bound by bound (at least 90 % jointly)")


def audit_rows(sample: AuditSample, labels: dict[str, str], labelled_by: str, labelled_at: str) -> list[dict]:
    """The `audit` table's rows: one per sampled R."""
    return [dict(run_id=sample.run_id, candidate_id=r["candidate_id"], decision_version=sample.decision_version,
                 stratum=r["stratum"], label=labels[r["candidate_id"]], sample_seed=sample.seed,
                 sheet_index=int(r["index"]), labelled_by=labelled_by, labelled_at=labelled_at) for r in sample.rows]


def format_share(d: dict | None, missing: str = "n/a") -> str:
    """A share with its interval as `34.5 % [19.9, 52.7]`; `missing` when it has no value."""
    if not d or d.get("value") is None:
        return missing
    return f"{100 * d['value']:.1f} % [{100 * d['ci_low']:.1f}, {100 * d['ci_high']:.1f}]"


def format_estimates(est: dict) -> str:
    """The audit's figures as lines for a terminal."""
    pct = format_share
    lines = []
    for s in STRATA:
        p = est["strata"][s]
        lines.append(f"{s}: {p['artificial']} artificial of {p['artificial_share']['n']} labelled "
                     f"({p['skipped']} skipped, {p['population']} in the run): {pct(p['artificial_share'])}")
    lines.append(f"artificial R that QC rejected: {pct(est['artificial_rejected'])}")
    lines.append(f"fine R that QC rejected: {pct(est['fine_rejected'])}")
    return "\n".join(lines)
