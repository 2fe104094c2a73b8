"""Reports: ``metrics.json``, ``metrics.csv``, ``fpr.csv``, ``report.md``, a self-contained
``report.html`` (plotly, script inlined, works offline), ``<method>.results.jsonl`` in ERASER's
results schema (scoreable by ``rationale_benchmark/metrics.py`` unchanged) and ``examples.jsonl``
(per-example records: the document's tokens, the human rationale and every method's hard
rationale as spans; what the explorer's disagreement table reads, see :data:`EXAMPLES_JSONL`).

Column and method names of tables meant for people go through :func:`metric_label` and
:func:`method_label` (the one mapping; the CSV and JSON files keep the raw keys).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adapler.data import read_jsonl

from .metrics import mask_to_spans
from .results_file import load_results_jsonl

__all__ = [
    "DEFINITIONS",
    "EXAMPLES_JSONL",
    "cost_figure",
    "cost_table",
    "example_records",
    "fpr_figure",
    "jsonable",
    "labelled",
    "method_label",
    "metric_bars_figure",
    "metric_label",
    "read_examples_jsonl",
    "read_results_jsonl",
    "write_report",
    "write_results_jsonl",
]

EXAMPLES_JSONL = "examples.jsonl"  # one line per annotation, see example_records

METRIC_LABELS = {
    "method": "method",
    "n": "examples",
    "accuracy": "accuracy",
    "macro_f1": "macro F1",
    "accuracy_pruned": "accuracy (pruned)",
    "token_f1_micro": "token F1 (micro)",
    "token_f1_macro": "token F1 (macro)",
    "auprc": "AUPRC",
    "average_precision": "average precision",
    "roc_auc": "ROC-AUC",
    "comprehensiveness": "comprehensiveness",
    "sufficiency": "sufficiency",
    "aopc_comprehensiveness": "AOPC comprehensiveness",
    "aopc_sufficiency": "AOPC sufficiency",
    "fpr_macro_last_layer": "FPR last layer (macro)",
    "fpr_micro_last_layer": "FPR last layer (micro)",
    "fpr_macro_mean_over_layers": "FPR mean over layers (macro)",
    "rationale_length_mean": "rationale length (mean tokens)",
}
METHOD_LABELS = {
    "human": "human",
    "adapler": "AdapLeR",
    "saliency": "gradient x input",
    "attention": "[CLS] attention",
    "attention_rollout": "attention rollout",
    "random": "random",
    "import": "imported",
}
_IOU_KEY = re.compile(r"iou_f1_(micro|macro)@([0-9.]+)")


def metric_label(key: str) -> str:
    """Readable name of a summary column (``iou_f1_macro@0.5`` -> ``IOU-F1 @0.5 (macro)``); unknown keys
    get their underscores replaced, so columns added later still read as words."""
    m = _IOU_KEY.fullmatch(key)
    if m:
        return f"IOU-F1 @{m.group(2)} ({m.group(1)})"  # "IOU-F1@0.5" would render as an e-mail link
    return METRIC_LABELS.get(key, key.replace("_", " "))


def method_label(name: str) -> str:
    return METHOD_LABELS.get(name, name.replace("_", " "))


def labelled(summary: pd.DataFrame | None) -> pd.DataFrame | None:
    """The summary table for people: readable column names and method names (None stays None)."""
    if summary is None:
        return None
    out = summary.rename(columns=metric_label)
    if "method" in summary.columns:
        out["method"] = summary["method"].map(method_label)
    return out

DEFINITIONS = {
    "token_f1": "Token-level F1 of the hard rationale against the human rationale (ERASER token_prf): micro "
    "pools all (annotation, token) pairs; macro averages per-annotation F1.",
    "iou_f1": "ERASER IOU-F1: a predicted span is correct if its best token IOU with a gold span is >= 0.5; "
    "micro pools spans; macro averages per-annotation P and R, then takes their F1.",
    "auprc": "Area under the per-document precision-recall curve of the soft scores (sklearn "
    "precision_recall_curve + auc), averaged over all documents (documents without gold are not skipped); "
    "average precision and ROC-AUC skip documents whose gold is all 0 or all 1.",
    "comprehensiveness": "p(predicted class | document) - p(predicted class | document without the hard rationale), "
    "averaged. Higher = more faithful.",
    "sufficiency": "p(predicted class | document) - p(predicted class | hard rationale only), averaged. Lower = more "
    "faithful.",
    "aopc": "Comprehensiveness / sufficiency averaged over the top 1, 5, 10, 20, 50% of tokens by the method's soft "
    "scores (all instance x threshold cells).",
    "fpr": "False positive rate at layer l = FP / (FP + TN): the fraction of non-rationale document tokens the "
    "method selects. AdapLeR selects the tokens alive at layer l; every other method selects its top-k with k = "
    "the number of tokens AdapLeR keeps at that layer for that example (equal length). Macro = mean over "
    "examples, micro = pooled counts; examples without any non-rationale token are skipped and counted.",
    "hard_rationale": "AdapLeR: tokens alive at the chosen layer (default last). Other methods: top-k tokens by soft "
    "score, k = the split's mean human rationale length.",
    "cost": "Model passes per example (forward, backward; a document of several windows counts window runs / "
    "windows) and measured milliseconds per example of the passes the method needs; a shared pass is charged in "
    "full to every method that reads it (the unpruned forward to saliency and both attention methods, its backward "
    "to saliency). AdapLeR's cost is its pruned inference itself. Integrated Gradients: steps forward + backward "
    "plus the input and baseline forwards; occlusion: the input plus one forward per word.",
    "alignment": "Document tokens are ERASER's whitespace tokens; a token's score is the max over its word pieces, "
    "and it is selected if any of its pieces is. Long documents are split into consecutive windows of "
    "max_length - 2 pieces; class probabilities are the mean over windows.",
}


def jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays to Python, NaN/inf to None, non-string keys to str."""
    if isinstance(obj, Mapping):
        return {(k if isinstance(k, str) else (f"{k:g}" if isinstance(k, float) else str(k))): jsonable(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


# --------------------------------------------------------------------------------------------------
# ERASER results files


def write_results_jsonl(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> Path:
    """One ERASER result object per line (annotation_id, rationales with docid,
    hard_rationale_predictions and soft_rationale_predictions over document tokens, classification,
    classification_scores, comprehensiveness_/sufficiency_classification_scores, thresholded_scores)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(_dumps(rec) + "\n" for rec in records)
    return path


def _dumps(rec: Mapping[str, Any]) -> str:
    try:  # records built by the runner are plain Python already: skip the slow conversion
        return json.dumps(rec, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(jsonable(rec), ensure_ascii=False)


def read_results_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read an ERASER results file (errors name the file and line)."""
    return load_results_jsonl(path)


# --------------------------------------------------------------------------------------------------
# per-example records (examples.jsonl)


def example_records(result) -> list[dict]:
    """One record per evaluated annotation, in evaluation order::

        {"annotation_id", "docid", "label": gold label, "predicted": the unpruned model's class or None,
         "tokens": the document's tokens, "human": [[start, end], ...],
         "hard": {method: [[start, end], ...]}}

    Spans are over ``tokens``, end exclusive; ``hard`` is each method's hard rationale as scored (the
    ``hard_rationale_predictions`` of its ERASER results line for this document)."""
    by_method = {name: {r["annotation_id"]: r for r in recs} for name, recs in result.records.items()}
    out = []
    for d in result.docs:
        hard, predicted = {}, None
        for name, recs in by_method.items():
            rec = recs.get(d.annotation_id)
            if rec is None:
                continue
            predicted = predicted or rec.get("classification")
            hard[name] = [[int(h["start_token"]), int(h["end_token"])]
                          for rat in rec.get("rationales", []) if rat.get("docid") == d.docid
                          for h in rat.get("hard_rationale_predictions", []) or []]
        out.append({"annotation_id": d.annotation_id, "docid": d.docid, "label": d.label, "predicted": predicted,
                    "tokens": list(d.tokens), "human": [list(s) for s in mask_to_spans(d.gold)], "hard": hard})
    return out


def read_examples_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read an ``examples.jsonl`` (errors name the file and line)."""
    return [rec for _, rec in read_jsonl(Path(path))]


# --------------------------------------------------------------------------------------------------
# figures


def fpr_figure(fpr_df, title: str = "False positive rate per layer"):
    """Line chart: x = layer, y = FPR (solid macro, dotted micro), one colour per method."""
    import plotly.graph_objects as go  # optional heavy dependency: only for figures
    from plotly.colors import qualitative  # optional heavy dependency: only for figures

    fig = go.Figure()
    palette = qualitative.Plotly
    if fpr_df is not None and len(fpr_df):
        for i, (method, grp) in enumerate(fpr_df.groupby("method", sort=False)):
            color = palette[i % len(palette)]
            name = method_label(str(method))
            fig.add_trace(go.Scatter(x=grp["layer"], y=grp["macro"], mode="lines+markers", name=f"{name} (macro)",
                                     line={"color": color}))
            fig.add_trace(go.Scatter(x=grp["layer"], y=grp["micro"], mode="lines", name=f"{name} (micro)",
                                     line={"color": color, "dash": "dot"}))
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="FPR (lower is better)",
                      yaxis={"range": [0, 1.02]}, template="plotly_white", legend={"orientation": "h", "y": -0.2})
    fig.update_xaxes(dtick=1)
    return fig


BAR_METRICS = ["token_f1_macro", "iou_f1_macro@0.5", "auprc", "comprehensiveness", "sufficiency",
               "aopc_comprehensiveness", "aopc_sufficiency", "fpr_macro_last_layer"]


def metric_bars_figure(summary, title: str = "Metrics per method"):
    """Grouped horizontal bars: one group per metric (its readable name on the y axis, never rotated or
    cut), one bar per method."""
    import plotly.graph_objects as go  # optional heavy dependency: only for figures

    fig = go.Figure()
    cols = [c for c in BAR_METRICS if summary is not None and c in summary.columns]
    rows = list(summary.iterrows()) if summary is not None else []
    for _, row in rows:
        xs = [row[c] for c in cols]
        fig.add_trace(go.Bar(name=method_label(str(row["method"])), y=[metric_label(c) for c in cols], orientation="h",
                             x=[None if x is None or (isinstance(x, float) and math.isnan(x)) else x for x in xs]))
    fig.update_layout(title=title, barmode="group", template="plotly_white", xaxis_title="value",
                      yaxis={"autorange": "reversed"}, height=max(360, 140 + 12 * len(cols) * max(1, len(rows))),
                      legend={"orientation": "h", "y": -0.12})
    return fig


COST_COLUMNS = [("forward_passes", "forward passes"), ("backward_passes", "backward passes"),
                ("ms_per_example", "ms per example")]
QUALITY_COLUMNS = [("auprc", "AUPRC"), ("iou_f1_macro@0.5", "IOU-F1 (macro)"), ("token_f1_macro", "token F1 (macro)"),
                   ("comprehensiveness", "comprehensiveness"), ("sufficiency", "sufficiency")]


def cost_table(summary):
    """Cost beside plausibility and faithfulness: one row per method, readable column names; None
    when the summary has no cost columns."""
    if summary is None or "ms_per_example" not in summary.columns:
        return None
    cols = [(c, label) for c, label in [("method", "method"), *COST_COLUMNS, *QUALITY_COLUMNS] if c in summary.columns]
    return summary[[c for c, _ in cols]].rename(columns=dict(cols))


def cost_figure(summary, title: str = "Plausibility against cost"):
    """AUPRC and IOU-F1 (macro) of every method against its measured ms per example (log axis)."""
    import plotly.graph_objects as go  # optional heavy dependency: only for figures

    fig = go.Figure()
    if summary is not None and "ms_per_example" in summary.columns:
        rows = summary[summary["ms_per_example"].notna() & (summary["ms_per_example"] > 0)]
        for col, label, symbol in (("auprc", "AUPRC", "circle"), ("iou_f1_macro@0.5", "IOU-F1 (macro)", "diamond")):
            if col in rows.columns:
                fig.add_trace(go.Scatter(x=rows["ms_per_example"], y=rows[col], mode="markers+text", name=label,
                                         text=rows["method"], textposition="top center",
                                         marker={"symbol": symbol, "size": 10}))
    fig.update_layout(title=title, xaxis_title="measured ms per example (log)", yaxis_title="value (higher is better)",
                      xaxis_type="log", template="plotly_white", legend={"orientation": "h", "y": -0.2})
    return fig


# --------------------------------------------------------------------------------------------------
# markdown / html


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return "-" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def _md_table(df) -> str:
    if df is None or not len(df):
        return "_(none)_\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.astype(object).iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def fpr_difference_table(diff_df):
    """One row per (baseline, layer): macro and micro difference as ``d [lo, hi]`` strings."""
    rows = []
    for _, r in diff_df.iterrows():
        rows.append({"baseline": r["baseline"], "layer": int(r["layer"]),
                     "macro": f"{r['macro_diff']:+.4f} [{r['macro_lo']:+.4f}, {r['macro_hi']:+.4f}]",
                     "micro": f"{r['micro_diff']:+.4f} [{r['micro_lo']:+.4f}, {r['micro_hi']:+.4f}]",
                     "documents": int(r["n_examples"])})
    return pd.DataFrame(rows)


def _fpr_wide(fpr_df, value: str):
    if fpr_df is None or not len(fpr_df):
        return None
    wide = fpr_df.pivot(index="layer", columns="method", values=value).reset_index()
    wide.columns = [str(c) for c in wide.columns]
    return wide


def _markdown(result) -> str:
    cfg = result.config
    out = [f"# ERASER evaluation: {result.dataset} / {result.split}\n"]
    out.append(
        f"Model `{cfg.get('model')}` (fingerprint `{cfg.get('model_fingerprint')}`), "
        f"{cfg.get('n_annotations')} of {cfg.get('n_annotations_in_split')} annotations, methods: "
        f"{', '.join(cfg.get('methods', []))}. Hard rationale k = {cfg.get('hard_rationale_k')} tokens "
        f"(mean human rationale length {cfg.get('mean_human_rationale_length', 0):.1f}); AdapLeR layer: "
        f"{cfg.get('layer')}; faithfulness: {cfg.get('faithfulness')} (threshold scale "
        f"{cfg.get('faithfulness_threshold_scale')}); max length {cfg.get('max_length')}.\n"
    )
    out.append("## Metrics\n")
    out.append(_md_table(labelled(result.summary)))
    costs = cost_table(result.summary)
    if costs is not None:
        out.append("\n## Cost of each explanation, beside plausibility and faithfulness\n")
        out.append("Model passes and measured milliseconds per example (see **cost** below).\n")
        out.append(_md_table(labelled(costs)))
    if result.fpr is not None and len(result.fpr):
        out.append("\n## False positive rate per layer (macro)\n")
        out.append(_md_table(_fpr_wide(result.fpr, "macro")))
        out.append("\n## False positive rate per layer (micro)\n")
        out.append(_md_table(_fpr_wide(result.fpr, "micro")))
        skipped = result.fpr.groupby("method")["n_skipped"].max().to_dict()
        used = result.fpr.groupby("method")["n_examples"].max().to_dict()
        out.append("\nExamples used / skipped (no non-rationale token): "
                   + ", ".join(f"{m}: {used[m]} / {skipped[m]}" for m in used) + "\n")
    if result.fpr_difference is not None and len(result.fpr_difference):
        out.append("\n## AdapLeR minus each baseline: FPR difference, 95% bootstrap interval over documents\n")
        out.append("Negative = AdapLeR selects fewer non-rationale tokens at the same length; an interval that "
                   "excludes 0 is a difference the documents support.\n")
        out.append(_md_table(fpr_difference_table(result.fpr_difference)))
    out.append("\n## Alignment\n")
    a = result.alignment
    out.append(
        f"{a.get('documents')} documents, {a.get('tokens')} tokens, {a.get('word_pieces')} word pieces, "
        f"{a.get('windows')} windows ({a.get('documents_longer_than_one_window')} documents need more than one); "
        f"lost tokens: {a.get('lost_tokens')} (in {a.get('documents_with_lost_tokens')} documents); "
        f"tokens with [UNK]: {a.get('unknown_tokens')} (in {a.get('documents_with_unknown_tokens')} documents).\n"
    )
    out.append("\n## Definitions\n")
    for k, v in DEFINITIONS.items():
        out.append(f"* **{k}**: {v}")
    out.append("\n## Timings (s)\n")
    out.append(", ".join(f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}" for k, v in result.timings.items()))
    if result.warnings:
        out.append(f"\n\n## Warnings ({len(result.warnings)})\n")
        out += [f"* {w}" for w in result.warnings[:20]]
        if len(result.warnings) > 20:
            out.append(f"* ... {len(result.warnings) - 20} more in metrics.json")
    return "\n".join(out) + "\n"


def _html_table(df) -> str:
    if df is None or not len(df):
        return "<p><em>(none)</em></p>"
    cols = list(df.columns)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(row[c]))}</td>" for c in cols) + "</tr>"
        for _, row in df.astype(object).iterrows()
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _html(result) -> str:
    figs = []
    if result.fpr is not None and len(result.fpr):
        figs.append(fpr_figure(result.fpr))
    figs.append(metric_bars_figure(result.summary))
    if cost_table(result.summary) is not None:
        figs.append(cost_figure(result.summary))
    parts = []
    for i, fig in enumerate(figs):
        # the first figure carries plotly.js inline: the file works offline and alone
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    cfg = result.config
    esc = html.escape
    defs = "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in DEFINITIONS.items())
    warn = "".join(f"<li>{esc(w)}</li>" for w in result.warnings[:20])
    a = result.alignment
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>ERASER evaluation: {esc(result.dataset)} / {esc(result.split)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse;font-size:0.85em}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}
th{{background:#f3f3f3}}.scroll{{overflow-x:auto}}</style></head><body>
<h1>ERASER evaluation: {esc(result.dataset)} / {esc(result.split)}</h1>
<p>Model <code>{esc(str(cfg.get('model')))}</code>, {esc(str(cfg.get('n_annotations')))} annotations, methods
{esc(', '.join(cfg.get('methods', [])))}; hard rationale k = {esc(str(cfg.get('hard_rationale_k')))};
AdapLeR layer {esc(str(cfg.get('layer')))}; faithfulness {esc(str(cfg.get('faithfulness')))}.</p>
<h2>Metrics</h2>{_html_table(labelled(result.summary))}
<h2>Cost of each explanation</h2>{_html_table(labelled(cost_table(result.summary)))}
<h2>Charts</h2>{''.join(parts)}
<h2>FPR per layer (macro)</h2>{_html_table(_fpr_wide(result.fpr, 'macro'))}
<h2>Alignment</h2><p>{esc(str(a.get('documents')))} documents, {esc(str(a.get('word_pieces')))} word pieces,
{esc(str(a.get('windows')))} windows; lost tokens {esc(str(a.get('lost_tokens')))}; tokens with [UNK]
{esc(str(a.get('unknown_tokens')))}.</p>
<h2>Definitions</h2><ul>{defs}</ul>
{f'<h2>Warnings ({len(result.warnings)})</h2><ul>{warn}</ul>' if result.warnings else ''}
</body></html>
"""


def write_report(result, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write every report file of an :class:`eraser_eval.runner.EvaluationResult`; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["metrics.json"] = out / "metrics.json"
    paths["metrics.json"].write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["metrics.csv"] = out / "metrics.csv"
    result.summary.to_csv(paths["metrics.csv"], index=False)
    if result.fpr is not None and len(result.fpr):
        paths["fpr.csv"] = out / "fpr.csv"
        result.fpr.to_csv(paths["fpr.csv"], index=False)
    if result.fpr_difference is not None and len(result.fpr_difference):
        paths["fpr_difference.csv"] = out / "fpr_difference.csv"
        result.fpr_difference.to_csv(paths["fpr_difference.csv"], index=False)
    paths["report.md"] = out / "report.md"
    paths["report.md"].write_text(_markdown(result), encoding="utf-8")
    paths["report.html"] = out / "report.html"
    paths["report.html"].write_text(_html(result), encoding="utf-8")
    for name, recs in result.records.items():
        p = out / f"{name}.results.jsonl"
        write_results_jsonl(p, recs)
        paths[p.name] = p
    paths[EXAMPLES_JSONL] = write_results_jsonl(out / EXAMPLES_JSONL, example_records(result))
    return paths
