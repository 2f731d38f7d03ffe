"""The run's self-test (run.json `selftest`, made by qc/selftest.py) as tables a page can show: its per-class rows
(and any other list of rows) as tables, its single values as facts. Generic, so new keys show without a change."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

# Columns shown first, in this order, when a row has them; any other key follows.
PREFERRED = ("class", "judged", "right_pass", "right_pass_ci", "wrong_pass", "wrong_pass_ci", "auc", "n_right",
             "n_wrong", "threshold")


@dataclass
class SelftestTable:
    title: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class SelftestView:
    tables: list[SelftestTable] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)


def cell(v: object) -> str:
    """One value as text: rates and scores to 3 places, a CI pair as [lo, hi], booleans as yes/no."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list | tuple) and len(v) == 2 and all(isinstance(x, int | float) or x is None for x in v):
        return "[" + ", ".join(cell(float(x)) if isinstance(x, int | float) else "–" for x in v) + "]"
    if isinstance(v, dict | list | tuple):
        return json.dumps(v, sort_keys=True, default=str)
    return str(v)


def _table(title: str, rows: list[dict]) -> SelftestTable:
    keys: list[str] = [k for k in PREFERRED if any(k in r for r in rows)]
    keys += [k for r in rows for k in r if k not in keys and k not in PREFERRED]
    keys = list(dict.fromkeys(keys))
    return SelftestTable(title, keys, [[cell(r.get(k)) for k in keys] for r in rows])


def selftest_view(selftest: object) -> SelftestView | None:
    """None when the run has no self-test; else its tables (lists of row dicts, or dicts of per-class dicts keyed
    by class) and facts (every other value)."""
    if not isinstance(selftest, dict) or not selftest:
        return None
    view = SelftestView()
    for key, value in selftest.items():
        if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            view.tables.append(_table(str(key), value))
        elif isinstance(value, dict) and value and all(isinstance(r, dict) for r in value.values()):
            view.tables.append(_table(str(key), [{"class": k, **r} for k, r in value.items()]))
        else:
            view.facts.append((str(key), cell(value)))
    return view
