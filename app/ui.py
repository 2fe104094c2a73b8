"""Gradio Blocks of the rationale explorer: layout and event handlers.

Handlers never let an exception reach the page: a :class:`app.analysis.UserError` is shown as it
is, anything else as a one-line "something went wrong" message (the traceback goes to the server
log only).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from adapler.data import data_root
from eraser_eval.analysis import METHOD_ORDER
from eraser_eval.data import dataset_dir, resolve_data_root
from eraser_eval.disagreement import agreement_columns, rank_disagreement
from eraser_eval.report import DEFINITIONS, fpr_figure, method_label, metric_bars_figure, metric_label

from . import analysis as A
from . import plots as P

log = logging.getLogger("app")

LOCAL_CHOICE = "Local path…"
CONCURRENCY_LIMIT = 4  # requests processed at once; model passes of one model are serialised by its lock
QUEUE_MAX_SIZE = 128
_DOWNLOAD_ROOT = Path(tempfile.gettempdir()) / "adapler-app-downloads"
_DOWNLOAD_MAX_AGE_S = 3600


# --------------------------------------------------------------------------------------------------
# helpers


class AppState:
    """What the handlers share: model choices, examples, data folder."""

    def __init__(self, model_path: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
                 models_dir: str | os.PathLike | None = None, reports_dir: str | os.PathLike | None = None,
                 allow_local_paths: bool = False, dataset_examples: A.DatasetExamples | None = None):
        self.models: dict[str, Path] = {}
        self.allow_local_paths = allow_local_paths  # may a visitor load a model folder by its path?
        self.override_label = None
        if model_path:
            self.override_label = f"{model_path} (--model)"
            self.models[self.override_label] = Path(model_path)
        self.models.update(A.shipped_models(models_dir))
        self.data_dir = data_root(data_dir)
        self.reports_dir = reports_dir
        self.examples = A.load_examples()
        self.human_examples = A.load_human_examples(self.data_dir)
        self.human_by_title: dict[str, A.HumanExample] = {}
        for e in self.human_examples:
            title = e.title if e.title not in self.human_by_title else f"{e.title} ({e.annotation_id})"
            self.human_by_title[title] = e
        self.human_by_key = {e.key: e for e in self.human_examples}
        self.dataset_examples = dataset_examples  # python -m app --dataset
        self.dataset_by_id = {e.id: e for e in dataset_examples.examples} if dataset_examples else {}

    @property
    def default_choice(self) -> str:
        return next(iter(self.models), LOCAL_CHOICE)

    def resolve(self, choice: str | None, local_path: str | None) -> Path:
        choice = (choice or "").strip() or self.default_choice
        if choice in self.models:
            return self.models[choice]
        if not self.allow_local_paths:  # a public server: never touch a path a visitor typed
            if not self.models:
                raise A.UserError("No model is available: no shipped model under assets/models/. Start the app "
                                  "with --model PATH.")
            raise A.UserError(f"Unknown model {choice!r}; choose one of: {', '.join(self.models)}. Loading a model "
                              "folder by its path is off on this server (its operator can allow it with "
                              "--allow-local-paths).")
        if choice == LOCAL_CHOICE:
            if not local_path or not str(local_path).strip():
                if not self.models:
                    raise A.UserError("No model is available: no shipped model under assets/models/. Start the app "
                                      "with --model PATH, or choose 'Local path…' and enter a model folder.")
                raise A.UserError("Enter the folder of a local model (an AdapLeR or BERT classifier).")
            return Path(str(local_path).strip())
        # the API may pass a folder directly
        p = Path(choice)
        if p.is_dir():
            return p
        raise A.UserError(f"Unknown model {choice!r}; choose one of: {', '.join(self.models) or LOCAL_CHOICE}.")

    def bundle(self, choice, local_path) -> A.ModelBundle:
        return A.load_bundle(self.resolve(choice, local_path))

    def datasets_available(self) -> list[str]:
        out = []
        for name in ("hatexplain", "movies"):
            try:
                dataset_dir(resolve_data_root(self.data_dir), name)
                out.append(name)
            except Exception:
                continue
        return out


def _download_dir() -> Path:
    _DOWNLOAD_ROOT.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for p in _DOWNLOAD_ROOT.iterdir():  # prune old downloads
        try:
            if now - p.stat().st_mtime > _DOWNLOAD_MAX_AGE_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(dir=_DOWNLOAD_ROOT))


def _fmt_flops(x) -> str:
    if x is None:
        return "n/a"
    for unit, div in (("GFLOPs", 1e9), ("MFLOPs", 1e6), ("kFLOPs", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.3g} {unit}"
    return f"{x:.3g} FLOPs"


def _fmt_ratio(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.2f}x"


def speed_table(a: A.Analysis) -> pd.DataFrame:
    s = a.speed
    return pd.DataFrame([
        {"model": "unpruned BERT (same weights)", "tokens processed": s["tokens_processed_unpruned"],
         "FLOPs": _fmt_flops(s["flops_unpruned"]), "FLOPs (paper formula)": _fmt_flops(s["parity_flops_unpruned"]),
         "measured ms": round(s["ms_unpruned"], 2), "speedup": "1.00x"},
        {"model": "AdapLeR, tokens dropped", "tokens processed": round(s["tokens_processed_pruned"]),
         "FLOPs": _fmt_flops(s["flops_pruned"]), "FLOPs (paper formula)": _fmt_flops(s["parity_flops_pruned"]),
         "measured ms": round(s["ms_pruned_drop"], 2),
         "speedup": f"{_fmt_ratio(s['flops_speedup'])} FLOPs · {_fmt_ratio(s['measured_speedup'])} measured"},
        {"model": "AdapLeR, same decisions but only masked", "tokens processed": s["tokens_processed_unpruned"],
         "FLOPs": _fmt_flops(s["flops_unpruned"]), "FLOPs (paper formula)": "",
         "measured ms": round(s["ms_pruned_masked"], 2),
         "speedup": _fmt_ratio(s["ms_unpruned"] / s["ms_pruned_masked"] if s["ms_pruned_masked"] else None) + " measured"},
    ])


def cost_table(a: A.Analysis) -> pd.DataFrame:
    """Model passes and measured ms of every method's rationale for this input."""
    rows = [{"method": A.METHOD_TITLES.get(name, name), "forward passes": round(float(c["forward"]), 2),
             "backward passes": round(float(c["backward"]), 2),
             "measured ms": round(c["ms"], 2) if c.get("ms") is not None else None}
            for name in METHOD_ORDER if (c := a.costs.get(name)) is not None]
    return pd.DataFrame(rows, columns=["method", "forward passes", "backward passes", "measured ms"])


def metrics_table(a: A.Analysis) -> pd.DataFrame:
    cols = ["method", "selected", "human", "token_precision", "token_recall", "token_f1", "iou_f1", "auprc", "fpr"]
    if not a.metrics:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(a.metrics)[cols]
    df["method"] = df["method"].map(lambda m: A.METHOD_TITLES.get(m, m))
    for c in cols[3:]:
        df[c] = df[c].astype(float).round(3)
    return df


def prediction_details(a: A.Analysis) -> str:
    p = dict(zip(a.labels, a.probs))
    pf = dict(zip(a.labels, a.probs_full))
    same = "same class" if a.predicted == a.predicted_full else "**different class**"
    pruned = ", ".join(f"{P.esc(k)} {v:.3f}" for k, v in p.items())
    full = ", ".join(f"{P.esc(k)} {v:.3f}" for k, v in pf.items())
    return (f"**Pruned model** (threshold scale {a.threshold_scale:g}): {pruned}  \n"
            f"**Unpruned model**: {full} ({same})  \n"
            f"Analysis took {a.timings_ms.get('total', 0):.0f} ms on the server.")


def _label_value(a: A.Analysis) -> dict:
    return {lab: float(p) for lab, p in zip(a.labels, a.probs)}


def _window_choices(a: A.Analysis | None) -> list[str]:
    if a is None:
        return ["window 1"]
    return [f"window {i + 1}: word pieces {w.start + 1}-{w.end}" for i, w in enumerate(a.windows)]


def _window_update(a: A.Analysis | None):
    choices = _window_choices(a)
    return gr.update(choices=choices, value=choices[0], visible=len(choices) > 1)


def run_analysis(state: AppState, choice, local_path, text, scale, human: A.HumanExample | None, slow=False,
                 text_pair=None):
    """Everything the Explore tab shows, for one text. Returns a tuple matching ``OUTPUT_NAMES``.
    ``slow``: also Integrated Gradients and occlusion (the opt-in checkbox); ``text_pair``: the second
    text of a pair model."""
    try:
        if text is None or not str(text).strip():
            raise A.UserError("Type a sentence (or pick an example) to analyse.")
        bundle = state.bundle(choice, local_path)
        a = A.analyze(bundle, str(text), scale if scale is not None else 1.0, human, slow_methods=bool(slow),
                      text_pair=text_pair)
        title = "Token survival per layer" + (f" · window 1 of {len(a.windows)}" if len(a.windows) > 1 else "")
        heat = P.survival_heatmap(a.windows[0], a.num_layers, title)
        curve = P.lengths_curve(a.windows, a.num_layers)
        rat = P.rationales_html(a, A.METHOD_TITLES, METHOD_ORDER)
        folder = _download_dir()
        pj, pc = A.write_downloads(a, folder)
        metrics_note = ("Agreement with the human rationale of this dataset example (token P/R/F1, IOU-F1 at 0.5, "
                        "AUPRC of the soft scores, FPR = share of non-rationale words selected)."
                        if a.metrics else "No human rationale for this text: pick a dataset example (HateXplain / "
                        "Movie Reviews) to see agreement metrics.")
        return (
            P.notices_html(a.notices),
            _label_value(a),
            prediction_details(a),
            _window_update(a),
            heat,
            curve,
            rat,
            metrics_note,
            metrics_table(a),
            speed_table(a),
            a.speed["timing"] + ". FLOPs: analytic count from the per-layer lengths (adapler.flops); the paper "
            "formula is the reference implementation's (fitted on BERT-base).",
            gr.update(value=str(pj), visible=True),
            gr.update(value=str(pc), visible=True),
            cost_table(a),
            a,
        )
    except A.UserError as e:
        return _error_outputs(str(e))
    except Exception as e:  # never a traceback on the page
        log.exception("analysis failed")
        return _error_outputs(f"Something went wrong while analysing this text ({type(e).__name__}: {e}). "
                              "Try a shorter text or another model.")


def _error_outputs(message: str):
    return (
        P.notices_html([], error=message),
        None,
        "",
        _window_update(None),
        None,
        None,
        "",
        "",
        pd.DataFrame(),
        pd.DataFrame(),
        "",
        gr.update(value=None, visible=False),
        gr.update(value=None, visible=False),
        pd.DataFrame(),
        None,
    )


def show_window(a: A.Analysis | None, choice):
    if a is None:
        return None
    choices = _window_choices(a)
    i = choices.index(choice) if choice in choices else 0
    title = "Token survival per layer" + (f" · window {i + 1} of {len(a.windows)}" if len(a.windows) > 1 else "")
    return P.survival_heatmap(a.windows[i], a.num_layers, title)


# --------------------------------------------------------------------------------------------------
# ERASER report tab


DISAGREE_ROWS = 100  # most-disagreeing examples listed
NO_DATA_SENTENCE = ("Live evaluation needs the ERASER data: start the app with `--data-dir DIR` or set "
                    "`ADAPLER_DATA_DIR` (layout: docs/data.md).")


def _metrics_html(summary, table_id: str) -> str:
    return P.metrics_table_html(summary, metric_label, method_label, DEFINITIONS, table_id)


def _split_report(markdown: str | None, task: str) -> tuple[str, str]:
    """report.md as its head (title, model, settings) and the rest (shown folded: tables, definitions)."""
    if not markdown:
        return f"`{task}`: no report.md in the report folder.", ""
    head, sep, rest = markdown.partition("\n## Metrics")
    return head, (sep.lstrip("\n") + rest) if sep else ""


def _measure_label(col: str, method: str = "adapler") -> str:
    who = method_label(method)
    if col.endswith("_human"):
        return f"{who} vs human ({'IOU-F1' if col.startswith('iou') else 'token F1'})"
    return f"{who} vs {method_label(col.removeprefix('overlap_'))} (overlap)"


def _remake_command(rep: dict, task: str) -> str:
    cfg = (rep.get("metrics_json") or {}).get("config") or {}
    return (f"python -m eraser_eval --dataset {rep['dataset']} --split {cfg.get('split', 'test')} "
            f"--model {cfg.get('model') or 'MODEL'} --methods {','.join(cfg.get('methods') or ['adapler', 'saliency'])} "
            f"--faithfulness {cfg.get('faithfulness', 'full')} --out assets/reports/{task}")


def disagreement_view(records: list[dict], by: str) -> pd.DataFrame:
    """The ``DISAGREE_ROWS`` examples with the lowest agreement ``by``, readable columns, one line each;
    the last column is the annotation id (what a click opens)."""
    ranked = rank_disagreement(records, by).head(DISAGREE_ROWS)
    cols = [c for c in agreement_columns(records) if ranked[c].notna().any()]
    out = pd.DataFrame({
        "rank": range(1, len(ranked) + 1),
        "example": [" ".join(records[i]["tokens"][:12]) + (" …" if len(records[i]["tokens"]) > 12 else "")
                    for i in ranked.index],
        "words": ranked["n_tokens"].to_numpy(),
        "gold": ranked["label"].to_numpy(),
        "predicted": ranked["predicted"].to_numpy(),
    })
    for c in cols:
        out[_measure_label(c)] = ranked[c].round(3).to_numpy()
    out["annotation"] = ranked["annotation_id"].to_numpy()
    return out


def _no_disagreement(note: str):
    return note, gr.update(choices=[], value=None, visible=False), gr.update(value=None, visible=False), None


def _disagreement_outputs(rep: dict, task: str):
    """(note, rank-by dropdown, table, state) of a report's "where methods disagree" section."""
    records = rep.get("examples")
    if records is None:
        return _no_disagreement(
            "This report was made before per-example records (`examples.jsonl`) were saved; re-make it to see "
            f"where the methods disagree: `{_remake_command(rep, task)}`.")
    if not records:
        return _no_disagreement("This report has no examples.")
    cols = agreement_columns(records)
    by = "iou_f1_human" if rank_disagreement(records, "iou_f1_human").shape[0] else cols[-1]
    note = (f"{len(records)} examples of the report; the {min(DISAGREE_ROWS, len(records))} where AdapLeR's rationale "
            "agrees least with the chosen reference come first (IOU-F1 at 0.5 and token F1 against the human "
            "rationale; overlap = token F1 between two methods' rationales). Click a row to open the example "
            "in the Explore tab with its human rationale.")
    state = {"dataset": rep["dataset"], "model": rep.get("model"), "task": task,
             "records": {str(r["annotation_id"]): r for r in records}, "list": records}
    return (note, gr.update(choices=[(_measure_label(c), c) for c in cols], value=by, visible=True),
            gr.update(value=disagreement_view(records, by), visible=True), state)


def rank_by(dis: dict | None, by):
    if not dis or not by:
        return gr.update()
    return disagreement_view(dis["list"], by)


def show_report(state: AppState, task):
    """Outputs of the report tab: head, metrics table (HTML), FPR and metric plots, images, files, the
    full report.md, and the disagreement section (note, rank-by, table, state)."""
    no_plot = gr.update(value=None, visible=False)
    empty = ("", no_plot, no_plot, gr.update(value=[], visible=False), gr.update(value=None), "", *_no_disagreement(""))
    try:
        if not task:
            return ("No shipped ERASER reports yet (they live in `assets/reports/<task>/`).", *empty)
        rep = A.read_report(task, state.reports_dir)
        head, rest = _split_report(rep["markdown"], task)
        summary = rep["summary"]
        fpr = fpr_figure(rep["fpr"], f"{task}: false positive rate per layer") if rep["fpr"] is not None else None
        bars = metric_bars_figure(summary, f"{task}: metrics per method") if summary is not None else None
        images = [str(p) for p in rep["images"]]
        return (head, _metrics_html(summary, "report-metrics"), gr.update(value=fpr, visible=fpr is not None),
                gr.update(value=bars, visible=bars is not None),
                gr.update(value=images, visible=bool(images)),
                gr.update(value=[str(p) for p in rep["files"]] or None), rest, *_disagreement_outputs(rep, task))
    except A.UserError as e:
        return (str(e), *empty)
    except Exception as e:
        log.exception("report failed")
        return (f"Could not read the report ({type(e).__name__}: {e}).", *empty)


def _report_model_choice(state: AppState, model: str | None):
    """The picker entry of the model a report was made with (paths relative to the repository), if loaded."""
    if not model:
        return None
    p = Path(model)
    p = (p if p.is_absolute() else A.REPO_ROOT / p).resolve()
    return next((c for c, path in state.models.items() if Path(path).resolve() == p), None)


def run_live_eval(state: AppState, choice, local_path, dataset, n, progress=gr.Progress()):
    hidden = ("", None, None, gr.Column(visible=False))
    try:
        if not dataset:
            raise A.UserError(NO_DATA_SENTENCE)
        bundle = state.bundle(choice, local_path)
        n = int(max(1, min(int(n or 1), 50)))
        progress(0.0, desc="starting")
        res = A.live_evaluation(bundle, dataset, n, state.data_dir,
                                progress=lambda frac, desc: progress(float(frac), desc=str(desc)))
        t = res.timings.get("total_s", 0.0)
        msg = (f"Evaluated {res.config.get('n_annotations')} {A.DATASET_TITLES.get(dataset, dataset)} test annotations "
               f"in {t:.1f} s with {P.esc(bundle.path)}. Hard rationales: AdapLeR's own (last layer); the others "
               "take the top-k words, k = the split's mean human rationale length.")
        if res.warnings:
            msg += f"  \n{len(res.warnings)} warning(s), e.g. {P.esc(res.warnings[0])}"
        return (msg, _metrics_html(res.summary, "live-metrics"),
                fpr_figure(res.fpr, f"{dataset}: FPR per layer (live, n={n})"),
                metric_bars_figure(res.summary, f"{dataset}: metrics per method (live, n={n})"),
                gr.Column(visible=True))
    except A.UserError as e:
        return (str(e), *hidden)
    except Exception as e:
        log.exception("live evaluation failed")
        return (f"The live evaluation failed ({type(e).__name__}: {e}).", *hidden)


# --------------------------------------------------------------------------------------------------
# layout


INTRO = """# AdapLeR rationale explorer
Type a sentence and see, layer by layer, which word pieces a BERT classifier **keeps and which it drops**
(AdapLeR's learned Contribution Predictors), how that compares with gradient saliency, attention and human
rationales, and what the dropping saves in compute. Plots have a camera button (PNG); the analysis downloads
as JSON and CSV."""


def build_demo(model_path: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
               models_dir: str | os.PathLike | None = None, reports_dir: str | os.PathLike | None = None,
               allow_local_paths: bool = False, dataset_examples: A.DatasetExamples | None = None) -> gr.Blocks:
    """The explorer. ``allow_local_paths``: visitors may load any model folder on this machine by its path
    ("Local path…", the API's ``model``); off by default, for a server open to the public.
    ``dataset_examples``: examples of your own dataset listed in the Explore tab
    (:func:`app.analysis.dataset_examples`)."""
    state = AppState(model_path, data_dir, models_dir, reports_dir, allow_local_paths, dataset_examples)
    P.figure([], {})  # loads plotly's template once, not on the first request
    choices = list(state.models) + ([LOCAL_CHOICE] if allow_local_paths else [])
    default = state.default_choice

    def model_info(choice, local_path):
        """The model line under the picker, and the second text box: shown for a pair model, hidden and
        emptied otherwise (a hidden second text would be refused by a single-text model)."""
        no_pair = gr.update(visible=False, value="")
        if choice == LOCAL_CHOICE and state.allow_local_paths and not (local_path or "").strip():
            if not state.models:
                return ("**No model available.** No shipped model under `assets/models/`; start with "
                        "`python -m app --model PATH` or enter a local model folder below."), no_pair
            return "Enter the folder of a local AdapLeR (or BERT) classifier.", no_pair
        try:
            b = state.bundle(choice, local_path)
            return (f"Model `{P.esc(b.path)}`: {P.esc(b.describe())} (loaded in {b.load_seconds:.1f} s).",
                    gr.update(visible=True) if b.pair else no_pair)
        except A.UserError as e:
            return f"**{P.esc(e)}**", no_pair
        except Exception as e:
            log.exception("model load failed")
            return f"**Could not load the model ({P.esc(type(e).__name__)}: {P.esc(e)}).**", no_pair

    with gr.Blocks(title="AdapLeR rationale explorer", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(INTRO, elem_id="intro")
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("Explore", id="explore", elem_id="tab-explore"):
                with gr.Row():
                    picker = gr.Dropdown(choices, value=default if default in choices else None, label="Model",
                                         elem_id="model-picker", scale=2, allow_custom_value=False)
                    local_path = gr.Textbox(label="Local model folder", placeholder="/path/to/model",
                                            elem_id="model-path", visible=default == LOCAL_CHOICE and allow_local_paths,
                                            scale=3)
                info = gr.Markdown(elem_id="model-info")
                text = gr.Textbox(label="Text", lines=4, max_lines=12, elem_id="input-text",
                                  placeholder="Type a sentence, or pick an example below")
                text_pair = gr.Textbox(label="Second text (pair model)", lines=2, max_lines=8, visible=False,
                                       elem_id="input-text-pair",
                                       placeholder="The model reads [CLS] text [SEP] second text [SEP]")
                with gr.Row():
                    scale = gr.Slider(0.0, 3.0, value=1.0, step=0.05, label="Threshold scale (x learned thresholds; "
                                      "0 = no pruning, higher = more pruning)", elem_id="threshold-scale", scale=4)
                    analyze_btn = gr.Button("Analyse", variant="primary", elem_id="analyze-btn", scale=1)
                slow = gr.Checkbox(False, label="Integrated Gradients / occlusion (slower)", elem_id="slow-methods",
                                   info="adds their rationales; each costs tens of model passes")
                first = A.task_of(state.models.get(default))  # the default model's task first
                sentences = sorted(((task, s) for task, ss in state.examples.items() for s in ss),
                                   key=lambda ts: ts[0] != first)
                examples = None
                if sentences:
                    examples = gr.Examples(examples=[[s] for _, s in sentences], inputs=[text], elem_id="examples",
                                           label="Examples written for the app", examples_per_page=12)
                human_state = gr.State(None)
                with gr.Row(visible=bool(state.human_examples)):
                    ds_pick = gr.Dropdown(list(state.human_by_title), value=None,
                                          label="Dataset examples with human rationales (test split)",
                                          elem_id="dataset-example", scale=4)
                    ds_btn = gr.Button("Load and analyse", elem_id="load-example-btn", scale=1)
                own = state.dataset_examples
                if own is not None:
                    with gr.Row():
                        own_pick = gr.Dropdown([(e.title, e.id) for e in own.examples], value=None, label=own.title,
                                               elem_id="own-example", scale=4)
                        own_btn = gr.Button("Load and analyse", elem_id="load-own-example-btn", scale=1)
                status = gr.HTML(elem_id="status")
                with gr.Row():
                    pred = gr.Label(label="Prediction (pruned model)", elem_id="prediction", num_top_classes=5)
                    pred_md = gr.Markdown(elem_id="prediction-details")
                window = gr.Dropdown(["window 1"], value="window 1", label="Heatmap window (long input)",
                                     elem_id="window-select", visible=False)
                heat = gr.Plot(label="Token survival heatmap", elem_id="heatmap")
                curve = gr.Plot(label="Tokens per layer", elem_id="lengths-plot")
                gr.Markdown("### Rationales at word level (equal size k)")
                rat = gr.HTML(elem_id="rationales")
                metrics_md = gr.Markdown(elem_id="metrics-note")
                metrics = gr.Dataframe(label="Agreement with the human rationale", elem_id="metrics",
                                       interactive=False)
                gr.Markdown("### Speed for this input")
                speed = gr.Dataframe(label="Unpruned vs pruned", elem_id="speed", interactive=False)
                speed_md = gr.Markdown(elem_id="speed-note")
                cost = gr.Dataframe(label="Cost of each explanation for this input (model passes, measured ms)",
                                    elem_id="cost", interactive=False)
                with gr.Row():
                    dl_json = gr.DownloadButton("Download analysis (JSON)", elem_id="download-json", visible=False)
                    dl_csv = gr.DownloadButton("Download words (CSV)", elem_id="download-csv", visible=False)
                analysis_state = gr.State(None)

            with gr.Tab("ERASER report", elem_id="tab-report"):
                tasks = A.report_tasks(reports_dir)
                gr.Markdown("### Shipped ERASER reports")
                rep_task = gr.Dropdown(tasks, value=tasks[0] if tasks else None, label="Report",
                                       elem_id="report-task")
                rep_md = gr.Markdown(elem_id="report-md")
                gr.Markdown("#### Metrics per method (hover a metric for its definition)")
                rep_table = gr.HTML(elem_id="report-table")
                with gr.Row():
                    rep_fpr = gr.Plot(label="FPR per layer", elem_id="report-fpr", visible=False)
                    rep_bars = gr.Plot(label="Metrics", elem_id="report-bars", visible=False)
                rep_images = gr.Gallery(label="Report plots", elem_id="report-images", columns=2, height="auto",
                                        visible=False)
                gr.Markdown("### Where methods disagree")
                dis_note = gr.Markdown(elem_id="disagree-note")
                dis_by = gr.Dropdown([], label="Rank by (lowest agreement first)", elem_id="disagree-by",
                                     visible=False)
                dis_table = gr.Dataframe(elem_id="disagree-table", interactive=False, wrap=False, max_height=420,
                                         visible=False, label="Examples, most disagreement first (click to open)")
                dis_state = gr.State(None)
                with gr.Accordion("Full report (report.md): FPR tables, alignment, definitions, timings", open=False):
                    rep_full = gr.Markdown(elem_id="report-full")
                rep_files = gr.File(label="Report files", elem_id="report-files", file_count="multiple")
                gr.Markdown("### Live evaluation on a few test examples")
                avail = state.datasets_available()
                live_md = gr.Markdown("" if avail else NO_DATA_SENTENCE, elem_id="live-status")
                with gr.Row(visible=bool(avail)):
                    live_ds = gr.Dropdown(avail, value=avail[0] if avail else None, label="Dataset",
                                          elem_id="live-dataset")
                    live_n = gr.Slider(1, 50, value=10, step=1, label="Examples (N)", elem_id="live-n")
                    live_btn = gr.Button("Run evaluation", elem_id="live-run", interactive=bool(avail))
                with gr.Column(visible=False) as live_results:  # shown once a run has results: no empty plots
                    live_table = gr.HTML(elem_id="live-table")
                    with gr.Row():
                        live_fpr = gr.Plot(label="FPR per layer", elem_id="live-fpr")
                        live_bars = gr.Plot(label="Metrics", elem_id="live-bars")

            with gr.Tab("About", elem_id="tab-about"):
                gr.Markdown(ABOUT)

        outputs = [status, pred, pred_md, window, heat, curve, rat, metrics_md, metrics, speed, speed_md,
                   dl_json, dl_csv, cost, analysis_state]

        def _run(choice, path, txt, sc, human, slow_methods=False, second=None):
            return run_analysis(state, choice, path, txt, sc, human, slow_methods, second)

        # the second text comes last: API clients that pass the earlier arguments by position keep working
        inputs = [picker, local_path, text, scale, human_state, slow, text_pair]
        analyze_btn.click(_run, inputs, outputs, api_name="analyze", concurrency_id="analysis")
        text.submit(_run, inputs, outputs, api_visibility="private", concurrency_id="analysis")
        scale.release(_run, inputs, outputs, api_visibility="private", concurrency_id="analysis")
        window.change(show_window, [analysis_state, window], [heat], api_visibility="private")
        if examples is not None:
            examples.load_input_event.then(_run, inputs, outputs, api_visibility="private",
                                           concurrency_id="analysis")

        def _load_dataset_example(title):
            ex = state.human_by_title.get(title or "")
            if ex is None:
                return gr.update(), None
            return ex.text, ex

        ds_btn.click(_load_dataset_example, [ds_pick], [text, human_state], api_visibility="private").then(
            _run, inputs, outputs, api_visibility="private", concurrency_id="analysis")

        if own is not None:
            def _load_own_example(example_id):
                ex = state.dataset_by_id.get(example_id or "")
                if ex is None:
                    return gr.update(), gr.update(), None
                if ex.text_pair is None:
                    return ex.text, "", None
                # shown whenever it holds a text: with a single-text model picked, the refusal names a box one sees
                return ex.text, gr.update(value=ex.text_pair, visible=True), None

            own_btn.click(_load_own_example, [own_pick], [text, text_pair, human_state],
                          api_visibility="private").then(_run, inputs, outputs, api_visibility="private",
                                                         concurrency_id="analysis")

        def _picker_changed(choice, path):
            return gr.update(visible=choice == LOCAL_CHOICE), *model_info(choice, path)

        picker.change(_picker_changed, [picker, local_path], [local_path, info, text_pair], api_visibility="private")
        local_path.submit(model_info, [picker, local_path], [info, text_pair], api_visibility="private")
        demo.load(model_info, [picker, local_path], [info, text_pair], api_visibility="private")

        rep_outputs = [rep_md, rep_table, rep_fpr, rep_bars, rep_images, rep_files, rep_full,
                       dis_note, dis_by, dis_table, dis_state]
        rep_task.change(lambda t: show_report(state, t), [rep_task], rep_outputs, api_visibility="private")
        demo.load(lambda t: show_report(state, t), [rep_task], rep_outputs, api_visibility="private")
        dis_by.input(rank_by, [dis_state, dis_by], [dis_table], api_visibility="private")

        def _open_disagreement(dis, evt: gr.SelectData):
            """A clicked row of the disagreement table: its example, with the report's model, in Explore."""
            rec = (dis or {}).get("records", {}).get(str((evt.row_value or [""])[-1]))
            if rec is None:
                return gr.update(), gr.update(), gr.update(), None
            ex = A.human_from_record(dis["dataset"], rec)
            choice = _report_model_choice(state, dis.get("model"))
            return gr.Tabs(selected="explore"), choice or gr.update(), ex.text, ex

        dis_table.select(_open_disagreement, [dis_state], [tabs, picker, text, human_state],
                         api_visibility="private").then(_run, inputs, outputs, api_visibility="private",
                                                        concurrency_id="analysis")
        live_btn.click(lambda c, p, d, n, progress=gr.Progress(): run_live_eval(state, c, p, d, n, progress),
                       [picker, local_path, live_ds, live_n], [live_md, live_table, live_fpr, live_bars, live_results],
                       api_name="live_evaluation", concurrency_limit=1)

        def analyze_json(text: str, threshold_scale: float = 1.0, model: str = "", example: str = "",
                         slow_methods: bool = False, text_pair: str = "") -> dict:
            """The whole analysis of ``text`` as JSON (tokens, per-layer CP scores and keep masks, rationales,
            metrics, speed). ``model``: a picker label (default: the default model), or a model folder when the
            server allows it (``--allow-local-paths``).
            ``example``: key of a dataset example (``/examples``); its human rationale is used when ``text`` is
            that example's text. ``slow_methods``: also Integrated Gradients and occlusion. ``text_pair``: the
            second text, for a pair model (``[CLS] text [SEP] text_pair [SEP]``)."""
            try:
                if text is None or not str(text).strip():
                    raise A.UserError("Type a sentence (or pick an example) to analyse.")
                human = state.human_by_key.get(example or "")
                if example and human is None:
                    raise A.UserError(f"Unknown dataset example {example!r}; see /examples.")
                bundle = state.bundle(model or None, None)
                return A.analyze(bundle, str(text), threshold_scale, human, slow_methods=bool(slow_methods),
                                 text_pair=text_pair).to_dict()
            except A.UserError as e:
                return {"error": str(e)}
            except Exception as e:
                log.exception("analysis failed")
                return {"error": f"Something went wrong while analysing this text ({type(e).__name__}: {e})."}

        gr.api(analyze_json, api_name="analyze_json", concurrency_id="analysis")

        def list_examples() -> dict:
            """Models, sentences written for the app, dataset examples with human rationales, and the examples
            of the server's own dataset (``python -m app --dataset``; None without one)."""
            return {
                "models": list(state.models),
                "sentences": state.examples,
                "dataset_examples": [{"key": e.key, "title": e.title, "dataset": e.dataset, "label": e.label,
                                      "text": e.text} for e in state.human_examples],
                "own_dataset": None if own is None else {
                    "name": own.name, "split": own.split,
                    "examples": [{"id": e.id, "label": e.label, "text": e.text, "text_pair": e.text_pair}
                                 for e in own.examples]},
            }

        gr.api(list_examples, api_name="examples", queue=False)
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_MAX_SIZE)
    demo.app_state = state  # for tests and the launcher
    return demo


ABOUT = """### What you see
* **Token survival heatmap**: rows are encoder layers, columns the word pieces of the input. Before every
  layer a Contribution Predictor scores the surviving tokens (colour = CP score); tokens below the layer's
  threshold (red ×) are removed from the sequence, so every later layer runs on a shorter input (grey cells).
  [CLS] (★) is never removed. Hover a cell for the token, the CP score and the threshold.
* **Threshold scale** multiplies the learned per-layer thresholds: 0 keeps every token (the unpruned model);
  larger values prune more. Accuracy, rationale and speed change together.
* **Rationales**: the AdapLeR rationale is the words kept to the last layer (its soft score: the number of
  layers a word survives). Saliency (gradient x input) and attention ([CLS] attention of the last layer,
  attention rollout) select their top-k words with the same k; the checkbox adds Integrated Gradients (20
  steps from a [PAD] baseline, on the embedding output) and occlusion (each word replaced by [MASK]). Word scores are the max over a word's pieces
  (`eraser_eval.align`, the same alignment as the ERASER evaluation).
* **Agreement** with a human rationale (dataset examples): token precision/recall/F1, IOU-F1 at 0.5, AUPRC of
  the soft scores, FPR = share of non-rationale words a method selects (`eraser_eval.metrics`).
* **Speed**: analytic FLOPs from the per-layer lengths (`adapler.flops`), and measured milliseconds of the
  unpruned BERT, of AdapLeR with tokens physically dropped, and of the same decisions only masked (no gain);
  the cost of each explanation: model passes (forward, backward) and measured ms for this input.
* **Long inputs** are split into consecutive windows of the model's maximum length (nothing silently
  truncated); very long texts are cut with a visible notice.
"""
