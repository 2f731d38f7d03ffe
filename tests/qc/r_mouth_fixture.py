"""The labelled generated R of tests/fixtures/r_mouths* and their judging by the mouth checks, as a London run
judges them (qc/stage.py's mouth scores, thresholds calibrated on London's real mouths by qc/mouth_calibration.py
with the run's source ids as keys).

A fixture folder holds three tile sheets, each with its JSON: `r_mouths.png` / `labels.json` (R's lower face,
160 x 112 px of the 256 px aligned frame, its landmarks and the label by eye), `references.png` /
`references.json` (the carrier R was made from, same crop box, its ingest landmarks; `crop_origin`: the box's
corner in the aligned frame) and `r_eyes.png` / `r_eyes.json` (R's eye band, 160 x 48 px, what the mouth
sharpness ratio divides by). A judged R is the aligned frame rebuilt from R's two crops (zeros elsewhere).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from core.hashing import sha256_file
from qc.decide import (
    REASON_GHOST_TEETH,
    REASON_MOUTH_BLUR,
    REASON_MOUTH_DAMAGE,
    REASON_MOUTH_REFERENCE,
    REASON_MOUTH_SEAM,
    REASON_MOUTH_UNREAL,
    Scores,
    Thresholds,
    failed_checks,
)
from qc.mouth import mouth_scores
from qc.mouth_calibration import MouthCalibration, calibrate_real_mouths, measure_real_mouths, sample_sources
from qc.mouth_detector import r_inputs
from qc.mouth_realism import mouth_descriptor, mouth_shape
from qc.mouth_reference import reference_features
from stages.ingest import source_id_for

FIXTURES = Path(__file__).parents[1] / "fixtures"
FRAME = 256  # the aligned frame's size
# every mouth check a QC round applies that R's face alone and its carrier decide (mouth state needs T)
CHECKS = {REASON_GHOST_TEETH, REASON_MOUTH_SEAM, REASON_MOUTH_BLUR, REASON_MOUTH_UNREAL, REASON_MOUTH_REFERENCE,
          REASON_MOUTH_DAMAGE}


@dataclass(frozen=True)
class LabelledR:
    entry: dict  # the labels.json entry (candidate_id, identities, label, note)
    face: np.ndarray  # R in the aligned frame (its eye band and lower face; zeros elsewhere)
    landmarks: np.ndarray  # (68, 2) R's landmarks in that frame
    carrier: np.ndarray  # the carrier's crop with R's crop box (RGB, 112 x 160)
    carrier_landmarks: np.ndarray  # (68, 2) in the carrier crop's coordinates

    @property
    def artificial(self) -> bool:
        return self.entry["label"] == "artificial"


def _tiles(folder: Path, sheet: str, meta: dict, entries: list[dict]) -> list[np.ndarray]:
    image = np.asarray(Image.open(folder / sheet).convert("RGB"))
    w, h = meta["tile"]
    cols = meta["columns"]
    return [image[(e["index"] // cols) * h:(e["index"] // cols + 1) * h,
                  (e["index"] % cols) * w:(e["index"] % cols + 1) * w] for e in entries]


def _lm(values: list[float]) -> np.ndarray:
    return np.asarray(values, np.float64).reshape(68, 2)


def load(name: str) -> list[LabelledR]:
    """The labelled R of tests/fixtures/<name>, in labels.json order."""
    folder = FIXTURES / name
    labels, refs, eyes = (json.loads((folder / f).read_text()) for f in
                          ("labels.json", "references.json", "r_eyes.json"))
    mouths, carriers = labels["mouths"], refs["references"]
    out = []
    for m, ref, eye, mouth_tile, carrier_tile, eye_tile in zip(
            mouths, carriers, eyes["eyes"], _tiles(folder, "r_mouths.png", labels, mouths),
            _tiles(folder, "references.png", refs, carriers), _tiles(folder, "r_eyes.png", eyes, eyes["eyes"]),
            strict=True):
        assert m["candidate_id"] == ref["candidate_id"] == eye["candidate_id"]
        (x0, y0), (ex, ey) = ref["crop_origin"], eye["crop_origin"]
        h, w = mouth_tile.shape[:2]
        face = np.zeros((max(FRAME, y0 + h), max(FRAME, x0 + w), 3), np.uint8)
        face[ey:ey + eye_tile.shape[0], ex:ex + eye_tile.shape[1]] = eye_tile
        face[y0:y0 + h, x0:x0 + w] = mouth_tile
        out.append(LabelledR(m, face, _lm(m["landmarks68"]) + (x0, y0), carrier_tile, _lm(ref["landmarks68"])))
    return out


def london_calibration(london_faces: dict, london_root: Path, qc) -> MouthCalibration:
    """The mouth calibration a London run makes: every photo keyed by its ingest source id, in the run's sample
    order (qc/mouth_calibration.py sample_sources)."""
    faces, keys = [], []
    for ident, by in sorted(london_faces.items()):
        for expression, f in sorted(by.items()):
            key = f"{ident}/{expression}.jpg"
            faces.append((f.identity, f.image, f.landmarks68))
            keys.append(source_id_for(ident, key, sha256_file(london_root / key)))
    listing = pa.table({"identity": [f[0] for f in faces], "source_id": keys, "row": list(range(len(faces)))})
    order = sample_sources(listing, len(faces)).column("row").to_pylist()
    m = measure_real_mouths([faces[k] for k in order], [keys[k] for k in order])
    cal = calibrate_real_mouths(m, Thresholds.from_config(qc), qc)
    assert cal.bank is not None and cal.reference is not None
    return cal


def scores(r: LabelledR, cal: MouthCalibration) -> Scores:
    """R's mouth scores as qc/stage.py computes them (realism and damage without R's identities i and j)."""
    assert cal.bank is not None
    exclude = (r.entry["identity_i"], r.entry["identity_j"])
    ms = mouth_scores(r.face, r.landmarks)
    descriptor = mouth_descriptor(r.face, r.landmarks, cal.bank.use_chroma)
    shape = mouth_shape(r.landmarks)
    r_ref = reference_features(r.face, r.landmarks)
    carrier = reference_features(r.carrier, r.carrier_landmarks)
    damage = None
    if cal.detector is not None:
        damage = float(cal.detector.scores(r_inputs(r.face, r.landmarks, cal.bank, exclude, carrier))[0])
    return Scores(face_found=True, r_mouth_aspect=ms.mouth_aspect, r_teeth=ms.teeth_share,
                  r_lip_line=ms.lip_line_whiteness, mouth_seam=ms.seam_score,
                  mouth_sharpness_ratio=ms.sharpness_ratio, mouth_realism=cal.bank.score(descriptor, shape, exclude),
                  mouth_reference_diff=None if cal.reference is None else cal.reference.score(r_ref, carrier),
                  mouth_damage=damage)


def mouth_reasons(s: Scores, t: Thresholds) -> set[str]:
    """The mouth checks of CHECKS that reject R."""
    return set(failed_checks(s, t)) & CHECKS
