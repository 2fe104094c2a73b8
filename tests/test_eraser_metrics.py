"""Every ERASER metric and FPR on small hand-computed examples (arithmetic in the comments)."""

import math

import numpy as np
import pytest

from eraser_eval import metrics as M


def approx(x):
    return pytest.approx(x, abs=1e-9)


# ---------------------------------------------------------------------------------------- token P/R/F1


def test_token_prf_micro_and_macro():
    gold = {"a": [(0, 4)], "b": [(2, 3)], "d": []}
    pred = {"a": [(2, 6)], "c": [(0, 1)], "d": []}
    out = M.token_prf(gold, pred)
    # a: gold {0,1,2,3}, pred {2,3,4,5}: overlap 2 -> P = 2/4, R = 2/4, F1 = 0.5
    # b: gold {2}, no prediction -> P = R = F1 = 0
    # c: prediction {0}, no gold -> P = R = F1 = 0
    # d: neither gold nor prediction -> not an instance
    # micro: overlap 2, |pred| = 4 + 1 = 5, |gold| = 4 + 1 = 5 -> P = R = F1 = 0.4
    assert out["micro"] == {"p": approx(0.4), "r": approx(0.4), "f1": approx(0.4)}
    # macro over 3 instances: P = (0.5 + 0 + 0) / 3, R likewise, F1 = mean of F1s = 0.5 / 3
    assert out["macro"]["p"] == approx(1 / 6)
    assert out["macro"]["r"] == approx(1 / 6)
    assert out["macro"]["f1"] == approx(1 / 6)
    assert out["n_instances"] == 3


def test_token_macro_f1_is_mean_of_instance_f1():
    # a: gold {0..9}, pred {0}: P = 1, R = 0.1, F1 = 2*0.1/1.1 = 0.181818...
    # b: gold {0}, pred {0}: P = R = F1 = 1
    out = M.token_prf({"a": [(0, 10)], "b": [(0, 1)]}, {"a": [(0, 1)], "b": [(0, 1)]})
    assert out["macro"]["p"] == approx(1.0)
    assert out["macro"]["r"] == approx(0.55)
    # mean of F1s = (0.181818 + 1) / 2 = 0.590909 (not F1(1.0, 0.55) = 0.709677)
    assert out["macro"]["f1"] == approx((2 * 0.1 / 1.1 + 1) / 2)
    # micro: overlap 2, |pred| 2, |gold| 11: P = 1, R = 2/11, F1 = 2*(2/11)/(1+2/11) = 4/13
    assert out["micro"]["f1"] == approx(4 / 13)


def test_no_predictions_gives_zero_not_error():
    out = M.token_prf({"a": [(0, 3)]}, {})
    assert out["micro"] == {"p": 0.0, "r": 0.0, "f1": 0.0}
    assert out["macro"]["f1"] == 0.0


def test_span_prf_exact_match():
    # a: gold {(0,2),(5,7)}, pred {(0,2),(5,6)}: exact matches 1 -> P = 1/2, R = 1/2
    out = M.span_prf({"a": [(0, 2), (5, 7)]}, {"a": [(0, 2), (5, 6)]})
    assert out["micro"]["f1"] == approx(0.5)


# ---------------------------------------------------------------------------------------- IOU-F1


def test_iou_f1_micro_macro_duplicates_and_unmatched():
    gold = {"a": [(0, 4), (10, 12)], "b": [(0, 2)]}
    pred = {"a": [(1, 4), (20, 22), (1, 4)], "b": [(0, 1)], "c": [(5, 6)]}
    out = M.iou_f1(gold, pred, thresholds=(0.5, 0.75))
    # a: (1,4) vs (0,4): |{1,2,3}| / |{0,1,2,3}| = 0.75 -> TP; (20,22): IOU 0; the duplicate (1,4) is
    #    one true positive but two predicted spans -> TP_a = 1, pred_a = 3, gold_a = 2
    # b: (0,1) vs (0,2): 1/2 = 0.5 >= 0.5 -> TP_b = 1, pred_b = 1, gold_b = 1
    # c: no gold -> TP_c = 0, pred_c = 1
    # micro @0.5: TP = 2, #pred = 5, #gold = 3 -> P = 0.4, R = 2/3, F1 = 2*0.4*(2/3)/(0.4+2/3) = 0.5
    m = out[0.5]["micro"]
    assert (m["p"], m["r"], m["f1"]) == (approx(0.4), approx(2 / 3), approx(0.5))
    # macro @0.5: R = mean(1/2, 1/1) = 0.75 over gold instances a, b;
    #             P = mean(1/3, 1/1, 0/1) = 4/9 over predicting instances a, b, c;
    #             F1 = F1(4/9, 3/4) = 2*(4/9)*(3/4)/((4/9)+(3/4)) = (2/3)/(43/36) = 24/43
    m = out[0.5]["macro"]
    assert (m["p"], m["r"], m["f1"]) == (approx(4 / 9), approx(0.75), approx(24 / 43))
    # @0.75: only a's span (IOU 0.75) passes -> TP = 1: micro P = 1/5, R = 1/3, F1 = 2*(1/15)/(8/15) = 0.25
    assert out[0.75]["micro"]["f1"] == approx(0.25)


def test_iou_empty_span_is_never_a_true_positive():
    # an empty gold span predicted as itself: IOU = 0/0 -> 0; one real span matches
    # micro: TP 1, 2 predicted, 2 gold -> P = R = F1 = 0.5
    out = M.iou_f1({"a": [(3, 3), (0, 2)]}, {"a": [(3, 3), (0, 2)]})
    assert out[0.5]["micro"]["f1"] == approx(0.5)
    # token level ignores the empty span entirely -> F1 = 1
    assert M.token_prf({"a": [(3, 3), (0, 2)]}, {"a": [(3, 3), (0, 2)]})["micro"]["f1"] == approx(1.0)


# ---------------------------------------------------------------------------------------- soft scores


def test_soft_scores_auprc_ap_roc_and_skipping():
    doc1 = ([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1])
    doc2 = ([0, 0, 0], [0.1, 0.5, 0.2])  # all negative
    out = M.soft_token_scores([doc1, doc2])
    # doc1 PR points (recall, precision), thresholds high to low: 0.9 -> (0.5, 1), 0.8 -> (0.5, 0.5),
    #   0.3 -> (1, 2/3), 0.1 -> (1, 0.5), plus sklearn's (0, 1) end point.
    #   trapezoids from recall 0: (0->0.5) * (1+1)/2 = 0.5; (0.5->0.5) = 0; (0.5->1) * (0.5+2/3)/2 = 0.291667;
    #   (1->1) = 0  -> AUPRC = 0.791667
    # doc2 has no positive: sklearn sets recall to 1 -> curve (1, 0) .. (0, 1) -> area 0.5; not skipped
    assert out["auprc"] == approx((0.5 + 0.5 * (0.5 + 2 / 3) / 2 + 0.5) / 2)
    # AP (doc2 skipped): precision at each positive = 1 (at 0.9) and 2/3 (at 0.3) -> (1 + 2/3) / 2
    assert out["average_precision"] == approx((1 + 2 / 3) / 2)
    # ROC-AUC (doc2 skipped): positive > negative pairs: 0.9>0.8, 0.9>0.1, 0.3>0.1; 0.3<0.8 -> 3/4
    assert out["roc_auc"] == approx(0.75)
    assert out["n_instances"] == 2 and out["n_skipped_ap_roc"] == 1


def test_soft_scores_length_mismatch():
    with pytest.raises(ValueError):
        M.soft_token_scores([([1, 0], [0.5])])


# ---------------------------------------------------------------------------------------- faithfulness


def _inst(c, full, comp=None, suff=None, thresholded=None):
    d = {"classification": c, "classification_scores": full}
    if comp is not None:
        d["comprehensiveness_classification_scores"] = comp
    if suff is not None:
        d["sufficiency_classification_scores"] = suff
    if thresholded is not None:
        d["thresholded_scores"] = thresholded
    return d


def test_comprehensiveness_and_sufficiency():
    insts = [
        # POS 0.8 full, 0.5 without rationale, 0.7 rationale only -> comp 0.3, suff 0.1
        _inst("POS", {"NEG": 0.2, "POS": 0.8}, {"NEG": 0.5, "POS": 0.5}, {"NEG": 0.3, "POS": 0.7}),
        # NEG 0.6 full, 0.6 without, 0.9 only -> comp 0.0, suff -0.3
        _inst("NEG", {"NEG": 0.6, "POS": 0.4}, {"NEG": 0.6, "POS": 0.4}, {"NEG": 0.9, "POS": 0.1}),
    ]
    out = M.faithfulness(insts)
    assert out["comprehensiveness"] == approx((0.3 + 0.0) / 2)
    assert out["sufficiency"] == approx((0.1 - 0.3) / 2)
    assert out["n_comprehensiveness"] == 2


def _th(t, comp_pos, suff_pos):
    return {"threshold": t,
            "comprehensiveness_classification_scores": {"NEG": 1 - comp_pos, "POS": comp_pos},
            "sufficiency_classification_scores": {"NEG": 1 - suff_pos, "POS": suff_pos}}


def test_aopc_mean_over_all_cells_and_points():
    full = {"NEG": 0.1, "POS": 0.9}
    insts = [
        # deltas comp: 0.9-0.8 = 0.1 (1%), 0.9-0.5 = 0.4 (50%); suff: 0.9-0.6 = 0.3, 0.9-0.9 = 0.0
        _inst("POS", full, thresholded=[_th(0.01, 0.8, 0.6), _th(0.5, 0.5, 0.9)]),
        # comp: 0.9-0.9 = 0.0, 0.9-0.2 = 0.7; suff: 0.9-0.3 = 0.6, 0.9-0.7 = 0.2
        _inst("POS", full, thresholded=[_th(0.01, 0.9, 0.3), _th(0.5, 0.2, 0.7)]),
    ]
    out = M.aopc(insts)
    # comp = mean(0.1, 0.4, 0.0, 0.7) = 0.3; points: 1% = (0.1+0.0)/2, 50% = (0.4+0.7)/2
    assert out["comprehensiveness"] == approx(0.3)
    assert out["comprehensiveness_points"] == {0.01: approx(0.05), 0.5: approx(0.55)}
    # suff = mean(0.3, 0.0, 0.6, 0.2) = 0.275
    assert out["sufficiency"] == approx(0.275)
    assert out["thresholds"] == [0.01, 0.5]


def test_aopc_thresholds_must_agree():
    full = {"NEG": 0.1, "POS": 0.9}
    insts = [_inst("POS", full, thresholded=[_th(0.01, 0.8, 0.6)]),
             _inst("POS", full, thresholded=[_th(0.05, 0.8, 0.6)])]
    with pytest.raises(ValueError, match="thresholds"):
        M.aopc(insts)
    assert M.aopc([_inst("POS", full)]) is None


def test_aopc_k():
    assert M.aopc_k(800, 0.01) == 8  # 8.0
    assert M.aopc_k(20, 0.01) == 1  # 0.2 -> at least 1
    assert M.aopc_k(30, 0.05) == 2  # 1.5 rounds half up
    assert M.aopc_k(3, 0.5) == 2  # 1.5 -> 2
    assert M.aopc_k(0, 0.5) == 0


# ---------------------------------------------------------------------------------------- FPR


def test_false_positive_rate_macro_micro_skips():
    gold = [np.array([1, 1, 0, 0, 0], bool), np.array([0, 0, 0, 1], bool), np.array([1, 1], bool)]
    sel = [
        np.array([[1, 1, 1, 1, 0], [1, 0, 1, 0, 0]], bool),
        np.array([[1, 0, 1, 1], [0, 0, 1, 0]], bool),
        np.array([[1, 1], [1, 0]], bool),
    ]
    units = [np.ones(5, bool), np.array([1, 1, 0, 1], bool), np.ones(2, bool)]  # token 2 of ex. 2 is lost
    rows = M.false_positive_rate(gold, sel, units)
    # ex1: negatives {2,3,4} = 3; layer 1 selects {2,3} -> FP 2 -> 2/3; layer 2 selects {2} -> 1/3
    # ex2: negatives = units & ~gold = {0,1} = 2 (token 2 is no unit); layer 1 FP {0} -> 1/2; layer 2 FP 0 -> 0
    # ex3: no negative -> skipped
    # layer 1: macro (2/3 + 1/2) / 2 = 7/12; micro (2 + 1) / (3 + 2) = 3/5
    # layer 2: macro (1/3 + 0) / 2 = 1/6;    micro (1 + 0) / 5 = 1/5
    assert [r["layer"] for r in rows] == [1, 2]
    assert rows[0]["macro"] == approx(7 / 12) and rows[0]["micro"] == approx(3 / 5)
    assert rows[1]["macro"] == approx(1 / 6) and rows[1]["micro"] == approx(1 / 5)
    assert rows[0]["n_examples"] == 2 and rows[0]["n_skipped"] == 1
    assert (rows[0]["false_positives"], rows[0]["negatives"]) == (3, 5)
    # mean selected fraction of units at layer 1: ex1 4/5, ex2 2/3 (tokens 0 and 3 of units {0,1,3})
    assert rows[0]["mean_selected"] == approx((4 / 5 + 2 / 3) / 2)


def test_fpr_all_skipped_is_nan():
    rows = M.false_positive_rate([np.array([1], bool)], [np.array([[1]], bool)])
    assert math.isnan(rows[0]["macro"]) and rows[0]["n_skipped"] == 1


def test_fpr_counts_per_example():
    gold = [np.array([1, 0, 0], bool), np.array([1, 1], bool)]
    sel = [np.array([[1, 1, 0], [0, 0, 1]], bool), np.array([[1, 0], [0, 0]], bool)]
    fps, negs, frac = M.fpr_counts(gold, sel)
    # ex1: negatives {1,2}; layer 1 selects {0,1} -> FP 1; layer 2 selects {2} -> FP 1
    # ex2: no negative; selected fractions 1/2 and 0
    assert fps.tolist() == [[1, 1], [0, 0]] and negs.tolist() == [2, 0]
    assert frac.tolist() == [[2 / 3, 1 / 3], [0.5, 0.0]]


def test_fpr_difference_bootstrap_point_estimates_and_interval():
    # 3 examples with 4 negatives each, one layer. A: FP 0, 1, 2; B: FP 2, 2, 2.
    fp_a = np.array([[0], [1], [2]])
    fp_b = np.array([[2], [2], [2]])
    neg = np.array([4, 4, 4])
    row = M.fpr_difference_bootstrap(fp_a, fp_b, neg, n_boot=4000, seed=1)[0]
    # per-example differences -2/4, -1/4, 0 -> macro mean -1/4; pooled (3 - 6) / 12 = -1/4
    assert row["macro_diff"] == approx(-0.25) and row["micro_diff"] == approx(-0.25)
    # resampled means lie in [-1/2, 0] and straddle the estimate; equal negatives make micro = macro
    assert -0.5 <= row["macro_lo"] < -0.25 < row["macro_hi"] <= 0.0
    assert row["micro_lo"] == approx(row["macro_lo"]) and row["micro_hi"] == approx(row["macro_hi"])
    assert row["n_examples"] == 3


def test_fpr_difference_bootstrap_identical_methods_and_skips():
    fp = np.array([[1, 0], [3, 2], [0, 0]])
    rows = M.fpr_difference_bootstrap(fp, fp, np.array([4, 5, 0]), n_boot=100)
    assert [r["layer"] for r in rows] == [1, 2]
    assert all(r[k] == 0 for r in rows for k in ("macro_diff", "macro_lo", "macro_hi", "micro_lo"))
    assert rows[0]["n_examples"] == 2  # the example without negatives is left out
    with pytest.raises(ValueError):
        M.fpr_difference_bootstrap(fp, fp[:2], np.array([4, 5, 0]))


# ---------------------------------------------------------------------------------------- helpers


def test_top_k_mask_ties_and_eligibility():
    s = [0.5, 0.9, 0.5, 0.9, 0.1]
    # order: 0.9@1, 0.9@3 (position breaks the tie), then 0.5@0, 0.5@2
    assert M.top_k_mask(s, 3).tolist() == [True, True, False, True, False]
    # tiebreak puts position 2 before 0 among the 0.5s
    assert M.top_k_mask(s, 3, tiebreak=[0, 0, 1, 0, 0]).tolist() == [False, True, True, True, False]
    # ineligible position 1 never chosen; k clipped to the 2 eligible positions
    assert M.top_k_mask(s, 10, eligible=[1, 0, 0, 1, 0]).tolist() == [True, False, False, True, False]
    assert not M.top_k_mask(s, 0).any()


def test_spans_roundtrip():
    mask = np.array([0, 1, 1, 0, 1, 0, 0, 1], bool)
    assert M.mask_to_spans(mask) == [(1, 3), (4, 5), (7, 8)]
    assert M.spans_to_mask([(1, 3), (4, 5), (7, 8)], 8).tolist() == mask.tolist()
    assert M.mask_to_spans(np.zeros(0, bool)) == []


def test_classification_scores():
    # accuracy 3/4; F1(POS): tp 2, pred 2, gold 3 -> P 1, R 2/3, F1 0.8; F1(NEG): tp 1, pred 2, gold 1 -> 2/3
    out = M.classification_scores(["POS", "POS", "POS", "NEG"], ["POS", "NEG", "POS", "NEG"], ["NEG", "POS"])
    assert out["accuracy"] == approx(0.75)
    assert out["macro_f1"] == approx((0.8 + 2 / 3) / 2)


# ---------------------------------------------------------------------------------------- score_records


def test_score_records_end_to_end():
    gold = {
        "a1": {"label": "POS", "rationales": {"d1": [(0, 2)]}, "doc_lengths": {"d1": 4}},
        "a2": {"label": "NEG", "rationales": {"d2": [(1, 3)]}, "doc_lengths": {"d2": 3}},
    }
    records = [
        {"annotation_id": "a1", "classification": "POS", "classification_scores": {"NEG": 0.3, "POS": 0.7},
         "comprehensiveness_classification_scores": {"NEG": 0.6, "POS": 0.4},
         "sufficiency_classification_scores": {"NEG": 0.2, "POS": 0.8},
         "rationales": [{"docid": "d1", "hard_rationale_predictions": [{"start_token": 0, "end_token": 1}],
                         "soft_rationale_predictions": [0.9, 0.3, 0.2, 0.0]}]},
        {"annotation_id": "a2", "classification": "POS", "classification_scores": {"NEG": 0.4, "POS": 0.6},
         "comprehensiveness_classification_scores": {"NEG": 0.5, "POS": 0.5},
         "sufficiency_classification_scores": {"NEG": 0.5, "POS": 0.5},
         "rationales": [{"docid": "d2", "hard_rationale_predictions": [{"start_token": 1, "end_token": 3}],
                         "soft_rationale_predictions": [0.0, 0.5, 0.4]}]},
    ]
    out = M.score_records(records, gold, labels=["NEG", "POS"])
    assert out["n"] == 2
    assert out["classification"]["accuracy"] == approx(0.5)
    # tokens: a1 gold {0,1} pred {0}: P 1, R 0.5, F1 2/3; a2 gold {1,2} pred {1,2}: 1, 1, 1
    # micro: overlap 3, pred 3, gold 4 -> P 1, R 0.75, F1 6/7
    assert out["token_prf"]["micro"]["f1"] == approx(6 / 7)
    assert out["token_prf"]["macro"]["f1"] == approx((2 / 3 + 1) / 2)
    # IOU: a1 (0,1) vs (0,2) = 0.5 -> TP; a2 exact -> TP: all P = R = 1
    assert out["iou"][0.5]["macro"]["f1"] == approx(1.0)
    # AUPRC: both documents rank their gold tokens first -> 1.0 each
    assert out["soft"]["auprc"] == approx(1.0)
    # comprehensiveness: a1 0.7-0.4 = 0.3; a2 (class POS) 0.6-0.5 = 0.1 -> 0.2
    # sufficiency: a1 0.7-0.8 = -0.1; a2 0.6-0.5 = 0.1 -> 0.0
    assert out["comprehensiveness"] == approx(0.2)
    assert out["sufficiency"] == approx(0.0)


def test_score_records_needs_every_annotation_and_valid_lengths():
    gold = {"a1": {"label": "POS", "rationales": {"d1": [(0, 2)]}, "doc_lengths": {"d1": 4}},
            "a2": {"label": "NEG", "rationales": {"d2": []}, "doc_lengths": {"d2": 3}}}
    rec1 = {"annotation_id": "a1", "rationales": [{"docid": "d1", "hard_rationale_predictions": []}]}
    with pytest.raises(ValueError, match="no result"):
        M.score_records([rec1], gold)
    with pytest.raises(ValueError, match="unknown annotation"):
        M.score_records([rec1, {"annotation_id": "zz"}], gold)
    bad = {"annotation_id": "a2", "rationales": [{"docid": "d2", "soft_rationale_predictions": [0.1]}]}
    with pytest.raises(ValueError, match="soft scores"):
        M.score_records([rec1, bad], gold)


def test_soft_scores_agree_with_sklearn_functions_with_ties():
    # optional heavy dependency: the reference implementation compared with
    from sklearn.metrics import (
        auc,
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
    )

    rng = np.random.default_rng(0)
    pairs = []
    for n in (2, 5, 40, 300):
        for _ in range(5):
            truth = rng.random(n) < 0.3
            truth[0], truth[-1] = True, False  # both classes present
            scores = np.round(rng.random(n), 1)  # many ties
            pairs.append((truth, scores))
    out = M.soft_token_scores(pairs)
    ref_auprc = np.mean([auc(*precision_recall_curve(t, s)[1::-1]) for t, s in pairs])
    assert out["auprc"] == pytest.approx(ref_auprc, abs=1e-12)
    assert out["average_precision"] == pytest.approx(np.mean([average_precision_score(t, s) for t, s in pairs]), abs=1e-12)
    assert out["roc_auc"] == pytest.approx(np.mean([roc_auc_score(t, s) for t, s in pairs]), abs=1e-12)


def test_iou_matches_set_definition_on_random_spans():
    rng = np.random.default_rng(1)
    for _ in range(200):
        g = [tuple(sorted(rng.integers(0, 15, 2))) for _ in range(rng.integers(1, 4))]
        p = [tuple(sorted(rng.integers(0, 15, 2))) for _ in range(rng.integers(1, 4))]
        best = M._best_iou(p, g)
        for sp, b in zip(p, best):
            ref = max(
                len(set(range(*sp)) & set(range(*t))) / len(set(range(*sp)) | set(range(*t)))
                 if set(range(*sp)) | set(range(*t)) else 0.0 for t in g
            )
            assert b == ref
