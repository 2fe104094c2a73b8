"""Rationale metrics with the semantics of ERASER's ``rationale_benchmark/metrics.py``, plus FPR.

Small pure functions over plain data (dicts, lists, numpy arrays); no model, no files.

Conventions shared with ERASER:

* An *instance* is an ``(annotation_id, docid)`` key; spans are ``(start_token, end_token)`` over
  the document tokens, ``end`` exclusive.
* **Token P/R/F1** (:func:`token_prf`): spans are exploded into ``(key, token)`` items. Micro =
  one pooled set intersection; macro = per-instance P, R, F1, each averaged (macro F1 is the mean of
  the instance F1s). Instances enter the macro average only if they have at least one gold or one
  predicted item (so an instance whose gold and prediction are both empty is not counted, and an
  instance with gold but no prediction counts as P = R = F1 = 0).
* **IOU-F1** (:func:`iou_f1`): a predicted span is a true positive if its best token IOU with a
  gold span of the same instance is >= the threshold (0.5). Micro P = TP / #predicted spans,
  R = TP / #gold spans. Macro: per-instance P (over instances with predictions) and R (over
  instances with gold), averaged, then F1 **of the averaged P and R**. Span counts include
  duplicates and empty spans; a duplicated predicted span is a true positive once; an empty span
  (start == end) has IOU 0 (ERASER's Movies test set has 20 empty gold spans, which is why the gold
  spans scored as predictions give IOU-F1 0.9911 macro / 0.9903 micro and token F1 1.0).
* **Soft scores** (:func:`soft_token_scores`): per instance, AUPRC = ``auc(recall, precision)`` of
  sklearn's ``precision_recall_curve``, averaged over **all** instances (an all-negative instance is
  not skipped; sklearn sets its recall to 1, which always gives it AUPRC 0.5); average precision
  and ROC-AUC skip instances whose gold is all 0 or all 1.
* **Comprehensiveness / sufficiency** (:func:`faithfulness`): per instance ``p_full[c] - p_x[c]``
  for the predicted class ``c``, averaged. **AOPC** (:func:`aopc`): the same deltas for every
  (instance, threshold) cell, averaged over all cells, plus per-threshold means.
* Division by zero (no predicted rationales at all) gives 0, not an exception.

FPR (this project's definition, see ``docs/eraser-and-peers.md`` section 2.3): for one example,
FPR = FP / (FP + TN) = the fraction of non-rationale units the method selects. Units are document
tokens with at least one word piece. Reported per layer, averaged per example (macro) and pooled
(micro), with the number of examples and of skipped examples (those without a non-rationale unit).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from adapler.metrics import f1, macro_f1

__all__ = [
    "AOPC_THRESHOLDS",
    "aopc",
    "aopc_k",
    "classification_scores",
    "f1",
    "faithfulness",
    "false_positive_rate",
    "fpr_counts",
    "fpr_difference_bootstrap",
    "iou_f1",
    "mask_to_spans",
    "prf_sets",
    "score_records",
    "soft_token_scores",
    "span_prf",
    "spans_to_mask",
    "token_prf",
    "top_k_mask",
]

AOPC_THRESHOLDS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.5)

Key = Hashable
Span = tuple[int, int]


def _prf(p: float, r: float) -> dict[str, float]:
    return {"p": p, "r": r, "f1": f1(p, r)}


def prf_sets(gold: Mapping[Key, Iterable[Hashable]], pred: Mapping[Key, Iterable[Hashable]]) -> dict[str, dict]:
    """Micro and macro P/R/F1 of item sets per instance (ERASER ``score_hard_rationale_predictions``)."""
    g = {k: set(v) for k, v in gold.items()}
    p = {k: set(v) for k, v in pred.items()}
    g = {k: v for k, v in g.items() if v}
    p = {k: v for k, v in p.items() if v}
    n_pred = sum(len(v) for v in p.values())
    n_gold = sum(len(v) for v in g.values())
    n_both = sum(len(v & p.get(k, set())) for k, v in g.items())
    micro = _prf(n_both / n_pred if n_pred else 0.0, n_both / n_gold if n_gold else 0.0)
    per = []
    for k in set(g) | set(p):
        gk, pk = g.get(k, set()), p.get(k, set())
        both = len(gk & pk)
        pi = both / len(pk) if pk else 0.0
        ri = both / len(gk) if gk else 0.0
        per.append((pi, ri, f1(pi, ri)))
    if per:
        macro = {"p": float(np.mean([x[0] for x in per])), "r": float(np.mean([x[1] for x in per])),
                 "f1": float(np.mean([x[2] for x in per]))}
    else:
        macro = {"p": 0.0, "r": 0.0, "f1": 0.0}
    return {"micro": micro, "macro": macro, "n_instances": len(per)}


def _explode(spans: Iterable[Span]) -> set[int]:
    out: set[int] = set()
    for s, e in spans:
        out.update(range(int(s), int(e)))
    return out


def token_prf(gold: Mapping[Key, Iterable[Span]], pred: Mapping[Key, Iterable[Span]]) -> dict[str, dict]:
    """Token-level P/R/F1, micro and macro (ERASER "token_prf")."""
    return prf_sets({k: _explode(v) for k, v in gold.items()}, {k: _explode(v) for k, v in pred.items()})


def span_prf(gold: Mapping[Key, Iterable[Span]], pred: Mapping[Key, Iterable[Span]]) -> dict[str, dict]:
    """Exact-span P/R/F1, micro and macro (ERASER "rationale_prf")."""
    return prf_sets({k: {(int(s), int(e)) for s, e in v} for k, v in gold.items()},
                    {k: {(int(s), int(e)) for s, e in v} for k, v in pred.items()})


def _best_iou(pred: Sequence[Span], gold: Sequence[Span]) -> np.ndarray:
    """For each predicted span, the best token IOU ``|A & B| / |A | B|`` with any gold span (0 when
    there is no gold span or the union is empty); spans are contiguous, so sizes are arithmetic."""
    p = np.asarray(pred, dtype=np.int64).reshape(-1, 2)
    if not len(gold):
        return np.zeros(len(p))
    g = np.asarray(gold, dtype=np.int64).reshape(-1, 2)
    len_p = np.clip(p[:, 1] - p[:, 0], 0, None)
    len_g = np.clip(g[:, 1] - g[:, 0], 0, None)
    inter = np.clip(np.minimum(p[:, 1, None], g[None, :, 1]) - np.maximum(p[:, 0, None], g[None, :, 0]), 0, None)
    inter = np.where((len_p[:, None] > 0) & (len_g[None, :] > 0), inter, 0)
    union = len_p[:, None] + len_g[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)
    return iou.max(axis=1)


def iou_f1(
    gold: Mapping[Key, Sequence[Span]], pred: Mapping[Key, Sequence[Span]], thresholds: Sequence[float] = (0.5,)
) -> dict[float, dict[str, dict]]:
    """IOU-F1 per threshold, micro and macro (ERASER "iou_scores"); see module doc for averaging."""
    g = {k: [(int(s), int(e)) for s, e in v] for k, v in gold.items() if len(v)}
    p = {k: [(int(s), int(e)) for s, e in v] for k, v in pred.items() if len(v)}
    num_gold = {k: len(v) for k, v in g.items()}
    num_pred = {k: len(v) for k, v in p.items()}
    best: dict[Key, dict[Span, float]] = {}
    for k, spans in p.items():
        uniq = list(dict.fromkeys(spans))  # a duplicated span is one entry: one true positive at most
        best[k] = dict(zip(uniq, _best_iou(uniq, g.get(k, [])).tolist()))
    out: dict[float, dict[str, dict]] = {}
    for thr in thresholds:
        tps = {k: sum(1 for v in d.values() if v >= thr) for k, d in best.items()}
        tot_tp, tot_g, tot_p = sum(tps.values()), sum(num_gold.values()), sum(num_pred.values())
        micro = _prf(tot_tp / tot_p if tot_p else 0.0, tot_tp / tot_g if tot_g else 0.0)
        rs = [tps.get(k, 0) / n for k, n in num_gold.items()]
        ps = [tps.get(k, 0) / n for k, n in num_pred.items()]
        macro = _prf(float(np.mean(ps)) if ps else 0.0, float(np.mean(rs)) if rs else 0.0)
        out[float(thr)] = {"micro": micro, "macro": macro}
    return out


def soft_token_scores(pairs: Iterable[tuple[Sequence[bool], Sequence[float]]]) -> dict[str, Any]:
    """AUPRC, average precision and ROC-AUC of per-token soft scores against binary gold.

    ``pairs``: one ``(gold, scores)`` per instance, equal lengths. See the module doc for skipping.
    """
    import sklearn  # optional heavy dependency: imported only when soft scores are scored
    from sklearn.metrics import auc, precision_recall_curve  # optional heavy dependency (see above)

    auprcs, aps, rocs, n, skipped = [], [], [], 0, 0
    for truth, scores in pairs:
        truth = np.asarray(truth, dtype=bool).astype(int)
        scores = np.asarray(scores, dtype=np.float64)
        if truth.shape != scores.shape:
            raise ValueError(f"{scores.shape[0]} soft scores for {truth.shape[0]} tokens")
        if truth.size == 0:
            continue
        n += 1
        with warnings.catch_warnings(), sklearn.config_context(skip_parameter_validation=True):
            warnings.simplefilter("ignore")  # "No positive class found in y_true"
            prec, rec, _ = precision_recall_curve(truth, scores)
        auprcs.append(float(auc(rec, prec)))
        if truth.all() or not truth.any():
            skipped += 1
            continue
        # sklearn's average_precision_score on the same curve: sum_n (R_n - R_{n-1}) P_n
        aps.append(float(-np.sum(np.diff(rec) * prec[:-1])))
        rocs.append(_roc_auc(truth, scores))
    return {
        "auprc": float(np.mean(auprcs)) if auprcs else 0.0,
        "average_precision": float(np.mean(aps)) if aps else 0.0,
        "roc_auc": float(np.mean(rocs)) if rocs else 0.0,
        "n_instances": n,
        "n_skipped_ap_roc": skipped,
    }


def _roc_auc(truth: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC exactly as sklearn's ``roc_auc_score`` (trapezoid over the distinct-threshold ROC
    points; tied scores form one point). Both classes must be present."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    s, y = scores[order], truth[order]
    idx = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y)[idx]
    fps = 1 + idx - tps
    tpr = np.r_[0, tps] / tps[-1]
    fpr = np.r_[0, fps] / fps[-1]
    return float(np.trapezoid(tpr, fpr))


def faithfulness(instances: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Comprehensiveness and sufficiency.

    Each instance: ``{"classification": c, "classification_scores": {label: p},
    "comprehensiveness_classification_scores": {...}, "sufficiency_classification_scores": {...}}``
    (either of the last two may be absent). Returns the means and the instance counts.
    """
    comp, suff = [], []
    for inst in instances:
        c = inst["classification"]
        full = inst["classification_scores"][c]
        if inst.get("comprehensiveness_classification_scores") is not None:
            comp.append(full - inst["comprehensiveness_classification_scores"][c])
        if inst.get("sufficiency_classification_scores") is not None:
            suff.append(full - inst["sufficiency_classification_scores"][c])
    out: dict[str, Any] = {}
    if comp:
        out["comprehensiveness"] = float(np.mean(comp))
        out["n_comprehensiveness"] = len(comp)
    if suff:
        out["sufficiency"] = float(np.mean(suff))
        out["n_sufficiency"] = len(suff)
    return out


def aopc(instances: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """AOPC comprehensiveness and sufficiency from ERASER ``thresholded_scores``.

    Each instance: ``classification``, ``classification_scores`` and ``thresholded_scores`` =
    ``[{"threshold": t, "comprehensiveness_classification_scores": {...},
    "sufficiency_classification_scores": {...}}, ...]``. All instances must use the same thresholds.
    Score = mean over all (instance, threshold) cells of ``p_full[c] - p_t[c]``; ``*_points`` are
    the per-threshold means. ``None`` when no instance has thresholded scores.
    """
    insts = [i for i in instances if i.get("thresholded_scores")]
    if not insts:
        return None
    thresholds = [float(t["threshold"]) for t in insts[0]["thresholded_scores"]]
    cells: dict[str, dict[float, list[float]]] = {"comprehensiveness": {}, "sufficiency": {}}
    for inst in insts:
        got = [float(t["threshold"]) for t in inst["thresholded_scores"]]
        if got != thresholds:
            raise ValueError(
                f"annotation {inst.get('annotation_id')!r}: thresholds {got} differ from {thresholds}"
            )
        c = inst["classification"]
        full = inst["classification_scores"][c]
        for t in inst["thresholded_scores"]:
            for name, store in cells.items():
                sc = t.get(f"{name}_classification_scores")
                if sc is not None:
                    store.setdefault(float(t["threshold"]), []).append(full - sc[c])
    out: dict[str, Any] = {"thresholds": thresholds, "n_instances": len(insts)}
    for name, by_t in cells.items():
        if by_t:
            everything = [v for vs in by_t.values() for v in vs]
            out[name] = float(np.mean(everything))
            out[f"{name}_points"] = {t: float(np.mean(v)) for t, v in by_t.items()}
    return out


def aopc_k(num_units: int, threshold: float) -> int:
    """Number of top tokens for an AOPC threshold: ``round(threshold * n)`` (half up), at least 1
    (at most ``n``); 0 only for an empty document."""
    if num_units <= 0:
        return 0
    return int(min(num_units, max(1, math.floor(threshold * num_units + 0.5))))


def top_k_mask(
    scores: Sequence[float],
    k: int,
    tiebreak: Sequence[float] | None = None,
    eligible: Sequence[bool] | None = None,
) -> np.ndarray:
    """Boolean mask of the ``k`` highest-scoring eligible positions.

    Order: score descending, then ``tiebreak`` descending, then position ascending (deterministic).
    ``k`` is clipped to the number of eligible positions.
    """
    s = np.asarray(scores, dtype=np.float64)
    n = s.shape[0]
    mask = np.zeros(n, dtype=bool)
    elig = np.ones(n, dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    idx = np.flatnonzero(elig)
    k = int(min(max(k, 0), idx.size))
    if k == 0:
        return mask
    tb = np.zeros(n) if tiebreak is None else np.asarray(tiebreak, dtype=np.float64)
    order = np.lexsort((idx, -tb[idx], -s[idx]))
    mask[idx[order[:k]]] = True
    return mask


def mask_to_spans(mask: Sequence[bool]) -> list[Span]:
    """Maximal runs of True as ``(start, end)`` spans."""
    m = np.asarray(mask, dtype=bool).astype(np.int8)
    if m.size == 0:
        return []
    d = np.diff(np.concatenate([[0], m, [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return [(int(s), int(e)) for s, e in zip(starts, ends)]


def spans_to_mask(spans: Iterable[Span], n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for s, e in spans:
        mask[int(s) : int(e)] = True
    return mask


def fpr_counts(
    gold: Sequence[np.ndarray],
    selected: Sequence[np.ndarray],
    units: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-example counts behind FPR: ``(false_positives (N, L), negatives (N,), selected (N, L))``.

    ``gold[i]``: ``(T_i,)`` bool human rationale; ``selected[i]``: ``(L, T_i)`` bool selection per
    layer; ``units[i]``: ``(T_i,)`` bool, the scored units (default all). ``negatives[i]`` = scored
    non-rationale units; ``selected`` = the fraction of scored units selected at each layer.
    """
    if len(gold) != len(selected):
        raise ValueError("gold and selected differ in length")
    num_layers = np.asarray(selected[0]).shape[0] if selected else 0
    fps = np.zeros((len(gold), num_layers), dtype=np.int64)
    negs = np.zeros(len(gold), dtype=np.int64)
    frac = np.zeros((len(gold), num_layers))
    for i, (g, sel) in enumerate(zip(gold, selected)):
        g = np.asarray(g, dtype=bool)
        sel = np.asarray(sel, dtype=bool)
        if sel.shape != (num_layers, g.shape[0]):
            raise ValueError(f"example {i}: selection shape {sel.shape} != {(num_layers, g.shape[0])}")
        u = np.ones_like(g) if units is None else np.asarray(units[i], dtype=bool)
        neg = u & ~g
        negs[i] = int(neg.sum())
        fps[i] = (sel & neg).sum(axis=1)
        frac[i] = (sel & u).sum(axis=1) / max(1, int(u.sum()))
    return fps, negs, frac


def false_positive_rate(
    gold: Sequence[np.ndarray],
    selected: Sequence[np.ndarray],
    units: Sequence[np.ndarray] | None = None,
    layer_names: Sequence[Any] | None = None,
) -> list[dict[str, Any]]:
    """FPR per layer (definition in the module doc).

    Arguments as :func:`fpr_counts`. Returns one dict per layer: ``layer`` (``layer_names`` or
    1-based), ``macro``, ``micro``, ``n_examples`` (examples used), ``n_skipped`` (no non-rationale
    unit), ``false_positives``, ``negatives``, ``mean_selected`` (mean fraction of units selected,
    over the examples used).
    """
    if not selected:
        return []
    fps, negs, frac = fpr_counts(gold, selected, units)
    used = negs > 0
    rows = []
    for layer in range(fps.shape[1]):
        fp, neg = fps[used, layer], negs[used]
        rows.append({
            "layer": layer_names[layer] if layer_names is not None else layer + 1,
            "macro": float(np.mean(fp / neg)) if used.any() else float("nan"),
            "micro": int(fp.sum()) / int(neg.sum()) if used.any() else float("nan"),
            "n_examples": int(used.sum()),
            "n_skipped": int((~used).sum()),
            "false_positives": int(fp.sum()),
            "negatives": int(neg.sum()),
            "mean_selected": float(np.mean(frac[used, layer])) if used.any() else float("nan"),
        })
    return rows


def fpr_difference_bootstrap(
    fp_a: np.ndarray,
    fp_b: np.ndarray,
    negatives: np.ndarray,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """FPR of method A minus FPR of method B per layer, with a paired bootstrap over examples.

    ``fp_a``, ``fp_b``: ``(N, L)`` false positives of the two methods on the same N examples (from
    :func:`fpr_counts`); ``negatives``: ``(N,)``. Examples without a negative unit are left out.
    Each of ``n_boot`` resamples draws N examples with replacement (the same draw for both methods)
    and recomputes the macro difference (mean over examples of per-example FPR differences) and the
    micro difference (pooled FP / pooled negatives); the interval is the percentile interval at
    ``level``. A negative difference means A selects fewer non-rationale units than B.
    Returns one dict per layer (1-based ``layer``): ``macro_diff``, ``macro_lo``, ``macro_hi``,
    ``micro_diff``, ``micro_lo``, ``micro_hi``, ``n_examples``.
    """
    fp_a, fp_b = np.asarray(fp_a, dtype=float), np.asarray(fp_b, dtype=float)
    neg = np.asarray(negatives, dtype=float)
    if fp_a.shape != fp_b.shape or fp_a.shape[0] != neg.shape[0]:
        raise ValueError("fp_a, fp_b and negatives must describe the same examples")
    used = neg > 0
    fp_a, fp_b, neg = fp_a[used], fp_b[used], neg[used]
    n = neg.shape[0]
    if n == 0:
        return []
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))  # (n_boot, N) example indices
    per_example = (fp_a - fp_b) / neg[:, None]  # (N, L)
    macro = per_example[draws].mean(axis=1)  # (n_boot, L)
    neg_tot = neg[draws].sum(axis=1)[:, None]  # (n_boot, 1)
    micro = (fp_a[draws].sum(axis=1) - fp_b[draws].sum(axis=1)) / neg_tot  # (n_boot, L)
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    rows = []
    for layer in range(fp_a.shape[1]):
        rows.append({
            "layer": layer + 1,
            "macro_diff": float(per_example[:, layer].mean()),
            "macro_lo": float(np.percentile(macro[:, layer], lo_q)),
            "macro_hi": float(np.percentile(macro[:, layer], hi_q)),
            "micro_diff": float((fp_a[:, layer].sum() - fp_b[:, layer].sum()) / neg.sum()),
            "micro_lo": float(np.percentile(micro[:, layer], lo_q)),
            "micro_hi": float(np.percentile(micro[:, layer], hi_q)),
            "n_examples": int(n),
        })
    return rows


def classification_scores(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy and macro F1 over ``labels`` (predictions outside ``labels`` count as wrong)."""
    if len(gold) != len(pred):
        raise ValueError("gold and pred differ in length")
    if not gold:
        return {"accuracy": 0.0, "macro_f1": 0.0, "n": 0}
    acc = float(np.mean([g == p for g, p in zip(gold, pred)]))
    return {"accuracy": acc, "macro_f1": float(macro_f1(gold, pred, labels)), "n": len(gold)}


def score_records(
    records: Sequence[Mapping[str, Any]],
    gold: Mapping[str, Mapping[str, Any]],
    iou_thresholds: Sequence[float] = (0.5,),
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score ERASER result records the way ERASER's scorer does.

    ``records``: ERASER results lines (dicts). ``gold``: ``annotation_id -> {"label": str,
    "rationales": {docid: [spans]}, "doc_lengths": {docid: n}}`` (``EraserDataset.gold_table()``);
    like ERASER, every gold annotation needs exactly one record. Returns a nested dict: ``n``,
    ``classification``, ``token_prf``, ``span_prf``, ``iou`` (threshold -> micro/macro), and where
    the records carry them ``soft``, ``comprehensiveness``/``sufficiency`` and ``aopc``.
    """
    by_id: dict[str, Mapping[str, Any]] = {}
    for r in records:
        aid = r.get("annotation_id")
        if aid not in gold:
            raise ValueError(f"result for unknown annotation {aid!r}")
        if aid in by_id:
            raise ValueError(f"two results for annotation {aid!r}")
        by_id[aid] = r
    missing = [a for a in gold if a not in by_id]
    if missing:
        raise ValueError(f"no result for {len(missing)} annotation(s), e.g. {missing[:3]}")

    gold_spans: dict[Key, list[Span]] = {}
    for aid, g in gold.items():
        for docid, spans in g["rationales"].items():
            gold_spans[(aid, docid)] = [tuple(s) for s in spans]
    pred_spans: dict[Key, list[Span]] = {}
    soft_pairs = []
    has_soft = False
    for aid, r in by_id.items():
        doc_lengths = gold[aid]["doc_lengths"]
        for rat in r.get("rationales", []) or []:
            docid = rat["docid"]
            if docid not in doc_lengths:
                raise ValueError(f"annotation {aid!r}: result for unknown document {docid!r}")
            hard = [(int(h["start_token"]), int(h["end_token"])) for h in rat.get("hard_rationale_predictions", []) or []]
            pred_spans.setdefault((aid, docid), []).extend(hard)
            soft = rat.get("soft_rationale_predictions")
            if soft is not None:
                has_soft = True
                n = doc_lengths[docid]
                if len(soft) != n:
                    raise ValueError(f"annotation {aid!r}: {len(soft)} soft scores for document {docid!r} of {n} tokens")
                soft_pairs.append((spans_to_mask(gold_spans.get((aid, docid), []), n), soft))

    out: dict[str, Any] = {"n": len(by_id)}
    if all("classification" in r for r in by_id.values()):
        labs = list(labels) if labels is not None else sorted({g["label"] for g in gold.values()})
        out["classification"] = classification_scores(
            [gold[a]["label"] for a in by_id], [by_id[a]["classification"] for a in by_id], labs
        )
    out["token_prf"] = token_prf(gold_spans, pred_spans)
    out["span_prf"] = span_prf(gold_spans, pred_spans)
    out["iou"] = iou_f1(gold_spans, pred_spans, iou_thresholds)
    if has_soft:
        out["soft"] = soft_token_scores(soft_pairs)
    with_scores = [r for r in by_id.values() if "classification" in r and "classification_scores" in r]
    out.update(faithfulness(with_scores))
    ao = aopc(with_scores)
    if ao is not None:
        out["aopc"] = ao
    return out
