"""ferret (a peer explainability toolkit) runs end to end on a shipped AdapLeR model.

Its gradient explainers pass ``inputs_embeds`` and its SHAP explainer asks for
``output_hidden_states``: the model's forward takes both, as a Hugging Face classifier does.
"""

import numpy as np
import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import adapler  # noqa: F401  (registers the AdapLeR classes with the Auto* mappings)
from conftest import REPO, require

ferret = pytest.importorskip("ferret", reason="ferret-xai is in the dev extra")

TEXT = "a gorgeous, witty, seductive movie."
EXPLAINERS = {"Partition SHAP", "LIME", "Gradient", "Gradient (x Input)", "Integrated Gradient",
              "Integrated Gradient (x Input)"}


@pytest.mark.slow
def test_ferret_benchmark_explains_and_evaluates_the_shipped_sst2_model():
    path = require(REPO / "assets" / "models" / "sst2" / "config.json", "shipped sst2 model").parent
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    assert type(model).__name__ == "AdapLeRForSequenceClassification"
    tok = AutoTokenizer.from_pretrained(path)
    bench = ferret.Benchmark(model, tok)
    explanations = bench.explain(TEXT, target=1)
    tokens = tok.convert_ids_to_tokens(tok(TEXT)["input_ids"])
    assert {e.explainer for e in explanations} == EXPLAINERS
    for e in explanations:
        scores = np.asarray(e.scores, dtype=float)
        assert list(e.tokens) == tokens and scores.shape == (len(tokens),), e.explainer
        assert np.isfinite(scores).all() and np.abs(scores).max() > 0, e.explainer
    # the perturbation explainers agree with a reader: a sentiment word carries the positive class
    by_name = {e.explainer: e for e in explanations}
    for name in ("Partition SHAP", "LIME"):
        top = tokens[int(np.argmax(by_name[name].scores))]
        assert top in {"gorgeous", "witty", "seductive"}, (name, top)

    evaluations = bench.evaluate_explanations(explanations, target=1)
    assert len(evaluations) == len(explanations)
    for ev in evaluations:
        scores = {s.name: s.score for s in ev.evaluation_scores}
        assert {"aopc_compr", "aopc_suff", "taucorr_loo"} <= set(scores), ev.explanation.explainer
        assert all(np.isfinite(float(v)) for v in scores.values())
