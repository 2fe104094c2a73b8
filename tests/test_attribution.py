"""Integrated Gradients and occlusion (captum) as rationale methods, and the cost of every method.

Tiny random models with the real tokenizer; references are computed directly (the model on the
baseline, ablated inputs written out by hand), and pass counts are read from hooks on the
classifier head, i.e. what the model really ran.
"""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from adapler.attribution import ig_token_scores, integrated_gradients, occlusion
from conftest import tiny_sentiment_model, write_movies_folder
from eraser_eval import evaluate
from eraser_eval.__main__ import main as cli_main
from eraser_eval.align import align, make_windows
from eraser_eval.engine import Engine
from eraser_eval.methods import IntegratedGradientsMethod, OcclusionMethod, get_method
from eraser_eval.types import DocInput

TEXTS = [
    "a truly wonderful , moving film with unbelievably great acting .",
    "boring plot and awful dialogue ; i walked out .",
    " ".join(["unbelievably"] + ["long"] * 20 + ["review", "ending", "badly"]),
]


@pytest.fixture(scope="module")
def model():
    # a wider initialisation than BERT's 0.02, so that a random model's logits depend on its input
    return tiny_sentiment_model(num_attention_heads=2, initializer_range=0.2)


@pytest.fixture(scope="module")
def plain_model(tok):
    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                     intermediate_size=48, num_labels=3, initializer_range=0.2)
    return BertForSequenceClassification(cfg).eval()


def make_docs(tok, texts=TEXTS):
    docs = []
    for i, t in enumerate(texts):
        al = align(tok, t.split(" "))
        gold = np.zeros(al.num_tokens, bool)
        gold[: max(1, al.num_tokens // 3)] = True
        docs.append(DocInput(f"ann{i}", f"doc{i}", al, gold, "POS"))
    return docs


def _logit(model, ids, am, target):
    kwargs = {"mode": "masked", "threshold_scale": 0.0} if hasattr(model, "cps") else {}
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=am, token_type_ids=torch.zeros_like(ids), **kwargs).logits[:, target]


def _batch(tok, texts):
    enc = tok(texts, padding=True, return_tensors="pt")
    ids, am = enc["input_ids"], enc["attention_mask"]
    base = ids.clone()
    special = (ids == tok.cls_token_id) | (ids == tok.sep_token_id) | (am == 0)
    base[~special] = tok.pad_token_id
    return ids, am, base, special


@pytest.mark.parametrize("which", ["adapler", "plain"])
def test_ig_completeness(which, model, plain_model, tok):
    m = model if which == "adapler" else plain_model
    ids, am, base, special = _batch(tok, ["a gorgeous , witty , seductive movie .", "dull ."])
    targets = [1, 0]
    attr, delta = integrated_gradients(m, ids, am, base, targets, steps=50, return_delta=True)
    assert attr.shape == (*ids.shape, m.config.hidden_size)
    # completeness: attributions add up to f(x) - f(baseline), computed here by running the model on both
    diff = torch.stack([_logit(m, ids[i:i + 1], am[i:i + 1], t)[0] - _logit(m, base[i:i + 1], am[i:i + 1], t)[0]
                        for i, t in enumerate(targets)])
    assert diff.abs().min() > 1e-3  # a real difference to explain
    torch.testing.assert_close(attr.sum((1, 2)), diff, rtol=1e-2, atol=1e-4)
    assert (delta.abs() <= 1e-2 * diff.abs() + 1e-5).all()
    # few steps converge worse than many
    _, delta2 = integrated_gradients(m, ids, am, base, targets, steps=2, return_delta=True)
    assert delta2.abs().sum() > delta.abs().sum()
    # positions equal in input and baseline ([CLS], [SEP], padding) get exactly nothing
    assert (attr[special] == 0).all()
    scores = ig_token_scores(attr, am)
    assert (scores >= 0).all() and (scores[am == 0] == 0).all() and (scores[~special] > 0).all()


def test_ig_steps_in_small_batches_give_the_same_attributions(model, tok):
    ids, am, base, _ = _batch(tok, ["a gorgeous , witty , seductive movie .", "dull ."])
    whole = integrated_gradients(model, ids, am, base, [1, 1], steps=7)
    chunked = integrated_gradients(model, ids, am, base, [1, 1], steps=7, internal_batch_size=4)
    torch.testing.assert_close(whole, chunked, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="at least 1 step"):
        integrated_gradients(model, ids, am, base, [1, 1], steps=0)


class CountingModel(nn.Module):
    """p(class 1) = sigmoid(2 x number of pieces with id GOOD): occlusion is known by hand."""

    GOOD = 7

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        z = 2.0 * (input_ids == self.GOOD).sum(-1).float()  # (B,)
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(z), z], -1))


def test_occlusion_by_hand():
    g, o, mask_id = CountingModel.GOOD, 5, 103
    ids = torch.tensor([[101, g, o, g, g, o, 102]])  # [CLS] good other good good other [SEP]
    groups = torch.tensor([[0, 0, 1, 2, 2, 3, 0]])  # word 2 = two GOOD pieces; specials ride with group 0
    repl = torch.tensor([[101, mask_id, mask_id, mask_id, mask_id, mask_id, 102]])
    attr = occlusion(CountingModel(), ids, torch.ones_like(ids), groups, repl, [1], perturbations_per_eval=2)[0]
    s = torch.sigmoid
    full = s(torch.tensor(6.0))
    expected = torch.tensor([full - s(torch.tensor(4.0)), full - s(torch.tensor(4.0)), 0.0,
                             full - s(torch.tensor(2.0)), full - s(torch.tensor(2.0)), 0.0,
                             full - s(torch.tensor(4.0))])
    torch.testing.assert_close(attr, expected)
    # for class 0 the same words count against
    attr0 = occlusion(CountingModel(), ids, torch.ones_like(ids), groups, repl, [0])[0]
    torch.testing.assert_close(attr0, -expected)


def _count_rows(model):
    rows = {"forward": 0, "backward": 0}

    def fwd(mod, inputs, output):
        rows["forward"] += output.shape[0]

    def bwd(mod, grad_in, grad_out):
        rows["backward"] += grad_out[0].shape[0]

    return rows, [model.classifier.register_forward_hook(fwd), model.classifier.register_full_backward_hook(bwd)]


def test_engine_ig_and_occlusion_scores_and_pass_counts(model, tok):
    docs = make_docs(tok)
    max_length = 24
    windows = [make_windows(d.alignment, tok, max_length) for d in docs]
    assert [len(w) for w in windows] == [1, 1, 2]  # the long document is windowed
    eng = Engine(model, tok, max_length=max_length, batch_size=2)
    targets = [1, 0, 1]
    rows, hooks = _count_rows(model)
    try:
        ig = eng.integrated_gradients(docs, targets, steps=5)
        ig_rows = dict(rows)
        rows.update(forward=0, backward=0)
        occ = eng.occlusion(docs, targets)
        occ_rows = dict(rows)
        rows.update(forward=0, backward=0)
        eng.integrated_gradients(docs, targets, steps=5)  # cached: nothing runs
        eng.occlusion(docs, targets)
        assert rows == {"forward": 0, "backward": 0}
    finally:
        for h in hooks:
            h.remove()
    n_win = [len(w) for w in windows]
    # the counts reported per example are what the model ran (in passes over the whole input)
    assert sum(r["forward"] * n for r, n in zip(ig, n_win)) == ig_rows["forward"] == sum(n_win) * (5 + 2)
    assert sum(r["backward"] * n for r, n in zip(ig, n_win)) == ig_rows["backward"] == sum(n_win) * 5
    words_per_window = [len(np.unique(d.alignment.piece_word[w.start:w.end])) for d, ws in zip(docs, windows)
                        for w in ws]
    assert occ_rows == {"forward": sum(1 + n for n in words_per_window), "backward": 0}
    assert sum(r["forward"] * n for r, n in zip(occ, n_win)) == occ_rows["forward"]
    assert occ[0]["forward"] == 1 + docs[0].num_tokens and occ[0]["backward"] == 0
    for r in ig + occ:
        assert r["ms"] > 0
    # a one-window document: the engine's IG is adapler.attribution's on that window
    w = windows[0][0]
    ids = torch.tensor([w.input_ids])
    base = ids.clone()
    base[0, 1:-1] = tok.pad_token_id
    direct = ig_token_scores(integrated_gradients(model, ids, torch.ones_like(ids), base, [1], steps=5),
                             torch.ones_like(ids))[0, 1:-1].numpy()
    np.testing.assert_allclose(ig[0]["scores"], direct, rtol=1e-4, atol=1e-7)
    # occlusion of a one-window document: the drop of p(target) when a word is [MASK]ed, by hand
    d = docs[1]
    w = windows[1][0]
    with torch.no_grad():
        def p(input_ids):
            x = torch.tensor([input_ids])
            return torch.softmax(model(input_ids=x, mode="masked", threshold_scale=0.0).logits, -1)[0, 0].item()
        full = p(w.input_ids)
        for t in range(d.num_tokens):
            pieces = np.flatnonzero(d.alignment.piece_word == t)
            if not len(pieces):
                continue
            masked = list(w.input_ids)
            for q in pieces:
                masked[1 + q] = tok.mask_token_id
            assert occ[1]["scores"][pieces] == pytest.approx(full - p(masked), abs=1e-6)


def test_methods_word_scores_and_errors(model, tok):
    docs = make_docs(tok)
    eng = Engine(model, tok, max_length=16, batch_size=2)
    ig = IntegratedGradientsMethod(steps=3).explain(docs, eng, {"targets": [1, 1, 1]})
    occ = OcclusionMethod().explain(docs, eng, {"targets": [1, 1, 1]})
    for d, a, b in zip(docs, ig, occ):
        assert a.scores.shape == b.scores.shape == (d.num_tokens,)
        assert (a.scores >= 0).all() and a.scores.max() > 0
        assert np.abs(b.scores).max() > 0
        assert a.extra["cost"]["forward"] == 5 and a.extra["cost"]["backward"] == 3 and a.extra["cost"]["ms"] > 0
    assert get_method("integrated_gradients", ig_steps=7).steps == 7
    with pytest.raises(ValueError, match="at least 1 step"):
        get_method("integrated_gradients", ig_steps=0)


DOCS = {
    "negR_a.txt": "this movie is dull .\nthe acting is wooden and the plot makes no sense at all .",
    "posR_x.txt": "a delightful surprise .\ngreat cast , sharp writing , and a moving ending .",
    "posR_y.txt": " ".join(["superb"] * 30) + " .\n" + "i loved it .",
}
ANNS = [("negR_a.txt", "NEG", [(3, 4), (7, 9)]), ("posR_x.txt", "POS", [(1, 3), (5, 7)]),
        ("posR_y.txt", "POS", [(0, 5)])]
ALL = ["adapler", "saliency", "attention", "attention_rollout", "random", "integrated_gradients", "occlusion"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_movies_folder(tmp_path_factory.mktemp("eraser"), DOCS, ANNS)


def test_evaluate_reports_cost_of_every_method(model, tok, data_root, tmp_path):
    out = tmp_path / "out"
    kw = dict(dataset="movies", split="test", model=model, tokenizer=tok, data_dir=data_root, methods=ALL,
              batch_size=2, max_length=24, faithfulness="basic", ig_steps=4, show_progress=False)
    res = evaluate(out_dir=out, **kw)
    s = res.summary.set_index("method")
    assert list(s.index) == ALL
    passes = {m: (s.loc[m, "forward_passes"], s.loc[m, "backward_passes"]) for m in ALL}
    n_words = np.mean([d.alignment.scored.sum() for d in res.docs])
    assert all(len(make_windows(d.alignment, tok, 24)) == 1 for d in res.docs[:2])
    assert passes["adapler"] == (1, 0) and passes["saliency"] == (1, 1) and passes["random"] == (0, 0)
    assert passes["attention"] == passes["attention_rollout"] == (1, 0)
    assert passes["integrated_gradients"] == (4 + 2, 4)
    assert passes["occlusion"][1] == 0 and passes["occlusion"][0] >= 1 + n_words / 2  # long doc: 2 windows
    assert (s["ms_per_example"] > 0).all()
    assert s.loc["integrated_gradients", "ms_per_example"] > s.loc["attention", "ms_per_example"]
    # faithfulness and plausibility of the new methods are scored like the others
    for m in ("integrated_gradients", "occlusion"):
        assert np.isfinite(s.loc[m, ["auprc", "comprehensiveness", "sufficiency"]].astype(float)).all()
    # the report files carry the cost
    md = (out / "report.md").read_text()
    assert "## Cost of each explanation" in md and "ms per example" in md
    assert "Plausibility against cost" in (out / "report.html").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["methods"]["integrated_gradients"]["cost"]["backward_passes"] == 4
    assert metrics["config"]["ig_steps"] == 4
    assert "ms_per_example" in (out / "metrics.csv").read_text().splitlines()[0]
    # a rerun answered from the disk cache reports the cost measured when the passes ran
    again = evaluate(out_dir=tmp_path / "again", cache_dir=out / "cache", **kw).summary.set_index("method")
    np.testing.assert_allclose(again.loc["integrated_gradients", "ms_per_example"],
                               s.loc["integrated_gradients", "ms_per_example"])
    assert (again["ms_per_example"] > 0).all()


def test_cli_ig_steps(tmp_path, data_root, tok, model, capsys):
    model_dir = tmp_path / "tiny"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    rc = cli_main(["--dataset", "movies", "--data-dir", str(data_root), "--model", str(model_dir), "--out",
                   str(tmp_path / "o"), "--methods", "integrated_gradients,occlusion", "--ig-steps", "3",
                   "--faithfulness", "none", "--no-fpr", "--quiet", "--max-length", "24"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "ms_per_example" in printed and "forward_passes" in printed
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["methods"]["integrated_gradients"]["cost"][
        "forward_passes"] == 5
    rc = cli_main(["--dataset", "movies", "--data-dir", str(data_root), "--model", str(model_dir), "--out",
                   str(tmp_path / "o2"), "--methods", "integrated_gradients", "--ig-steps", "0", "--quiet"])
    assert rc == 2 and "at least 1 step" in capsys.readouterr().err
