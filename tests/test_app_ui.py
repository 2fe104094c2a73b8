"""The explorer's handlers, tables and figures on a fake Analysis: no model, no server, no browser."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_eraser_disagreement import RECORDS

from app import analysis as A
from app import plots as P
from app import ui
from eraser_eval.analysis import METHOD_ORDER, Analysis, InputError, WindowResult, analyze_text
from eraser_eval.report import DEFINITIONS, method_label, metric_label

WORDS = ["a", "truly", "awful", "film"]


def fake_analysis(human: bool = True, windows: int = 1) -> Analysis:
    layers = 2
    wins = []
    for _ in range(windows):
        keep = np.array([[1, 1, 1, 1, 1, 1], [1, 0, 1, 1, 0, 1]], dtype=bool)
        wins.append(WindowResult(
            start=0, end=4, pieces=["[CLS]", *WORDS, "[SEP]"], piece_word=[-1, 0, 1, 2, 3, -1],
            cp=np.linspace(0, 1, 12).reshape(layers, 6), keep=keep, thresholds=np.array([0.1, 0.2]),
            layer_lengths=keep.sum(1).astype(float), probs=np.array([0.8, 0.2])))
    rng = np.random.default_rng(0)
    methods = {name: {"scores": rng.random(4), "selected": np.array([False, True, True, False])}
               for name in METHOD_ORDER}
    metrics = [{"method": m, "selected": 2, "human": 1, "token_precision": 0.5, "token_recall": 1.0,
                "token_f1": 0.667, "iou_f1": 0.0, "auprc": 0.5, "fpr": 0.333} for m in METHOD_ORDER]
    speed = {"input_tokens": 6, "tokens_processed_unpruned": 12, "tokens_processed_pruned": 10.0,
             "flops_unpruned": 2.0e6, "flops_pruned": 1.5e6, "flops_speedup": 1.333,
             "parity_flops_unpruned": 2.1e6, "parity_flops_pruned": 1.6e6, "parity_flops_speedup": 1.31,
             "ms_unpruned": 2.0, "ms_pruned_drop": 1.5, "ms_pruned_masked": 2.2, "measured_speedup": 1.333,
             "timing": "batch 1, 1 window(s), median of 3 run(s) (masked: 1 run), 1 CPU thread(s)"}
    return Analysis(
        text=" ".join(WORDS), model_path="fake", labels=["negative", "positive"], threshold_scale=1.0,
        num_layers=layers, words=WORDS, spans=[(0, 1), (2, 7), (8, 13), (14, 18)],
        scored=np.ones(4, dtype=bool), windows=wins, probs=np.array([0.8, 0.2]), probs_full=np.array([0.7, 0.3]),
        methods=methods, k=2, human=np.array([False, False, True, False]) if human else None,
        human_source="hatexplain test, annotation x" if human else None, metrics=metrics if human else None,
        speed=speed, notices=["a notice <b>escaped</b>"], timings_ms={"total": 12.3},
        costs={"adapler": {"forward": 1, "backward": 0, "ms": 1.5}, "saliency": {"forward": 1, "backward": 1, "ms": 4.0},
               "integrated_gradients": {"forward": 22, "backward": 20, "ms": 80.0}})


def test_tables_and_details():
    a = fake_analysis()
    speed = ui.speed_table(a)
    assert list(speed["model"])[0].startswith("unpruned") and len(speed) == 3
    assert "1.33x FLOPs" in speed.iloc[1]["speedup"]
    metrics = ui.metrics_table(a)
    assert len(metrics) == len(METHOD_ORDER) and metrics["token_f1"].iloc[0] == 0.667
    assert ui.metrics_table(fake_analysis(human=False)).empty
    cost = ui.cost_table(a)  # in METHOD_ORDER, only the methods that ran
    assert list(cost["method"]) == [A.METHOD_TITLES[m] for m in ("adapler", "saliency", "integrated_gradients")]
    assert cost.iloc[2][["forward passes", "backward passes", "measured ms"]].tolist() == [22, 20, 80.0]
    details = ui.prediction_details(a)
    assert "negative 0.800" in details and "same class" in details


def test_figures_and_rationales():
    a = fake_analysis(windows=2)
    heat = P.survival_heatmap(a.windows[0], a.num_layers)
    assert heat.data and heat.data[0].type == "heatmap"
    assert P.lengths_curve(a.windows, a.num_layers).data
    html = P.rationales_html(a, A.METHOD_TITLES, METHOD_ORDER)
    assert all(w in html for w in WORDS)
    assert "<b>" not in P.notices_html(a.notices)


def test_downloads(tmp_path):
    pj, pc = A.write_downloads(fake_analysis(), tmp_path)
    data = json.loads(pj.read_text())
    assert data["prediction"]["label"] == "negative" and len(data["words"]) == 4
    assert pc.read_text().splitlines()[0].startswith("index,word")


def test_run_analysis_handler(monkeypatch):
    """The Explore handler: outputs for a result, a readable message for a user error, no traceback."""
    state = ui.AppState.__new__(ui.AppState)  # no models or data folders needed
    monkeypatch.setattr(ui.AppState, "bundle", lambda self, choice, local: object())
    asked = {}
    monkeypatch.setattr(A, "analyze", lambda bundle, text, scale, human, slow_methods, text_pair: asked.update(
        slow=slow_methods, text_pair=text_pair) or fake_analysis())
    out = ui.run_analysis(state, "fake", "", "a truly awful film", 1.0, None)
    assert out[1] == {"negative": 0.8, "positive": 0.2} and out[-1].words == WORDS and asked["slow"] is False
    assert len(out[-2]) == 3  # the cost table
    ui.run_analysis(state, "fake", "", "a truly awful film", 1.0, None, True, "a second text")
    assert asked["slow"] is True and asked["text_pair"] == "a second text"

    def fail(*args, **kwargs):
        raise A.UserError("Type a sentence")

    monkeypatch.setattr(A, "analyze", fail)
    out = ui.run_analysis(state, "fake", "", "x", 1.0, None)
    assert "Type a sentence" in out[0] and out[-1] is None
    out = ui.run_analysis(state, "fake", "", "   ", 1.0, None)
    assert "Type a sentence" in out[0]


@pytest.mark.parametrize("scale", [float("nan"), -1.0, "abc"])
def test_library_rejects_bad_scale(scale):
    with pytest.raises(InputError):
        analyze_text(object(), object(), "hello", scale, engine=object(), baseline=object(), labels=["a"],
                     model_path="")


# --------------------------------------------------------------------------------------------------
# report tab


def test_metrics_table_html_is_readable():
    summary = pd.DataFrame([{"method": "adapler", "n": 1924, "iou_f1_macro@0.5": 0.26484, "accuracy_pruned": 0.79},
                            {"method": "<b>x</b>", "n": 1924, "iou_f1_macro@0.5": 0.1749, "accuracy_pruned": None}])
    html = P.metrics_table_html(summary, metric_label, method_label, DEFINITIONS)
    assert "<th>AdapLeR</th><th>&lt;b&gt;x&lt;/b&gt;</th>" in html  # methods are columns, escaped
    assert ">IOU-F1 @0.5 (macro)</th><td>0.2648</td><td>0.1749</td>" in html
    assert ">examples</th><td>1,924</td>" in html and "<td>–</td>" in html  # NaN shown as a dash
    assert 'title="ERASER IOU-F1' in html  # hover: the definition
    assert "white-space: nowrap" in html and 'class="rx-scroll"' in html


@pytest.fixture
def report_state(tmp_path):
    rep = tmp_path / "reports" / "hatexplain"
    rep.mkdir(parents=True)
    (rep / "report.md").write_text("# ERASER evaluation: hatexplain / test\n\nModel `m`.\n\n## Metrics\n\n| a |\n|---|\n")
    (rep / "metrics.csv").write_text("method,n,token_f1_macro\nadapler,3,0.4\nsaliency,3,0.3\n")
    (rep / "metrics.json").write_text(json.dumps({"dataset": "hatexplain", "config": {"model": "nowhere"}}))
    (rep / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    empty = tmp_path / "empty"
    empty.mkdir()
    return ui.AppState(data_dir=empty, models_dir=empty, reports_dir=tmp_path / "reports")


def test_disagreement_section(report_state):
    head, table, fpr, bars, images, files, full, note, by, dis, dis_state = ui.show_report(report_state, "hatexplain")
    assert head.startswith("# ERASER evaluation") and "## Metrics" not in head and full.startswith("## Metrics")
    assert [(t.name, tuple(t.y)) for t in bars["value"].data] == [("AdapLeR", ("token F1 (macro)",)),
                                                                   ("gradient x input", ("token F1 (macro)",))]
    assert by["value"] == "iou_f1_human" and ("AdapLeR vs gradient x input (overlap)", "overlap_saliency") in by["choices"]
    df = dis["value"]
    assert list(df["annotation"]) == ["a", "b"]  # IOU-F1 0 before 2/3; "c" has no human rationale
    assert list(df["AdapLeR vs human (IOU-F1)"]) == [0.0, 0.667]
    assert list(df["example"]) == ["a b c d e f"] * 2 and list(df["predicted"]) == ["toxic", "non-toxic"]
    by_saliency = ui.rank_by(dis_state, "overlap_saliency")
    assert list(by_saliency["annotation"]) == ["c", "b", "a"]
    ex = A.human_from_record(dis_state["dataset"], dis_state["records"]["b"])
    assert ex.key == "hatexplain:b" and ex.tokens == list("abcdef") and ex.gold == [True, True] + [False] * 4


def test_live_evaluation_without_data_says_how(report_state):
    demo = ui.build_demo(data_dir=report_state.data_dir, models_dir=report_state.data_dir,
                         reports_dir=report_state.reports_dir)
    blocks = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    assert "ADAPLER_DATA_DIR" in blocks["live-status"].value and "--data-dir" in blocks["live-status"].value
    for plot in ("live-fpr", "live-bars", "live-table"):  # inside a hidden column until a run has results
        parent = blocks[plot].parent
        while parent is not None and parent.visible is not False:
            parent = parent.parent
        assert parent is not None, plot
    msg, *_, col = ui.run_live_eval(report_state, None, None, None, 5)
    assert msg == ui.NO_DATA_SENTENCE and col.visible is False
