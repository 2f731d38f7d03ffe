"""pipeline/summary.py format_summary: the self-test's lines name the wrong-expression target the run asked for
(qc.expression.max_false_pass, which the embedded demo config sets to 10 %), and an unjudgeable class says its
targets are not planned."""

from __future__ import annotations

from pipeline.summary import format_summary

TIMING = {"run_id": "run-x", "run_url": "/tmp/run-x", "wall_s": 10.0, "items": 48}


def _summary(target: float | None) -> dict:
    return {"sources": 24, "ingest_rejects": {}, "rounds": [], "triples": 13, "selftest_max_false_pass": target,
            "selftest": [{"expression": "neutral", "judged": True, "right_pass": 0.917, "wrong_pass": 0.088,
                          "n_right": 12, "n_wrong": 12},
                         {"expression": "sad", "judged": False, "right_pass": None, "wrong_pass": None,
                          "n_right": 0, "n_wrong": 0}]}


def test_selftest_lines_name_the_target_and_the_unjudgeable_class():
    text = format_summary(_summary(0.1), TIMING)
    assert "the other one at most 10%: qc.expression.max_false_pass" in text
    assert "T neutral      91.7 % / 8.8 %  (n 12/12)" in text
    assert "T sad          UNJUDGEABLE on this corpus: its targets are not planned" in text


def test_without_a_recorded_target_the_line_names_none():
    text = format_summary(_summary(None), TIMING)
    assert "QC self-test on the corpus's real photos" in text and "at most" not in text
