"""Where methods disagree: the examples of an ERASER report ranked by how little two rationales agree.

Input: the per-example records of a report's ``examples.jsonl``
(:func:`eraser_eval.report.example_records`: tokens, human spans, each method's hard spans). Pure
functions over those records, no model. Per example, for one method (default AdapLeR):

* ``iou_f1_human``: IOU-F1 at 0.5 of the method's hard rationale against the human one (ERASER's
  span matching, :func:`eraser_eval.metrics.iou_f1`, on this one example);
* ``token_f1_human``: token F1 against the human rationale;
* ``overlap_<other>``: token F1 between the method's and another method's hard rationale
  (``2 |A & B| / (|A| + |B|)``, symmetric).

A measure is undefined (NaN) where there is nothing to compare: no human rationale, or both
rationales empty. Ranking by a measure puts the lowest agreement first and leaves those examples out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from . import metrics as M

__all__ = ["agreement_columns", "example_agreement", "rank_disagreement"]


def _spans(spans) -> list[tuple[int, int]]:
    return [(int(s), int(e)) for s, e in spans]


def _token_f1(gold, pred) -> float:
    """Token F1 of ``pred`` against ``gold`` on one example; NaN when both are empty."""
    r = M.token_prf({0: gold}, {0: pred})
    return r["macro"]["f1"] if r["n_instances"] else math.nan


def example_agreement(record: dict, method: str = "adapler", iou_threshold: float = 0.5) -> dict:
    """The agreement measures of one ``examples.jsonl`` record (see the module doc)."""
    hard = {m: _spans(s) for m, s in record.get("hard", {}).items()}
    own = hard.get(method, [])
    human = _spans(record.get("human", []))
    has_human = any(e > s for s, e in human)
    out = {
        "iou_f1_human": (M.iou_f1({0: human}, {0: own}, (iou_threshold,))[float(iou_threshold)]["macro"]["f1"]
                         if has_human else math.nan),
        "token_f1_human": _token_f1(human, own) if has_human else math.nan,
    }
    for other, spans in hard.items():
        if other != method:
            out[f"overlap_{other}"] = _token_f1(own, spans)
    return out


def agreement_columns(records: Sequence[dict], method: str = "adapler") -> list[str]:
    """The measures :func:`rank_disagreement` can rank ``records`` by."""
    others = dict.fromkeys(m for r in records for m in r.get("hard", {}) if m != method)
    return ["iou_f1_human", "token_f1_human"] + [f"overlap_{m}" for m in others]


def rank_disagreement(records: Sequence[dict], by: str = "iou_f1_human", method: str = "adapler") -> pd.DataFrame:
    """One row per record where ``by`` is defined, lowest agreement first (ties: report order).

    Columns: ``annotation_id``, ``label``, ``predicted``, ``n_tokens``, then every measure of
    :func:`agreement_columns`; the row's position in ``records`` is the index."""
    cols = agreement_columns(records, method)
    if by not in cols:
        raise ValueError(f"cannot rank by {by!r}; one of: {', '.join(cols)}")
    rows = [{"annotation_id": r["annotation_id"], "label": r.get("label"), "predicted": r.get("predicted"),
             "n_tokens": len(r.get("tokens", [])), **example_agreement(r, method)} for r in records]
    df = pd.DataFrame(rows, columns=["annotation_id", "label", "predicted", "n_tokens", *cols])
    return df.dropna(subset=[by]).sort_values(by, kind="stable")
