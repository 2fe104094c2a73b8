"""The explorer on models of your own data: their class names, a pair model's second text (segment ids,
the model's own logits), refusals with a message, and ``--dataset`` examples (command line and API).

Tiny random AdapLeR models built here record their dataset in the config as training does
(``config.adapler_dataset``); the data are a folder of ticket CSVs and a folder of NLI JSONL pairs
written by the tests (``test_own_data`` trains on the same data through the README's commands).
"""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch
from test_app_api import no_traceback, serving
from test_own_data import NLI, run_explorer, write_nli, write_tickets

from adapler import AdapLeRForSequenceClassification
from adapler import data as D
from conftest import tiny_config

TICKET_LABELS = ["billing", "bug", "praise"]
NLI_LABELS = ["contradiction", "entailment"]
PREMISE, HYPOTHESIS = NLI[0][0], NLI[0][1]
OUT = ["status", "prediction", "prediction_details", "window", "heatmap", "lengths", "rationales", "metrics_note",
       "metrics", "speed", "speed_note", "download_json", "download_csv", "cost"]


def make_model(folder, tokenizer, labels, source: D.DatasetSpec):
    """A tiny random AdapLeR with class names ``labels`` that records ``source`` as training does; eta 1
    so tokens really drop, and a large classifier so that segment ids move the probabilities visibly."""
    torch.manual_seed(0)
    cfg = tiny_config(num_hidden_layers=2, eta_init=1.0, num_labels=len(labels), id2label=dict(enumerate(labels)),
                      label2id={n: i for i, n in enumerate(labels)})
    cfg.adapler_dataset = source.describe()
    model = AdapLeRForSequenceClassification(cfg)
    with torch.no_grad():
        model.classifier.weight.mul_(50)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def own(tmp_path_factory, base_tokenizer):
    base = tmp_path_factory.mktemp("own_app")
    (base / "tickets").mkdir()
    write_tickets(base / "tickets" / "train.csv")
    write_tickets(base / "tickets" / "test.csv", rows=9)
    write_nli(base / "nli")
    tickets = D.dataset_source(str(base / "tickets"))
    nli = D.dataset_source(str(base / "nli"), text_column="premise", text_pair_column="hypothesis")
    (base / "no_models").mkdir()
    return {"base": base, "tickets": tickets, "nli": nli,
            "single": make_model(base / "single", base_tokenizer, TICKET_LABELS, tickets),
            "pair": make_model(base / "pair", base_tokenizer, NLI_LABELS, nli)}


@pytest.fixture(scope="module")
def server(own):
    # here, not at the top: Gradio loads only for the tests that use the app
    from app import analysis as A
    from app import build_demo

    examples = A.dataset_examples(own["tickets"], "test", own["single"])
    with serving(lambda: build_demo(own["single"], None, models_dir=own["base"] / "no_models",
                                    allow_local_paths=True, dataset_examples=examples)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    # here, not at the top: Gradio's client loads only for the tests that use it
    from gradio_client import Client

    return Client(server["url"], verbose=False)


def analyze(client, model, text, text_pair=None):
    """The Explore tab's endpoint for the ``--model`` (a picker label) or a model folder (a path); without
    ``text_pair`` as an older client calls it (5 arguments)."""
    from app.ui import LOCAL_CHOICE  # here, not at the top: Gradio loads only for the tests that use the app

    choice = [model, ""] if isinstance(model, str) else [LOCAL_CHOICE, str(model)]
    args = [*choice, text, 1.0, False] + ([text_pair] if text_pair is not None else [])
    return dict(zip(OUT, client.predict(*args, api_name="/analyze")))


def handler(server, name):
    """A private event handler of the page (no API endpoint), by its function name."""
    return next(f.fn for f in server["demo"].fns.values() if getattr(f.fn, "__name__", "") == name)


# -------------------------------------------------------------------------------------------------- labels

def test_own_class_names_in_the_prediction(client, server):
    out = analyze(client, server["state"].default_choice, "I was charged twice for one order")
    assert out["status"] == ""
    assert {c["label"] for c in out["prediction"]["confidences"]} == set(TICKET_LABELS)
    raw = client.predict("I was charged twice for one order", 1.0, "", "", api_name="/analyze_json")
    assert list(raw["prediction"]["probabilities"]) == TICKET_LABELS and raw["prediction"]["label"] in TICKET_LABELS
    assert raw["text_pair"] is None and set(raw["windows"][0]["token_type_ids"]) == {0}


# -------------------------------------------------------------------------------------------------- pairs

def test_pair_analysis_is_the_models_own_pair_encoding(own, base_tokenizer):
    from app import analysis as A  # the explorer's model handling only for the tests that use it

    bundle = A.load_bundle(own["pair"])
    assert bundle.pair and "reads a pair of texts" in bundle.describe()
    a = A.analyze(bundle, PREMISE, 1.0, text_pair=HYPOTHESIS)
    enc = base_tokenizer(PREMISE, HYPOTHESIS, return_tensors="pt")
    ids, types = enc["input_ids"][0].tolist(), enc["token_type_ids"][0].tolist()
    (w,) = a.windows
    assert w.pieces == base_tokenizer.convert_ids_to_tokens(ids) and w.token_type_ids == types
    n_second = len(base_tokenizer(HYPOTHESIS, add_special_tokens=False)["input_ids"])
    assert types[-n_second - 1:] == [1] * (n_second + 1) and set(types[:-n_second - 1]) == {0}
    model = bundle.model
    with torch.no_grad():
        pruned = torch.softmax(model(**enc).logits[0], -1).numpy()
        unpruned = torch.softmax(model(**enc, threshold_scale=0.0).logits[0], -1).numpy()
        one_segment = torch.softmax(model(input_ids=enc["input_ids"], threshold_scale=0.0).logits[0], -1).numpy()
    np.testing.assert_allclose(a.probs, pruned, atol=1e-5)
    np.testing.assert_allclose(a.probs_full, unpruned, atol=1e-5)
    assert np.abs(one_segment - unpruned).max() > 1e-3  # the segment ids matter for this model
    assert w.layer_lengths[-1] < len(ids)  # tokens really dropped in the pruned pass
    # only the first text is scored; the timed and counted passes ran on the whole pair
    assert a.words == PREMISE.split() and all(len(m["scores"]) == len(a.words) for m in a.methods.values())
    assert a.speed["input_tokens"] == len(ids) and a.speed["tokens_processed_unpruned"] == 2 * len(ids)


def test_pair_through_the_api(client, own):
    raw = client.predict(PREMISE, 1.0, str(own["pair"]), "", False, HYPOTHESIS, api_name="/analyze_json")
    assert "error" not in raw, raw
    assert raw["text_pair"] == HYPOTHESIS and list(raw["prediction"]["probabilities"]) == NLI_LABELS
    assert raw["windows"][0]["token_type_ids"][-1] == 1 and [x["word"] for x in raw["words"]] == PREMISE.split()
    out = analyze(client, own["pair"], PREMISE, "<b>" + HYPOTHESIS + "</b>")
    assert out["status"] == "" and out["prediction"]["label"] in NLI_LABELS
    assert "Second text" in out["rationales"] and f"&lt;b&gt;{HYPOTHESIS}&lt;/b&gt;" in out["rationales"]
    hover = json.loads(out["heatmap"]["plot"])["data"][0]["customdata"][0]
    assert [c[0] for c in hover].count("[SEP] (second text)") == 1  # the pair's closing [SEP]


def test_single_text_model_refuses_a_second_text(client, server):
    raw = client.predict("the app crashes", 1.0, "", "", False, "a second text", api_name="/analyze_json")
    assert "reads a single text" in raw["error"]
    out = analyze(client, server["state"].default_choice, "the app crashes", "a second text")
    assert "reads a single text" in out["status"] and not out["prediction"]
    no_traceback(out)
    assert analyze(client, server["state"].default_choice, "the app crashes", "   ")["status"] == ""  # blank box


@pytest.mark.parametrize("second", [None, "", "  \n"])
def test_pair_model_needs_its_second_text(client, own, second):
    args = [PREMISE, 1.0, str(own["pair"]), ""] + ([False, second] if second is not None else [])
    raw = client.predict(*args, api_name="/analyze_json")
    assert re.search(r"reads a pair of texts .*'premise' and 'hypothesis'.*second text", raw["error"])
    out = analyze(client, own["pair"], PREMISE, second)
    assert "reads a pair of texts" in out["status"] and not out["prediction"]
    no_traceback(out)


def test_second_text_box_follows_the_model(server, own):
    model_info = handler(server, "model_info")
    info, box = model_info(str(own["pair"]), "")
    assert "reads a pair of texts" in info and box["visible"] is True
    info, box = model_info(server["state"].default_choice, "")
    assert "billing" in info and box["visible"] is False and box["value"] == ""  # hidden and emptied


# -------------------------------------------------------------------------------------------------- --dataset

def test_dataset_examples_listed_and_loaded(client, server, own):
    from app import analysis as A  # the explorer's model handling only for the tests that use it

    rows = list(csv.DictReader((own["base"] / "tickets" / "test.csv").open()))
    listed = client.predict(api_name="/examples")["own_dataset"]
    assert listed["split"] == "test" and listed["name"] == own["tickets"].title
    assert [(e["text"], e["label"], e["text_pair"]) for e in listed["examples"]] == [
        (r["text"], r["label"], None) for r in rows]
    load = handler(server, "_load_own_example")
    first = listed["examples"][0]
    assert load(first["id"]) == (first["text"], "", None)  # text, emptied second text, no human rationale
    server["state"].dataset_by_id["pair-example"] = pair = A.DatasetExample("pair-example", "a", "b", "billing")
    try:
        text, box, human = load(pair.id)
        assert (text, box["value"], box["visible"], human) == ("a", "b", True, None)
    finally:
        del server["state"].dataset_by_id[pair.id]


def test_cli_lists_the_pair_examples(own, monkeypatch):
    code, built = run_explorer(["--model", str(own["pair"]), "--dataset", str(own["base"] / "nli"),
                                "--text-column", "premise", "--text-pair-column", "hypothesis",
                                "--split", "validation"], monkeypatch)
    rows = [json.loads(line) for line in (own["base"] / "nli" / "validation.jsonl").read_text().splitlines()]
    examples = built["dataset_examples"].examples
    assert code == 0 and [(e.text, e.text_pair, e.label) for e in examples] == [
        (r["premise"], r["hypothesis"], r["label"]) for r in rows]


BAD = {  # name: (model, options, message)
    "missing column": ("single", ["--dataset", "{tickets}", "--text-column", "body"], r"no column 'body'"),
    "missing file": ("single", ["--dataset", "{base}/nope.csv"], r"nope.csv: no such file"),
    "missing split": ("pair", ["--dataset", "{nli}", "--text-column", "premise", "--text-pair-column", "hypothesis"],
                      r"no split 'test' \(available: train, validation\)"),
    "pair model, one column": ("pair", ["--dataset", "{nli}", "--text-column", "premise", "--split", "validation"],
                               r"reads a pair of texts .*--text-pair-column"),
    "single model, two columns": ("single", ["--dataset", "{nli}", "--text-column", "premise", "--text-pair-column",
                                             "hypothesis", "--split", "validation"], r"reads a single text"),
    "other labels": ("single", ["--dataset", "{nli}", "--text-column", "premise", "--split", "validation"],
                     r"labels 'contradiction', 'entailment' of .* are not classes of the model"),
    "column without --dataset": ("single", ["--text-column", "body"], r"--text-column goes with --dataset"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_cli_bad_dataset_options_exit_2(own, monkeypatch, capsys, case):
    model, options, message = BAD[case]
    paths = {"tickets": own["base"] / "tickets", "nli": own["base"] / "nli", "base": own["base"]}
    code, built = run_explorer(["--model", str(own[model]), *[o.format(**paths) for o in options]], monkeypatch)
    err = capsys.readouterr().err
    assert code == 2 and not built, err  # stopped before the page was built
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.search(message, lines[0]) and "Traceback" not in err, err
