"""Make a labelled-R fixture folder (tests/qc/r_mouth_fixture.py has the layout) from a London run: the first `n`
candidates by candidate_id whose R has a face, each R's lower face (160 x 112 px of the 256 px aligned frame, the
box at R's mouth landmarks' mean rounded minus (80, 48)), R's eye band (160 x 48 px, at the mouth box's x and R's eye
landmarks' mean y rounded minus 24) and the real photo of j whose mouth R was made from (the carrier, or the mouth
donor where the transfer took the donor's mouth) in the same box. `label` is left empty: fill it by eye on
`label_sheet.png` (the R as `ciep audit` shows them: the lower face at 3x, numbered by index) before anything scores
these R.

    python -m benchmarks.make_r_mouth_fixture --run /tmp/lr/runs/demo-deda0ffac7 --out tests/fixtures/r_mouths_v4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from core.location import Location
from manifests.artifacts import ArtifactStore
from manifests.query import connect
from manifests.store import ManifestStore
from publish.audit_sheet import audit_sheet_png
from publish.report import file_reader
from stages.config import IngestConfig
from stages.face.dlib_models import DlibDetector
from stages.face.types import landmarks_array, largest_face

TILE = (160, 112)
EYE_TILE = (160, 48)
COLUMNS = 10


def crop(rgb: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """rgb[y0:y0+h, x0:x0+w], rows and columns past an edge repeating the edge."""
    ys = np.clip(np.arange(y0, y0 + h), 0, rgb.shape[0] - 1)
    xs = np.clip(np.arange(x0, x0 + w), 0, rgb.shape[1] - 1)
    return rgb[ys][:, xs]


def sheet(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    out = np.zeros((rows * h, columns * w, 3), np.uint8)
    for k, t in enumerate(tiles):
        out[(k // columns) * h:(k // columns + 1) * h, (k % columns) * w:(k % columns + 1) * w] = t
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="run folder of a London round")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("-n", type=int, default=50)
    args = ap.parse_args()
    run = Location(args.run)
    con = connect(ManifestStore.open(run))
    rows = con.sql("""select c.candidate_id, c.identity_i, c.identity_j, c.reference_path, c.transfer_mouth_rule,
                           c.expression_model, q.reasons,
                           case when c.transfer_mouth_rule = 'donor_mouth' then c.mouth_source_id
                                else c.carrier_source_id end as origin_id
                    from candidates c join qc q using (candidate_id)
                    where c.status = 'ok' and c.reference_path is not null
                    order by c.candidate_id""").to_arrow_table().to_pylist()
    if not rows:
        raise SystemExit(f"no generated R in {args.run}: not a run folder, or its round made none")
    sources = {r["source_id"]: r for r in con.sql(
        "select source_id, input_key, aligned_path, landmarks68 from sources").to_arrow_table().to_pylist()}
    artifacts = ArtifactStore(run)
    detector = DlibDetector.from_config(IngestConfig())
    mouths, refs, eyes, m_tiles, r_tiles, e_tiles, kept = [], [], [], [], [], [], []
    for row in rows:
        if len(mouths) == args.n:
            break
        r = artifacts.get(row["reference_path"])
        face = largest_face(detector.detect(r))
        if face is None or face.landmarks68 is None:
            continue
        lm = landmarks_array(face.landmarks68).astype(np.float64)
        x0, y0 = (np.round(lm[48:68].mean(axis=0)).astype(int) - (80, 48)).tolist()
        ey = int(round(float(lm[36:48, 1].mean()))) - 24
        origin = sources[row["origin_id"]]
        o_rgb = artifacts.get(origin["aligned_path"])
        o_lm = landmarks_array(origin["landmarks68"]).astype(np.float64)
        k = len(mouths)
        kept.append(row)
        mouths.append(dict(index=k, candidate_id=row["candidate_id"], identity_i=row["identity_i"],
                           identity_j=row["identity_j"], label=None, note="",
                           landmarks68=np.round(lm - (x0, y0)).reshape(-1).tolist(),
                           mouth_rule=row["transfer_mouth_rule"], qc_reasons_in_run=list(row["reasons"] or [])))
        refs.append(dict(index=k, candidate_id=row["candidate_id"], carrier_input_key=origin["input_key"],
                         crop_origin=[x0, y0], landmarks68=np.round(o_lm - (x0, y0), 2).reshape(-1).tolist()))
        eyes.append(dict(index=k, candidate_id=row["candidate_id"], crop_origin=[x0, ey]))
        m_tiles.append(crop(r, x0, y0, *TILE))
        r_tiles.append(crop(o_rgb, x0, y0, *TILE))
        e_tiles.append(crop(r, x0, ey, *EYE_TILE))
    args.out.mkdir(parents=True, exist_ok=True)
    run_note = f"run {Path(args.run).name}, {rows[0]['expression_model']}"
    Image.fromarray(sheet(m_tiles, COLUMNS)).save(args.out / "r_mouths.png")
    Image.fromarray(sheet(r_tiles, COLUMNS)).save(args.out / "references.png")
    Image.fromarray(sheet(e_tiles, COLUMNS)).save(args.out / "r_eyes.png")
    (args.out / "label_sheet.png").write_bytes(audit_sheet_png(
        [dict(index=m["index"], r_path=row["reference_path"]) for m, row in zip(mouths, kept, strict=True)],
        file_reader(run)))
    meta = dict(tile=list(TILE), columns=COLUMNS)
    (args.out / "labels.json").write_text(json.dumps(dict(
        meta, source=f"data/faces/london (CC BY 4.0), R of {run_note}: the first {len(mouths)} candidates by "
                     "candidate_id with a face found on R; crop box: R's mouth landmarks' mean rounded, minus (80, 48)",
        labelled_by="", mouths=mouths), indent=1))
    (args.out / "references.json").write_text(json.dumps(dict(
        meta, source="data/faces/london (CC BY 4.0): each R's reference, the real photo of j whose mouth R was made "
                     "from (the carrier, or the mouth donor for mouth_rule donor_mouth), aligned by ingest, cropped "
                     "with R's crop box (rows past an edge repeat it); landmarks68 in crop coordinates. "
                     f"Same round ({run_note}).", references=refs), indent=1))
    (args.out / "r_eyes.json").write_text(json.dumps(dict(
        tile=list(EYE_TILE), columns=COLUMNS,
        source="data/faces/london (CC BY 4.0): each R's eye band, 160 x 48 px of the 256 px aligned R, crop_origin: "
               f"(the mouth crop's x, R's eye landmarks' mean y rounded - 24). Same round ({run_note}).",
        eyes=eyes), indent=1))
    print(f"{len(mouths)} R written to {args.out}; label them on {args.out / 'label_sheet.png'}")


if __name__ == "__main__":
    main()
