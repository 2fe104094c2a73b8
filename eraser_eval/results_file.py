"""Reading ERASER results files (``--import-results``, re-scoring exported reports)."""

from __future__ import annotations

import os
from pathlib import Path

from adapler.data import DataError, read_jsonl

__all__ = ["ResultsFileError", "load_results_jsonl"]


class ResultsFileError(ValueError):
    """A malformed ERASER results file; the message names the file and line."""


def load_results_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read an ERASER results file; malformed lines raise :class:`ResultsFileError` naming file and line."""
    path = Path(path)
    out, seen = [], {}
    try:
        lines = list(read_jsonl(path))  # the one JSONL reader: errors name the file and the line
    except DataError as e:
        raise ResultsFileError(str(e)) from None
    for lineno, rec in lines:
        if not isinstance(rec.get("annotation_id"), str):
            raise ResultsFileError(f"{path}:{lineno}: a result line needs a string 'annotation_id'")
        rats = rec.get("rationales", [])
        if not isinstance(rats, list) or any(not isinstance(r, dict) or "docid" not in r for r in rats):
            raise ResultsFileError(f"{path}:{lineno}: 'rationales' must be a list of objects with a 'docid'")
        for r in rats:
            for h in r.get("hard_rationale_predictions", []) or []:
                if not isinstance(h, dict) or not all(isinstance(h.get(k), int) for k in ("start_token", "end_token")):
                    raise ResultsFileError(f"{path}:{lineno}: hard_rationale_predictions need integer start_token/end_token")
        if rec["annotation_id"] in seen:
            raise ResultsFileError(f"{path}:{lineno}: duplicate annotation_id {rec['annotation_id']!r} (line {seen[rec['annotation_id']]})")
        seen[rec["annotation_id"]] = lineno
        out.append(rec)
    return out
