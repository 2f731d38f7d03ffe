"""Identity calibration: threshold at a false-accept rate, on a few real demo identities (dlib backend)."""

from __future__ import annotations

import json

import numpy as np

from pipeline.cli import main as ciep
from pipeline.config import load_config
from qc.calibrate import calibrate_identity, equal_error_rate, threshold_at_far


def test_threshold_at_far():
    impostor = np.linspace(0, 1, 1001)
    t = threshold_at_far(impostor, 0.01)
    assert (impostor >= t).mean() <= 0.01 and (impostor >= t - 2e-3).mean() > 0.01
    assert (impostor >= threshold_at_far(impostor, 0.0)).sum() == 0
    eer, at = equal_error_rate(np.array([0.8, 0.9, 0.95]), np.array([0.1, 0.2, 0.85]))
    assert abs(eer - 1 / 3) < 1e-9 and 0.8 <= at <= 0.85


def test_calibrate_small_corpus(small_corpus, tmp_path, capsys):
    r = calibrate_identity(load_config(), str(small_corpus), far=0.1)
    assert r.identities == 4 and r.images == 8 and r.genuine_pairs == 4 and r.impostor_pairs == 24
    assert r.embedder.startswith("dlib:") and r.far <= 0.1 and 0 <= r.tar <= 1
    assert r.genuine_median > r.impostor_median
    assert ciep(["calibrate-identity", "--corpus", str(small_corpus), "--far", "0.1",
                 "--json", str(tmp_path / "c.json")]) == 0
    assert "threshold @FAR=0.1" in capsys.readouterr().out
    assert json.loads((tmp_path / "c.json").read_text())["genuine_pairs"] == 4
