"""One real clean round of 3 London identities per test session (6 images, 6 candidates), shared by the
round, fault, nothing-lost, redecide and multi-node tests: each makes its own faulty, resumed or distributed runs
of the same corpus and compares them with this one. The module-level cache makes the run happen once however many
folders ask."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from manifests.store import ManifestStore
from pipeline.config import PipelineConfig
from tests.conftest import london_identities, make_corpus
from tests.hardening.conftest import round_config

N_IDS = 3  # 6 images -> 6 candidates

_CACHE: dict[str, BaselineRun] = {}


@dataclass(frozen=True)
class BaselineRun:
    corpus: Path
    cfg: PipelineConfig
    store: ManifestStore
    result: dict  # what run_idi returned (summary, timing)


def get_baseline_run(tmp_path_factory: pytest.TempPathFactory) -> BaselineRun:
    if "run" not in _CACHE:
        from pipeline.run_idi import run_idi

        corpus = make_corpus(tmp_path_factory.mktemp("baseline") / "corpus", london_identities()[:N_IDS])
        cfg = round_config(corpus, tmp_path_factory.mktemp("clean"))
        result = run_idi(cfg)
        assert result["summary"]["rounds"][0]["planned"] == 2 * N_IDS and result["summary"]["triples"] >= 1
        _CACHE["run"] = BaselineRun(corpus, cfg, ManifestStore.open(result["timing"]["run_url"]), result)
    return _CACHE["run"]
