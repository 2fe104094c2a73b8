"""The fused unpruned pass, the per-window faithfulness cache and piece-deletion inputs.

Reference values are computed the slow, separate way (eager attention with ``output_attentions``,
``adapler.saliency.gradient_x_input``, one window at a time, re-tokenising joined text) on tiny random
models with the real tokenizer.
"""

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from adapler.attention import attention_rollout, cls_attention, cls_attention_from_qk, rollout_from_qk
from adapler.saliency import gradient_x_input
from adapler.windows import split_windows
from conftest import require, tiny_sentiment_model
from eraser_eval import evaluate
from eraser_eval import metrics as M
from eraser_eval.align import align, make_windows, scatter_window_scores
from eraser_eval.data import load_dataset
from eraser_eval.engine import Engine
from eraser_eval.types import DocInput

TEXTS = [
    "a truly wonderful , moving film 😀 with great acting .",
    "boring \u200b plot and awful dialogue ; i walked out .",
    " ".join(["unbelievably"] + ["long"] * 40 + ["review", "ending", "badly"]),
    "short !",
    " ".join(f"w{i % 13} , café" for i in range(30)),
]


@pytest.fixture(scope="module")
def adapler_model():
    return tiny_sentiment_model()


@pytest.fixture(scope="module")
def plain_model(tok):
    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                     intermediate_size=48, num_labels=3)
    return BertForSequenceClassification(cfg).eval()


def make_docs(tok, texts=TEXTS):
    docs = []
    for i, t in enumerate(texts):
        al = align(tok, t.split(" "))
        docs.append(DocInput(f"ann{i}", f"doc{i}", al, np.zeros(al.num_tokens, bool), "POS"))
    return docs


def _kwargs(model):
    return {"mode": "masked", "threshold_scale": 0.0} if hasattr(model, "cps") else {}


def reference(model, tok, doc, max_length, target=None):
    """Probabilities, [CLS] attention, rollout and gradient x input of one document, window by
    window with batch size 1, the eager kernel and ``gradient_x_input``."""

    wins = make_windows(doc.alignment, tok, max_length, doc.query_ids)
    probs, att, rol = [], [], []
    for w in wins:
        ids = torch.tensor([w.input_ids])
        am, tt = torch.ones_like(ids), torch.tensor([w.token_type_ids])
        old = model.config._attn_implementation
        model.config._attn_implementation = "eager"  # attention probabilities (AdapLeR switches by itself)
        try:
            with torch.no_grad():
                out = model(input_ids=ids, attention_mask=am, token_type_ids=tt, output_attentions=True, **_kwargs(model))
        finally:
            model.config._attn_implementation = old
        probs.append(torch.softmax(out.logits.float(), -1)[0].numpy())
        att.append(cls_attention(out.attentions, am)[0].numpy())
        rol.append(attention_rollout(out.attentions, am)[0].numpy())
    p = np.mean(probs, axis=0)
    t = int(np.argmax(p)) if target is None else target
    sal = []
    for w in wins:
        ids = torch.tensor([w.input_ids])
        s = gradient_x_input(model, ids, torch.ones_like(ids), torch.tensor([w.token_type_ids]), targets=torch.tensor([t]))
        sal.append(s[0].numpy())
    n = doc.alignment.num_pieces
    return {"probs": p, "target": t, "attention": scatter_window_scores(wins, att, n),
            "rollout": scatter_window_scores(wins, rol, n), "saliency": scatter_window_scores(wins, sal, n)}


@pytest.mark.parametrize("which", ["adapler", "plain"])
def test_fused_pass_equals_separate_passes(which, adapler_model, plain_model, tok):
    model = adapler_model if which == "adapler" else plain_model
    docs = make_docs(tok)
    # max_length 16 and 3 full windows per step: documents of 1..5 windows, steps of several documents,
    # sub-batches with padding
    eng = Engine(model, tok, max_length=16, batch_size=3)
    fused = eng.unpruned(docs, saliency=True, attention=True, rollout=True)
    assert eng.forward_windows == sum(len(make_windows(d.alignment, tok, 16)) for d in docs)
    assert any(s["padded_tokens"] > s["tokens"] for s in eng.stats.values())  # mixed lengths were padded
    for d, f in zip(docs, fused):
        ref = reference(model, tok, d, 16)
        np.testing.assert_allclose(f["probs"], ref["probs"], atol=1e-5)
        assert f["target"] == ref["target"] == int(np.argmax(f["probs"]))
        for key in ("attention", "rollout", "saliency"):
            assert f[key].shape == (d.alignment.num_pieces,)
            np.testing.assert_allclose(f[key], ref[key], atol=1e-5, rtol=1e-4, err_msg=key)
    # everything is cached: asking again (or for less, or through the old views) runs nothing
    n = eng.forward_windows
    again = eng.unpruned(docs, saliency=True, attention=True)
    base = eng.unpruned(docs, attention=True, rollout=True)
    sal = eng.saliency(docs, [f["target"] for f in fused])
    assert eng.forward_windows == n
    for f, a, b, s in zip(fused, again, base, sal):
        np.testing.assert_array_equal(f["saliency"], a["saliency"])
        np.testing.assert_array_equal(f["rollout"], b["rollout"])
        np.testing.assert_array_equal(f["saliency"], s)


def test_saliency_for_given_targets(adapler_model, tok):
    docs = make_docs(tok)[:3]
    eng = Engine(adapler_model, tok, max_length=16, batch_size=1)  # budget below one long document: one per step
    for t in (0, 1):
        got = eng.saliency(docs, [t] * len(docs))
        for d, g in zip(docs, got):
            np.testing.assert_allclose(g, reference(adapler_model, tok, d, 16, target=t)["saliency"], atol=1e-5, rtol=1e-4)


def test_attention_from_projections_matches_eager(tok):
    torch.manual_seed(3)
    B, L, H, d = 3, 9, 4, 5
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, 6:] = False
    mask[2, 2:] = False
    qs = [torch.randn(B, L, H * d) for _ in range(3)]
    ks = [torch.randn(B, L, H * d) for _ in range(3)]
    scaling = d ** -0.5
    probs = []
    for q, k in zip(qs, ks):  # the eager kernel: softmax(q k^T * scaling + bias), bias -10000 on padded keys
        qh, kh = (x.reshape(B, L, H, d).transpose(1, 2) for x in (q, k))
        bias = (~mask).float()[:, None, None, :] * -10000.0
        probs.append(torch.softmax(qh @ kh.transpose(-1, -2) * scaling + bias, -1))
    am = mask.long()
    np.testing.assert_allclose(cls_attention_from_qk(qs[-1], ks[-1], mask, H, scaling).numpy(),
                               (probs[-1].mean(1)[:, 0, :] * am).numpy(), atol=1e-6)
    np.testing.assert_allclose(rollout_from_qk(qs, ks, mask, H, scaling).numpy(),
                               attention_rollout(probs, am).numpy(), atol=1e-6)
    assert (rollout_from_qk(qs, ks, mask, H, scaling)[~mask] == 0).all()


def test_predict_reuses_windows_and_equals_direct_run(adapler_model, tok):
    docs = make_docs(tok)
    eng = Engine(adapler_model, tok, max_length=16, batch_size=2)
    eng.unpruned(docs)  # runs (and records) every full-document window
    n = eng.forward_windows
    full = eng.predict([(d.alignment, None) for d in docs])
    assert eng.forward_windows == n  # the full documents' windows come from the unpruned pass
    long_doc = docs[2]
    tail_cut = long_doc.alignment.subset(range(long_doc.num_tokens - 2))  # drop the last two words
    head_cut = long_doc.alignment.subset(range(1, long_doc.num_tokens))  # drop the first word
    wins_full = make_windows(long_doc.alignment, tok, 16)
    wins_tail = make_windows(tail_cut, tok, 16)
    shared = sum(a.input_ids == b.input_ids for a, b in zip(wins_full, wins_tail))
    assert shared >= 2
    inputs = [(tail_cut, None), (head_cut, None), (tail_cut, None)]  # a duplicate input
    got = eng.predict(inputs)
    seen = {tuple(w.input_ids) for d in docs for w in make_windows(d.alignment, tok, 16)}
    new = {tuple(w.input_ids) for al in (tail_cut, head_cut) for w in make_windows(al, tok, 16)} - seen
    assert eng.forward_windows == n + len(new)  # only distinct windows never seen before were run
    n_full = sum(len(make_windows(d.alignment, tok, 16)) for d in docs)
    assert eng.stats["faithfulness"]["windows_requested"] == n_full + 2 * len(wins_tail) + len(make_windows(head_cut, tok, 16))
    for (al, _), p in zip(inputs, got):
        ref = reference(adapler_model, tok, DocInput("x", "x", al, np.zeros(al.num_tokens, bool), "POS"), 16)
        np.testing.assert_allclose(p, ref["probs"], atol=1e-5)
    for d, p in zip(docs, full):
        np.testing.assert_allclose(p, reference(adapler_model, tok, d, 16)["probs"], atol=1e-5)


def test_pruned_predict_reuses_the_adapler_pass(adapler_model, tok):
    docs = make_docs(tok)
    eng = Engine(adapler_model, tok, max_length=16, batch_size=2, threshold_scale=1.0, faithfulness_threshold_scale=1.0)
    ad = eng.adapler(docs)
    n = eng.forward_windows
    probs = eng.predict([(d.alignment, None) for d in docs])
    assert eng.forward_windows == n
    for a, p in zip(ad, probs):
        np.testing.assert_allclose(p, a["probs"], atol=1e-6)


def test_short_inputs_are_not_padded_to_full_length(adapler_model, tok):
    docs = make_docs(tok)
    eng = Engine(adapler_model, tok, max_length=64, batch_size=2)
    short = [d.alignment.subset([0]) for d in docs]  # first words: 1 to 5 pieces
    eng.predict([(al, None) for al in short] + [(docs[2].alignment, None)])
    s = eng.stats["faithfulness"]
    long_len = len(make_windows(docs[2].alignment, tok, 64)[0].input_ids)
    lens = [al.num_pieces + 2 for al in short]
    assert long_len > 40 and max(lens) <= 7
    # the long window runs alone; the five short ones share one batch padded to the longest of them,
    # not to the long window's length (let alone to max_length)
    assert s["batches"] == 2 and s["windows"] == 6
    assert s["padded_tokens"] == long_len + max(lens) * len(short)
    assert s["tokens"] == long_len + sum(lens)


PIECE_DELETION_CASES = [
    "the film 's plot , however , is n't \" great \" ... ( 7/10 ) <br /> e-mail me @ home !",
    "Café naïve 😀 中文 \u200b Ünïcödé a\u200bb [UNK] don't well-known u.s. ... 'S",
    "<b>bold</b> &amp; &quot;hi&quot; ½ ﬁne Ⅻ x²",
]


@pytest.mark.parametrize("text", PIECE_DELETION_CASES)
def test_piece_deletion_equals_retokenising_the_remaining_text(tok, text):
    """ERASER removes/keeps document tokens and re-tokenises what remains: deleting the removed words'
    pieces from the aligned document gives exactly the ids of tokenising the remaining words' text."""
    words = text.split(" ")
    al = align(tok, words)
    rng = np.random.default_rng(0)
    for _ in range(20):
        keep = np.flatnonzero(rng.random(len(words)) < 0.5)
        sub = al.subset(keep)
        joined = tok(" ".join(words[i] for i in keep), add_special_tokens=False)["input_ids"]
        assert sub.input_ids.tolist() == joined
        ref = align(tok, [words[i] for i in keep])
        assert sub.word_start.tolist() == ref.word_start.tolist()
        for w_sub, w_ref in zip(make_windows(sub, tok, 8), make_windows(ref, tok, 8), strict=True):
            assert w_sub.input_ids == w_ref.input_ids


def test_piece_deletion_on_movie_reviews(tok, data_dir):
    require(data_dir / "movies" / "test.jsonl", "ERASER movies data")
    ds = load_dataset("movies", "test", data_dir, limit=3)
    rng = np.random.default_rng(1)
    for a in ds.annotations:
        words = ds.documents[a.docid].tokens
        al = align(tok, words)
        for frac in (0.01, 0.5, 0.99):
            keep = np.flatnonzero(rng.random(len(words)) < frac)
            joined = tok(" ".join(words[i] for i in keep), add_special_tokens=False)["input_ids"]
            assert al.subset(keep).input_ids.tolist() == joined


def test_evaluate_faithfulness_equals_rerunning_the_remaining_text(tok, data_dir, adapler_model):
    """End to end: every comprehensiveness / sufficiency / AOPC probability in the records equals
    tokenising the remaining words' text from scratch and running the model window by window."""
    require(data_dir / "movies" / "test.jsonl", "ERASER movies data")
    thresholds = (0.01, 0.5)
    res = evaluate(dataset="movies", split="test", model=adapler_model, tokenizer=tok, data_dir=data_dir, limit=2,
                   methods=["adapler", "saliency", "attention", "random"], aopc_thresholds=thresholds,
                   show_progress=False, max_length=128, batch_size=4)
    labels = res.config["class_labels"]

    def brute(words):
        ids = tok(" ".join(words), add_special_tokens=False)["input_ids"]
        probs = []
        for s, e in split_windows(len(ids), 126):
            x = torch.tensor([[tok.cls_token_id] + ids[s:e] + [tok.sep_token_id]])
            with torch.no_grad():
                out = adapler_model(input_ids=x, attention_mask=torch.ones_like(x), mode="masked", threshold_scale=0.0)
            probs.append(torch.softmax(out.logits, -1)[0].numpy())
        p = np.mean(probs, axis=0)
        return {lab: float(p[c]) for c, lab in enumerate(labels)}

    checked = 0
    for name, recs in res.records.items():
        for i, rec in enumerate(recs):
            d, o = res.docs[i], res.outputs[name][i]
            words = d.tokens
            for lab, p in brute(words).items():
                assert rec["classification_scores"][lab] == pytest.approx(p, abs=1e-6)
            hard = M.spans_to_mask([(h["start_token"], h["end_token"]) for h in rec["rationales"][0]["hard_rationale_predictions"]],
                                   d.num_tokens)
            cases = [(hard, rec)]
            n = int(d.alignment.scored.sum())
            for thr, ts in zip(thresholds, rec["thresholded_scores"], strict=True):
                assert ts["threshold"] == thr
                cases.append((M.top_k_mask(o.scores, M.aopc_k(n, thr), o.tiebreak, eligible=d.alignment.scored), ts))
            for mask, got in cases:
                comp = brute([w for w, m in zip(words, mask) if not m])
                suff = brute([w for w, m in zip(words, mask) if m])
                for lab in labels:
                    assert got["comprehensiveness_classification_scores"][lab] == pytest.approx(comp[lab], abs=1e-6)
                    assert got["sufficiency_classification_scores"][lab] == pytest.approx(suff[lab], abs=1e-6)
                checked += 1
    assert checked == 4 * 2 * (1 + len(thresholds))
    # the work counters add up: every faithfulness window was run or reused
    work = res.work["faithfulness"]
    assert work["windows"] <= work["windows_requested"] and work["padded_tokens"] >= work["tokens"]


def test_unpruned_call_equals_the_models_masked_scale0_forward(adapler_model, tok):
    """The engine's unpruned calls skip AdapLeR's CP scoring at threshold scale 0 (nothing is removed):
    the logits must be those of ``model(mode="masked", threshold_scale=0)``, padding included."""
    docs = make_docs(tok)
    eng = Engine(adapler_model, tok, max_length=32, batch_size=8)
    wins = [w for j, d in enumerate(docs) for w in make_windows(d.alignment, tok, 32, doc=j)]
    ids, am, tt = eng._collate(wins)
    assert (am == 0).any()
    with torch.no_grad():
        fast = eng._call(ids, am, tt, "masked", 0.0).logits
        ref = adapler_model(input_ids=ids, attention_mask=am, token_type_ids=tt, mode="masked", threshold_scale=0.0).logits
        pruned = eng._call(ids, am, tt, "masked", 6.0).logits  # any other scale goes through the model's own path
        ref_pruned = adapler_model(input_ids=ids, attention_mask=am, token_type_ids=tt, mode="masked", threshold_scale=6.0).logits
    np.testing.assert_allclose(fast.numpy(), ref.numpy(), atol=1e-6)
    np.testing.assert_array_equal(pruned.numpy(), ref_pruned.numpy())
    assert not np.allclose(pruned.numpy(), ref.numpy(), atol=1e-4)  # scale 6 really prunes


def test_pruned_faithfulness_reuses_the_adapler_pass(tok, data_dir, adapler_model):
    """``faithfulness_threshold_scale`` equal to ``threshold_scale``: the full documents' pruned
    probabilities are the AdapLeR pass's (no window run twice), and the predicted class (every
    method's, also the saliency target) is the pruned model's."""
    require(data_dir / "movies" / "test.jsonl", "ERASER movies data")
    res = evaluate(dataset="movies", split="test", model=adapler_model, tokenizer=tok, data_dir=data_dir, limit=2,
                   methods=["adapler", "saliency"], faithfulness="basic", show_progress=False, max_length=128,
                   threshold_scale=3.0, faithfulness_threshold_scale=3.0)
    full = res.work["faithfulness (full)"]
    assert full["windows"] == 0 and full["windows_requested"] == res.work["forward (AdapLeR pruning)"]["windows"]
    labels = res.config["class_labels"]
    for rec, out in zip(res.records["adapler"], res.outputs["adapler"]):
        pruned = out.extra["probs_pruned"]
        assert rec["classification"] == labels[int(np.argmax(pruned))]
        for c, lab in enumerate(labels):
            assert rec["classification_scores"][lab] == pytest.approx(float(pruned[c]), abs=1e-7)
    assert [r["classification"] for r in res.records["saliency"]] == [r["classification"] for r in res.records["adapler"]]


def test_engine_public_api_scale_precomputed_and_bounded_cache(adapler_model, tok):
    """Threshold scale per call (no engine mutation), a precomputed pruned pass is used as it is, and
    the cache keeps at most ``cache_size`` entries per table (least recently used out)."""
    docs = make_docs(tok)
    eng = Engine(adapler_model, tok, max_length=16, batch_size=2, cache_size=3)
    at_one = eng.adapler(docs[:2])
    at_zero = eng.adapler(docs[:2], threshold_scale=0.0)
    assert eng.threshold_scale == 1.0
    assert at_zero[0]["keep"].all()  # scale 0 removes nothing
    fresh = Engine(adapler_model, tok, max_length=16, batch_size=2)
    for a, b in zip(at_one, fresh.adapler(docs[:2], threshold_scale=1.0)):
        np.testing.assert_array_equal(a["keep"], b["keep"])
    fake = [{"probs": np.array([0.5, 0.5]), "keep": np.ones((2, d.alignment.num_pieces), bool),
             "cp": np.zeros((2, d.alignment.num_pieces)), "layer_lengths": []} for d in docs[:1]]
    before = eng.forward_windows
    assert eng.adapler(docs[:1], threshold_scale=0.5, precomputed=fake)[0] is fake[0]
    assert eng.adapler(docs[:1], threshold_scale=0.5)[0] is fake[0]  # cached, not re-run
    assert eng.forward_windows == before
    eng.unpruned(docs)
    assert all(len(t) <= 3 for t in eng.cache.tables.values())
    with pytest.raises(ValueError, match="precomputed"):
        eng.adapler(docs[:2], precomputed=fake)
