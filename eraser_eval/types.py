"""Data passed between the runner, the engine and the rationale methods."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .align import Alignment

__all__ = ["DocInput", "MethodOutput", "round_sig"]


@dataclass
class DocInput:
    """One annotation prepared for the model."""

    annotation_id: str
    docid: str
    alignment: Alignment
    gold: np.ndarray  # (T,) bool human rationale over document tokens
    label: str  # gold dataset label
    query_ids: list[int] | None = None  # segment-B pieces (MultiRC question || answer)

    @property
    def tokens(self) -> list[str]:
        return self.alignment.tokens

    @property
    def num_tokens(self) -> int:
        return self.alignment.num_tokens


@dataclass
class MethodOutput:
    """A method's rationale for one document, over document tokens.

    ``scores`` (T,) soft scores or None; ``hard`` (T,) bool when the method defines its own hard
    rationale (adapler, import), else None (the runner takes top-k of ``scores``); ``layer_masks``
    (L, T) bool per-layer selection (adapler only); ``tiebreak`` (T,) secondary ranking key;
    ``record`` an imported ERASER result line (import only); ``extra`` free per-document info.
    """

    scores: np.ndarray | None = None
    hard: np.ndarray | None = None
    layer_masks: np.ndarray | None = None
    tiebreak: np.ndarray | None = None
    record: dict | None = None
    extra: dict = field(default_factory=dict)


def round_sig(x: np.ndarray, digits: int = 6) -> np.ndarray:
    """Round to ``digits`` significant digits (the precision written to results files; metrics are
    computed from the rounded values so an exported file re-scores to the same numbers)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mags = np.floor(np.log10(np.abs(x)))
    mags[~np.isfinite(mags)] = 0
    factor = 10.0 ** (digits - 1 - mags)
    out = np.round(x * factor) / factor
    out[~np.isfinite(out)] = 0.0
    return out


# --------------------------------------------------------------------------------------------------
# label mapping
