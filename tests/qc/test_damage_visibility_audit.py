"""benchmarks/bench_damage_visibility.py: the blind sheets draw the benchmark's own damage cases (their index is
evaluate's) and controls, the same for the same seed; labels are checked whole and joined with the checks' hits;
kappa; the sheets never land inside the repository (London faces, 30 of them: fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import bench_damage_visibility as v
from benchmarks.bench_mouth_checks import damage_cases, evaluated_set
from qc.mouth_calibration import measure_real_mouths


@pytest.fixture(scope="module")
def data(london_faces):
    faces = [(f.identity, e, f.image, f.landmarks68) for by in london_faces.values() for e, f in by.items()][:30]
    return {"id": [f[0] for f in faces], "ex": [f[1] for f in faces], "img": [f[2] for f in faces],
            "lm": [f[3] for f in faces]}


def test_sheets_show_the_benchmarks_own_cases_and_controls_shuffled_the_same_for_a_seed(data, tmp_path):
    items = v.draw(data, False, cases=12, controls=4, seed=3)
    assert [it["tile"] for it in items] == list(range(1, 17))
    assert sum(it["kind"] == "none" for it in items) == 4
    keyed = evaluated_set(data, False)
    m = measure_real_mouths(list(zip(keyed["id"], keyed["img"], keyed["lm"], strict=True)), keyed["key"])
    by_kind: dict[str, list[np.ndarray]] = {}
    for kind, img, _, _ in damage_cases(keyed, m):
        by_kind.setdefault(kind, []).append(img)
    for it in items:  # the tile's image is case `index` of its kind, in evaluate's order
        if it["kind"] != "none":
            assert np.array_equal(it["image"], by_kind[it["kind"]][it["index"]])
    again = v.draw(data, False, cases=12, controls=4, seed=3)
    assert [(a["kind"], a["index"], a["base"]) for a in again] == [(a["kind"], a["index"], a["base"]) for a in items]
    sheets = v.write_sheets(items, data["lm"], tmp_path)
    assert len(sheets) == 1 and all(p.exists() for p in sheets)
    key = json.loads((tmp_path / "key.json").read_text())
    assert len(key) == 16 and "image" not in key[0]
    assert set(json.loads((tmp_path / "labels_template.json").read_text())) == {str(t) for t in range(1, 17)}


def test_labels_join_the_hits_seen_and_unseen():
    key = [dict(tile=1, kind="slab", index=0, base=0), dict(tile=2, kind="slab", index=1, base=1),
           dict(tile=3, kind="specks", index=0, base=2), dict(tile=4, kind="none", index=-1, base=3)]
    hits = {"slab": [True, False], "specks": [True]}
    r = v.join(key, {"1": "artificial", "2": "artificial", "3": "fine", "4": "artificial"}, hits)
    assert (r["seen"], r["caught_seen"], r["caught_unseen"], r["controls_called"]) == (2, 1, 1, 1)
    assert r["per_kind"]["slab"] == dict(n=2, seen=2, caught_seen=1, caught_unseen=0)
    with pytest.raises(ValueError, match="missing"):
        v.join(key, {"1": "artificial"}, hits)
    with pytest.raises(ValueError, match="invalid"):
        v.join(key, {"1": "yes", "2": "fine", "3": "fine", "4": "fine"}, hits)


def test_kappa_and_the_sheets_stay_outside_the_repository(tmp_path):
    a = {"1": "artificial", "2": "fine", "3": "fine", "4": "artificial"}
    assert v.cohen_kappa(a, a) == 1.0
    assert v.cohen_kappa(a, {"1": "fine", "2": "artificial", "3": "artificial", "4": "fine"}) == -1.0
    with pytest.raises(SystemExit, match="inside the repository"):
        v._outside_repo(v.REPO / "sheets")
    assert v._outside_repo(tmp_path) == tmp_path.resolve()
