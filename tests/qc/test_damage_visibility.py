"""benchmarks/bench_mouth_checks.py's visibility of a painted artifact: nothing painted is 0, a white slab is plain,
a dark speck on lips already as dark is faint (London faces, fast); its photo folds split each identity."""

from __future__ import annotations

import cv2
import numpy as np

from benchmarks.bench_mouth_checks import visibility_bin, visible_change
from qc import artifact_cases as ac


def _faces(london_faces, n: int = 20) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(f.image, f.landmarks68) for by in london_faces.values() for f in by.values()][:n]


def test_a_slab_is_plain_and_nothing_painted_is_zero(london_faces):
    rng = np.random.default_rng(0)
    for img, lm in _faces(london_faces):
        assert visible_change(img, img, lm) == 0.0
        assert visibility_bin(visible_change(img, ac.slab(img, lm, rng), lm)) == "plain"


def test_a_dark_speck_on_dark_lips_is_faint_and_a_light_one_plain(london_faces):
    for img, lm in _faces(london_faces, 5):
        dark_lips = img.copy()
        cv2.fillPoly(dark_lips, [np.round(lm[48:60]).astype(np.int32)], (30, 30, 30))
        centre = tuple(int(v) for v in np.round(lm[[62, 66]].mean(axis=0)))
        for value, expected in ((25, "faint"), (235, "plain")):
            speck = dark_lips.copy()
            cv2.circle(speck, centre, 2, (value,) * 3, -1)
            assert visibility_bin(visible_change(dark_lips, speck, lm)) == expected


def test_photo_folds_split_an_identitys_photos_and_repeat():
    from benchmarks.bench_mouth_checks import PHOTO_FOLDS, photo_folds

    keys = [f"id{i}/{e}/{i * 7 + k}" for i in range(20) for k, e in enumerate(("NE", "HA", "SA", "SU", "AN", "DI"))]
    folds = photo_folds(keys)
    assert folds.tolist() == photo_folds(list(keys)).tolist()
    assert set(folds.tolist()) == set(range(PHOTO_FOLDS))
    by_identity = [len(set(folds[i * 6:(i + 1) * 6].tolist())) for i in range(20)]
    assert min(by_identity) >= 2  # the identity's other photos stay in the fit of each fold
