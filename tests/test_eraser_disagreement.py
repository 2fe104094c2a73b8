"""Ranking a report's examples by disagreement (eraser_eval.disagreement), values worked out by hand."""

import math

import pytest

from eraser_eval.disagreement import agreement_columns, example_agreement, rank_disagreement

RECORDS = [
    # human {0,1}; AdapLeR {1,2}: its one span has IOU 1/3 < 0.5 -> IOU-F1 0; token P = R = 1/2 -> F1 0.5;
    # saliency {0,1,2}: overlap 2*2 / (2+3) = 0.8
    {"annotation_id": "a", "label": "toxic", "predicted": "toxic", "tokens": list("abcdef"),
     "human": [[0, 2]], "hard": {"adapler": [[1, 3]], "saliency": [[0, 3]]}},
    # human {0,1}; AdapLeR {0,1} + {5}: spans (0,2) hits (IOU 1), (5,6) misses -> P 1/2, R 1 -> IOU-F1 2/3;
    # token P 2/3, R 1 -> 0.8; saliency {0}: overlap 2*1 / (3+1) = 0.5
    {"annotation_id": "b", "label": "toxic", "predicted": "non-toxic", "tokens": list("abcdef"),
     "human": [[0, 2]], "hard": {"adapler": [[0, 2], [5, 6]], "saliency": [[0, 1]]}},
    # no human rationale: human measures undefined; AdapLeR {0} vs saliency {3}: overlap 0
    {"annotation_id": "c", "label": "non-toxic", "predicted": "non-toxic", "tokens": list("abcd"),
     "human": [], "hard": {"adapler": [[0, 1]], "saliency": [[3, 4]]}},
]


def test_example_agreement_by_hand():
    a = example_agreement(RECORDS[0])
    assert a["iou_f1_human"] == 0.0
    assert a["token_f1_human"] == pytest.approx(0.5)
    assert a["overlap_saliency"] == pytest.approx(0.8)
    b = example_agreement(RECORDS[1])
    assert b["iou_f1_human"] == pytest.approx(2 / 3)
    assert b["token_f1_human"] == pytest.approx(0.8)
    assert b["overlap_saliency"] == pytest.approx(0.5)
    c = example_agreement(RECORDS[2])
    assert math.isnan(c["iou_f1_human"]) and math.isnan(c["token_f1_human"])
    assert c["overlap_saliency"] == 0.0


def test_both_empty_is_undefined_not_agreement():
    rec = {"annotation_id": "d", "tokens": ["x"], "human": [], "hard": {"adapler": [], "saliency": []}}
    assert math.isnan(example_agreement(rec)["overlap_saliency"])


def test_rank_by_human_and_by_method():
    by_human = rank_disagreement(RECORDS, "iou_f1_human")
    assert list(by_human["annotation_id"]) == ["a", "b"]  # "c" has no human rationale
    by_sal = rank_disagreement(RECORDS, "overlap_saliency")
    assert list(by_sal["annotation_id"]) == ["c", "b", "a"]
    assert list(by_sal.index) == [2, 1, 0]  # positions in the records
    assert by_sal["n_tokens"].tolist() == [4, 6, 6]
    assert agreement_columns(RECORDS) == ["iou_f1_human", "token_f1_human", "overlap_saliency"]
    with pytest.raises(ValueError, match="overlap_attention"):
        rank_disagreement(RECORDS, "overlap_attention")
