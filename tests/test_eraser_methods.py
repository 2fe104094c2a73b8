"""Rationale methods and the shared engine, on a tiny random AdapLeR model."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from adapler.attention import attention_rollout, cls_attention
from adapler.data import class_label_map
from conftest import tiny_sentiment_model
from eraser_eval.align import align, make_windows
from eraser_eval.data import DATASETS
from eraser_eval.engine import Engine
from eraser_eval.methods import (
    AdapLeRMethod,
    AttentionMethod,
    ImportMethod,
    RandomMethod,
    SaliencyMethod,
    get_method,
)
from eraser_eval.results_file import load_results_jsonl
from eraser_eval.types import DocInput, round_sig

TEXTS = [
    "a truly wonderful , moving film 😀 with great acting .",
    "boring \u200b plot and awful dialogue ; i walked out .",
    " ".join(["unbelievably"] + ["long"] * 40 + ["review", "ending", "badly"]),
]


@pytest.fixture(scope="module")
def model():
    return tiny_sentiment_model(num_attention_heads=2)


def make_docs(tok, texts=TEXTS):
    docs = []
    for i, t in enumerate(texts):
        al = align(tok, t.split(" "))
        gold = np.zeros(al.num_tokens, bool)
        gold[: max(1, al.num_tokens // 3)] = True
        docs.append(DocInput(f"ann{i}", f"doc{i}", al, gold, "POS" if i % 2 == 0 else "NEG"))
    return docs


def test_class_label_map():
    spec = DATASETS["hatexplain"]
    cfg3 = SimpleNamespace(num_labels=3, id2label={0: "hatespeech", 1: "offensive", 2: "normal"})
    assert class_label_map(cfg3, spec) == ["toxic", "toxic", "non-toxic"]
    generic3 = SimpleNamespace(num_labels=3, id2label={0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"})
    assert class_label_map(generic3, spec) == ["toxic", "toxic", "non-toxic"]
    mv = DATASETS["movies"]
    cfg = SimpleNamespace(num_labels=2, id2label={0: "positive", 1: "negative"})  # reversed order, named
    assert class_label_map(cfg, mv) == ["POS", "NEG"]
    generic = SimpleNamespace(num_labels=2, id2label={0: "LABEL_0", 1: "LABEL_1"})
    assert class_label_map(generic, mv) == ["NEG", "POS"]
    with pytest.raises(ValueError, match="cannot map"):
        class_label_map(SimpleNamespace(num_labels=5, id2label={}), mv)


def test_round_sig():
    x = np.array([0.123456789, 1.23456789e-9, 0.0, -98765.4321, np.nan])
    assert round_sig(x).tolist() == [0.123457, 1.23457e-9, 0.0, -98765.4, 0.0]


def test_base_probs_are_mean_of_window_probs(model, tok):
    docs = make_docs(tok)
    eng = Engine(model, tok, max_length=16, batch_size=2)
    base = eng.unpruned(docs)
    for d, b in zip(docs, base):
        wins = make_windows(d.alignment, tok, 16)
        probs = []
        for w in wins:
            ids = torch.tensor([w.input_ids])
            with torch.no_grad():
                out = model(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids),
                            mode="masked", threshold_scale=0.0)
            probs.append(torch.softmax(out.logits, -1)[0].numpy())
        np.testing.assert_allclose(b["probs"], np.mean(probs, axis=0), atol=1e-5)
    assert len(make_windows(docs[2].alignment, tok, 16)) > 2  # the long doc really is windowed


def test_attention_methods_match_direct_computation(model, tok):
    docs = make_docs(tok)[:2]
    eng = Engine(model, tok, max_length=64, batch_size=4)
    att = AttentionMethod().explain(docs, eng, {})
    rol = AttentionMethod(rollout=True).explain(docs, eng, {})
    for d, a, r in zip(docs, att, rol):
        w = make_windows(d.alignment, tok, 64)[0]
        ids = torch.tensor([w.input_ids])
        am = torch.ones_like(ids)
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=am, token_type_ids=torch.zeros_like(ids), mode="masked",
                        threshold_scale=0.0, output_attentions=True)
        direct = cls_attention(out.attentions, am)[0, 1:-1].numpy()
        np.testing.assert_allclose(a.scores, round_sig(_mask(d.alignment.to_words(direct), d)), rtol=1e-4, atol=1e-7)
        direct_r = attention_rollout(out.attentions, am)[0, 1:-1].numpy()
        np.testing.assert_allclose(r.scores, round_sig(_mask(d.alignment.to_words(direct_r), d)), rtol=1e-4, atol=1e-7)
        assert a.hard is None and a.layer_masks is None


def _mask(scores, d):
    s = scores.copy()
    s[~d.alignment.scored] = 0
    return s


def test_adapler_depth_layers_and_hard_rationale(model, tok):
    docs = make_docs(tok)
    eng = Engine(model, tok, max_length=32, batch_size=2, threshold_scale=6.0)  # strong pruning
    outs = AdapLeRMethod().explain(docs, eng, {})
    some_pruned = False
    for d, o in zip(docs, outs):
        lm = o.layer_masks
        assert lm.shape == (3, d.num_tokens)
        # cumulative: a token alive at layer l+1 is alive at layer l
        assert (lm[1:] <= lm[:-1]).all()
        # depth score: token alive at layer l  <=>  depth >= l + 1
        for layer in range(3):
            assert (lm[layer] == (o.scores >= layer + 1)).all()
        assert (o.hard == lm[-1]).all()
        assert not o.hard[~d.alignment.scored].any() and (o.scores[~d.alignment.scored] == 0).all()
        assert o.extra["probs_pruned"].shape == (2,)
        some_pruned |= bool((~lm[-1][d.alignment.scored]).any())
    assert some_pruned
    # a chosen layer (1-based) and negative indexing
    first = AdapLeRMethod(layer=1).explain(docs, eng, {})
    assert all((f.hard == o.layer_masks[0]).all() for f, o in zip(first, outs))
    assert AdapLeRMethod(layer=-1).layer_index(3) == 2
    with pytest.raises(ValueError):
        AdapLeRMethod(layer=4).layer_index(3)


def test_saliency_nonnegative_and_target_dependent(model, tok):
    docs = make_docs(tok)
    eng = Engine(model, tok, max_length=32, batch_size=2)
    s0 = SaliencyMethod().explain(docs, eng, {"targets": [0, 0, 0]})
    s1 = SaliencyMethod().explain(docs, eng, {"targets": [1, 1, 1]})
    for d, a, b in zip(docs, s0, s1):
        assert a.scores.shape == (d.num_tokens,)
        assert (a.scores >= 0).all()
        assert (a.scores[~d.alignment.scored] == 0).all()
        assert a.scores[d.alignment.scored].max() > 0
        assert not np.allclose(a.scores, b.scores)


def test_random_is_seeded_and_order_independent(tok):
    docs = make_docs(tok)
    a = RandomMethod(seed=3).explain(docs, None, {})
    b = RandomMethod(seed=3).explain(docs[::-1], None, {})[::-1]
    c = RandomMethod(seed=4).explain(docs, None, {})
    for x, y, z in zip(a, b, c):
        assert (x.scores == y.scores).all()
        assert not (x.scores == z.scores).all()
    assert a[1].scores[1] == 0.0  # the lost zero-width-space token


def test_engine_disk_cache_and_dedup(model, tok, tmp_path):
    docs = make_docs(tok)
    eng = Engine(model, tok, max_length=32, batch_size=2, cache_dir=tmp_path)
    base = eng.unpruned(docs, attention=True, rollout=True)
    n_first = eng.forward_windows
    assert n_first > 0
    p = eng.predict([(d.alignment.subset([0, 1]), None) for d in docs] * 2)  # duplicates run once
    assert eng.forward_windows == n_first + 3
    eng2 = Engine(model, tok, max_length=32, batch_size=2, cache_dir=tmp_path)
    base2 = eng2.unpruned(docs)  # probabilities come from the cached attention pass
    p2 = eng2.predict([(d.alignment.subset([0, 1]), None) for d in docs])
    assert eng2.forward_windows == 0
    for a, b in zip(base, base2):
        np.testing.assert_array_equal(a["probs"], b["probs"])
    for a, b in zip(p[:3], p2):
        np.testing.assert_array_equal(a, b)
    assert eng2.fingerprint == eng.fingerprint
    # another window length is another cache entry
    assert Engine(model, tok, max_length=16, cache_dir=tmp_path).fingerprint != eng.fingerprint


def test_import_method_and_file_errors(tok, tmp_path):
    docs = make_docs(tok)[:2]
    path = tmp_path / "mine.jsonl"
    recs = [
        {"annotation_id": "ann0", "classification": "POS", "classification_scores": {"NEG": 0.1, "POS": 0.9},
         "rationales": [{"docid": "doc0", "hard_rationale_predictions": [{"start_token": 1, "end_token": 3}],
                         "soft_rationale_predictions": [float(i) for i in range(docs[0].num_tokens)]}]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    outs = ImportMethod(path).explain(docs, None, {})
    assert outs[0].hard.tolist()[:4] == [False, True, True, False]
    assert outs[0].scores[2] == 2.0 and outs[0].record["classification"] == "POS"
    assert outs[1].extra.get("missing")
    assert get_method("import", import_results=path).name == "import"
    with pytest.raises(ValueError, match="needs an ERASER results file"):
        get_method("import")
    with pytest.raises(ValueError, match="unknown method"):
        get_method("lime")
    # soft scores of the wrong length
    recs[0]["rationales"][0]["soft_rationale_predictions"] = [0.0]
    path.write_text(json.dumps(recs[0]) + "\n")
    with pytest.raises(ValueError, match="1 soft scores"):
        ImportMethod(path).explain(docs, None, {})
    # malformed lines name file and line
    path.write_text(json.dumps(recs[0]) + "\n\n{oops\n")
    with pytest.raises(ValueError, match=r"mine.jsonl:3: invalid JSON"):
        load_results_jsonl(path)
    path.write_text(json.dumps({"annotation_id": "a", "rationales": [{"docid": "d", "hard_rationale_predictions":
                                                                     [{"start_token": "0", "end_token": 1}]}]}) + "\n")
    with pytest.raises(ValueError, match=r"mine.jsonl:1: hard_rationale_predictions"):
        load_results_jsonl(path)


def test_adapler_method_needs_adapler_model(tok):
    plain = BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32))
    eng = Engine(plain, tok, max_length=32)
    assert not eng.is_adapler
    with pytest.raises(ValueError, match="AdapLeR model"):
        AdapLeRMethod().explain(make_docs(tok)[:1], eng, {})
    assert eng.unpruned(make_docs(tok)[:1])[0]["probs"].shape == (2,)  # plain classifiers still predict
