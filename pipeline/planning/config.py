"""The `pairing` config section: how the planner picks targets and the swap-source identity j."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from core.config import Strict


class PairingConfig(Strict):
    max_targets_per_identity: int | None = Field(None, ge=1)
    # Pick the swap-source identity j from i's release split (release.splits), so that no triple straddles
    # two splits and releases keep every triple; falls back to any identity when i's split has no other.
    split_closed: bool = True
    # Identities whose mean embeddings have cosine >= this are one person under several names
    # (pipeline/planning/clusters.py): j is never drawn from i's cluster and releases split by cluster.
    # null (the default): calibrated per run from the run's own sources (qc/same_person.py,
    # pipeline/planning/same_person.py): the similarity same_person_frr of the run's same-person pairs (each
    # identity's two half-centroids) fall below, provided different people (every pair of identity centroids, a
    # robust tail fit) reach it with probability below same_person_false_merges over the whole corpus; where the
    # two overlap nothing is merged. run.json (identity_calibration.same_person) records the value and why. An
    # explicit value overrides (0.96 was the fixed default for dlib: it merged most people of a 7-expression set).
    same_person_similarity: float | None = Field(None, ge=-1, le=1)
    same_person_frr: float = Field(0.01, ge=0, lt=1)
    same_person_false_merges: float = Field(0.01, gt=0, lt=1)
    # false: never merge identities (each name is its own person)
    merge_same_person: bool = True


@dataclass(frozen=True)
class PlanSettings:
    """What planning a round reads from the run config (pipeline/planning/round_planner.py `plan_settings`): the
    pairing section (its same_person_similarity resolved for the run: pipeline/planning/same_person.py, None = merge
    nothing), the run's seed, data fingerprint, release splits (j stays in i's split) and run id (on the
    identity_clusters rows)."""

    pairing: PairingConfig
    seed: int
    fingerprint: str
    splits: dict[str, float]
    run_id: str
    unjudgeable: frozenset[str] = frozenset()  # expression classes whose targets are not planned (QC self-test)


def pairing_fingerprint(pairing: dict) -> dict:
    """The pairing section as the data fingerprint sees it (a model_dump). Configs that existed before the
    calibrated default keep their run ids: an explicit value stays as it was, `merge_same_person: false` is the
    null that meant "no clustering"; the calibrated default fingerprints its frr and false-merge bound."""
    out = {k: v for k, v in pairing.items()
           if k not in ("same_person_frr", "same_person_false_merges", "merge_same_person")}
    if not pairing.get("merge_same_person", True):
        out["same_person_similarity"] = None
    elif pairing.get("same_person_similarity") is None:
        out["same_person_similarity"] = {"calibrated": {"frr": pairing.get("same_person_frr"),
                                                        "false_merges": pairing.get("same_person_false_merges")}}
    return out
