"""Classification metrics shared by every command: F1 and macro-F1 (no sklearn, one definition)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence


def f1(p: float, r: float) -> float:
    """Harmonic mean; 0 when either is 0 (ERASER's ``_f1``)."""
    if p == 0 or r == 0:
        return 0.0
    return 2 * p * r / (p + r)


def macro_f1(gold: Sequence[Hashable], pred: Sequence[Hashable], labels: Sequence[Hashable] | None = None) -> float:
    """Mean over ``labels`` of each label's F1 (default labels: those in ``gold`` or ``pred``, as
    scikit-learn's ``f1_score(average="macro")``). A label never predicted or never gold scores 0."""
    if len(gold) != len(pred):
        raise ValueError("gold and pred differ in length")
    if labels is None:
        labels = sorted(set(gold) | set(pred), key=repr)
    if not labels:
        return 0.0
    scores = []
    for lab in labels:
        tp = sum(1 for g, p in zip(gold, pred) if g == lab and p == lab)
        n_p = sum(1 for p in pred if p == lab)
        n_g = sum(1 for g in gold if g == lab)
        scores.append(f1(tp / n_p if n_p else 0.0, tp / n_g if n_g else 0.0))
    return sum(scores) / len(scores)
