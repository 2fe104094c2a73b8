"""Plotly figures and HTML fragments of the explorer (presentation only; no model or metric logic).

Every token that reaches a figure or the page is HTML-escaped (plotly renders a subset of HTML in
labels and hover text, so ``<script>`` must arrive as ``&lt;script&gt;``).
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

METHOD_COLOURS = {  # r, g, b
    "human": (46, 125, 50),
    "adapler": (25, 118, 210),
    "saliency": (216, 67, 21),
    "attention": (123, 31, 162),
    "attention_rollout": (0, 131, 143),
    "integrated_gradients": (194, 24, 91),
    "occlusion": (93, 64, 55),
}
MAX_TICK_LABELS = 80


def esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _template() -> dict:
    global _TEMPLATE
    if _TEMPLATE is None:
        _TEMPLATE = pio.templates["plotly_white"].to_plotly_json()
    return _TEMPLATE


_TEMPLATE: dict | None = None


def figure(data: list[dict], layout: dict) -> go.Figure:
    """A plotly figure from plain dicts, skipping plotly.py's per-property validation (10x faster: the
    figures are rebuilt on every request). The dicts use only documented plotly.js attributes."""
    layout = {"template": _template(), **layout}
    try:
        return go.Figure(data=data, layout=layout, _validate=False)
    except TypeError:  # a plotly without the private switch: validated, slower, same figure
        return go.Figure(data=data, layout=layout)


def _empty(title: str, message: str) -> go.Figure:
    return figure([], {"title": {"text": title}, "height": 260, "xaxis": {"visible": False},
                       "yaxis": {"visible": False},
                       "annotations": [{"text": esc(message), "showarrow": False, "xref": "paper", "yref": "paper",
                                        "x": 0.5, "y": 0.5}]})


def survival_heatmap(window, num_layers: int, title: str = "Token survival per layer") -> go.Figure:
    """Layers x tokens; colour = CP score while the token is alive; x = the layer it was dropped at.

    ``window``: :class:`eraser_eval.analysis.WindowResult`. Cells after a token's removal are empty (grey
    background); [CLS] (never removed) is marked with a star; the hover names the pieces of a pair's
    second text.
    """
    cp, keep = np.asarray(window.cp, float), np.asarray(window.keep, bool)
    n_layers, n = keep.shape
    if n == 0:
        return _empty(title, "no tokens")
    # alive before layer l's decision = processed by l-1 (all tokens before layer 1)
    alive_before = np.vstack([np.ones((1, n), bool), keep[:-1]])
    z = np.where(alive_before, cp, np.nan)
    drop = window.drop_layer  # 1-based, 0 = never
    pieces = [esc(p) for p in window.pieces]
    second = [j < len(window.token_type_ids) and window.token_type_ids[j] == 1 for j in range(n)]
    hover = [p + (" (second text)" if s else "") for p, s in zip(pieces, second)]
    thr = np.asarray(window.thresholds, float)
    status = [["kept" + (" ([CLS] is never removed)" if j == 0 else "") if keep[li, j]
               else "dropped here (CP score below threshold)" if alive_before[li, j]
               else f"removed before layer {int(drop[j])}" for j in range(n)] for li in range(n_layers)]
    custom = [[[hover[j], status[li][j], f"{thr[li]:.4f}"] for j in range(n)] for li in range(n_layers)]
    layers = list(range(1, n_layers + 1))
    zmax = float(np.nanmax(z)) if np.isfinite(z).any() else 1.0
    small = n <= 128
    data = [{
        "type": "heatmap", "name": "CP score", "z": z, "x": list(range(n)), "y": layers, "customdata": custom,
        "colorscale": "Viridis", "zmin": 0.0, "zmax": max(zmax, 1e-6), "xgap": 1, "ygap": 1,
        "colorbar": {"title": {"text": "CP score"}},
        "hovertemplate": "token %{x}: <b>%{customdata[0]}</b><br>layer %{y}: %{customdata[1]}<br>"
                         "CP score %{z:.4f} · threshold δ %{customdata[2]}<extra></extra>",
    }]
    dropped = [(j, int(drop[j])) for j in range(n) if drop[j] > 0]
    if dropped:
        data.append({
            "type": "scatter", "name": "dropped at this layer", "mode": "markers",
            "x": [j for j, _ in dropped], "y": [d for _, d in dropped], "customdata": [pieces[j] for j, _ in dropped],
            "marker": {"symbol": "x-thin", "size": 9 if small else 5, "color": "#e53935",
                       "line": {"width": 2, "color": "#e53935"}},
            "hovertemplate": "<b>%{customdata}</b> dropped before layer %{y}<extra></extra>",
        })
    data.append({
        "type": "scatter", "name": "[CLS] (never removed)", "mode": "markers", "x": [0] * n_layers, "y": layers,
        "marker": {"symbol": "star", "size": 10 if small else 6, "color": "#ffd54f", "line": {"width": 1, "color": "#333"}},
        "hovertemplate": "[CLS] is kept at every layer<extra></extra>",
    })
    if n <= MAX_TICK_LABELS:
        tickvals, ticktext = list(range(n)), pieces
    else:
        step = math.ceil(n / MAX_TICK_LABELS)
        tickvals = list(range(0, n, step))
        ticktext = [pieces[j] for j in tickvals]
    layout = {
        "title": {"text": title}, "height": max(280, 110 + 34 * n_layers),
        "plot_bgcolor": "#d9d9d9", "margin": {"l": 60, "r": 20, "t": 60, "b": 90},
        "legend": {"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"},
        "xaxis": {"title": {"text": "word piece (grey = removed)"}, "tickvals": tickvals, "ticktext": ticktext,
                  "tickangle": -60, "showgrid": False, "zeroline": False, "range": [-0.5, n - 0.5]},
        "yaxis": {"title": {"text": "layer"}, "autorange": "reversed", "dtick": 1, "showgrid": False,
                  "zeroline": False},
    }
    return figure(data, layout)


def lengths_curve(windows, num_layers: int, title: str = "Tokens processed per layer") -> go.Figure:
    """Tokens per layer (pruned, one line per window) against the unpruned length."""
    layers = list(range(1, num_layers + 1))
    data = []
    for i, w in enumerate(windows):
        n = len(w.pieces)
        suffix = f" (window {i + 1})" if len(windows) > 1 else ""
        data.append({"type": "scatter", "x": layers, "y": [n] * num_layers, "mode": "lines", "name": f"unpruned{suffix}",
                     "line": {"dash": "dash", "color": "#9e9e9e"}, "showlegend": i == 0 or len(windows) <= 2,
                     "hovertemplate": "unpruned: %{y} tokens<extra></extra>"})
        data.append({"type": "scatter", "x": layers, "y": np.asarray(w.layer_lengths, float).tolist(),
                     "mode": "lines+markers", "name": f"AdapLeR{suffix}",
                     "hovertemplate": "layer %{x}: %{y:.0f} tokens<extra></extra>"})
    layout = {"title": {"text": title}, "height": 300, "xaxis": {"title": {"text": "layer"}, "dtick": 1},
              "yaxis": {"title": {"text": "tokens"}, "rangemode": "tozero"},
              "margin": {"l": 60, "r": 20, "t": 50, "b": 50}, "legend": {"orientation": "h", "y": -0.3}}
    return figure(data, layout)


# --------------------------------------------------------------------------------------------------
# HTML


def _word_spans(words, spans, text, scores, selected, colour, scored) -> str:
    scores = np.asarray(scores, float)
    top = float(np.max(scores[scored])) if scored.any() and np.isfinite(scores[scored]).any() else 0.0
    r, g, b = colour
    parts, prev_end = [], 0
    for t, (w, (s, e)) in enumerate(zip(words, spans)):
        gap = text[prev_end:s]
        if t > 0:
            parts.append("<br>" if "\n" in gap else " ")
        prev_end = e
        a = 0.0 if top <= 0 or not math.isfinite(scores[t]) else max(0.0, scores[t]) / top
        cls = "rx-w rx-sel" if selected[t] else "rx-w"
        style = f"background: rgba({r},{g},{b},{0.08 + 0.62 * a:.3f});" if a > 0 else ""
        if selected[t]:
            style += f" box-shadow: inset 0 -3px 0 rgb({r},{g},{b});"
        tip = f"score {scores[t]:.4g}" + (" · selected" if selected[t] else "") + ("" if scored[t] else " · no word piece")
        parts.append(f'<span class="{cls}" style="{style}" title="{esc(tip)}">{esc(w)}</span>')
    return "".join(parts)


def rationales_html(analysis, titles: dict[str, str], order) -> str:
    """Side-by-side word-level rationales, every word escaped; a legend on every panel."""
    words, spans, text = analysis.words, analysis.spans, analysis.text
    scored = np.asarray(analysis.scored, bool)
    panels = []
    entries = []
    if analysis.human is not None:
        h = np.asarray(analysis.human, bool)
        entries.append(("human", h.astype(float), h, f"{int(h.sum())} words · {esc(analysis.human_source or '')}"))
    for name in order:
        m = analysis.methods.get(name)
        if m is None:
            continue
        sel = np.asarray(m["selected"], bool)
        note = (f"{int(sel.sum())} words kept to the last layer (k)" if name == "adapler"
                else f"top {analysis.k} words (same k as AdapLeR)")
        entries.append((name, m["scores"], sel, note))
    for name, scores, sel, note in entries:
        colour = METHOD_COLOURS.get(name, (97, 97, 97))
        body = _word_spans(words, spans, text, scores, sel, colour, scored) if words else "<em>(no words)</em>"
        legend = ("shade = score (darker = higher) · underline = selected" if name != "human"
                  else "underline = human rationale")
        if name == "adapler":
            legend = "shade = layers the word survives (darker = kept longer) · underline = kept to the last layer"
        panels.append(
            f'<div class="rx-panel" data-method="{esc(name)}">'
            f'<div class="rx-title" style="border-left: 6px solid rgb{colour}">{esc(titles.get(name, name))}'
            f'<span class="rx-note">{note}</span></div>'
            f'<div class="rx-text">{body}</div><div class="rx-legend">{esc(legend)}</div></div>'
        )
    pair = ""
    if analysis.text_pair is not None:
        pair = (f'<div class="rx-pair" id="rationale-pair"><b>Second text</b> (context in every window, not '
                f'scored): {esc(analysis.text_pair)}</div>')
    return f'<style>{CSS}</style>{pair}<div class="rx-grid" id="rationale-panels">{"".join(panels)}</div>'


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer() and abs(v) >= 10):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4f}"
    return str(v)


def metrics_table_html(summary, metric_label, method_label, definitions: dict[str, str] | None = None,
                       table_id: str = "") -> str:
    """One row per metric, one column per method (a summary with 20 metrics stays narrow), readable
    labels, numbers on one line, the table in a horizontal scroller; hover a metric for its definition.

    ``summary``: one row per method (``metrics.csv``); ``metric_label`` / ``method_label``: key -> label."""
    if summary is None or not len(summary) or "method" not in summary.columns:
        return f"<style>{CSS}</style><p class='rx-none'>No metrics table in this report.</p>"
    definitions = definitions or {}
    methods = [str(m) for m in summary["method"]]
    head = "".join(f"<th>{esc(method_label(m))}</th>" for m in methods)
    rows = []
    for key in [c for c in summary.columns if c != "method"]:
        tip = next((d for k, d in definitions.items() if str(key).startswith(k)), "")
        cells = "".join(f"<td>{esc(_cell(v))}</td>" for v in summary[key].tolist())
        rows.append(f'<tr><th scope="row" title="{esc(tip)}">{esc(metric_label(str(key)))}</th>{cells}</tr>')
    return (f'<style>{CSS}</style><div class="rx-scroll"><table class="rx-table" id="{esc(table_id)}">'
            f'<thead><tr><th>metric</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def notices_html(notices, error: str | None = None) -> str:
    items = []
    if error:
        items.append(f'<div class="rx-error" role="alert">{esc(error)}</div>')
    for n in notices:
        items.append(f'<div class="rx-notice">{esc(n)}</div>')
    return f"<style>{CSS}</style>" + "".join(items) if items else ""


CSS = """
.rx-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 10px; }
.rx-panel { border: 1px solid var(--border-color-primary, #ddd); border-radius: 8px; padding: 8px 10px; }
.rx-title { font-weight: 600; padding-left: 8px; margin-bottom: 6px; }
.rx-note { font-weight: 400; opacity: .75; margin-left: 8px; font-size: .9em; }
.rx-text { line-height: 1.9; max-height: 360px; overflow-y: auto; white-space: normal; }
.rx-w { padding: 1px 2px; border-radius: 3px; }
.rx-sel { font-weight: 600; }
.rx-legend { font-size: .8em; opacity: .7; margin-top: 6px; }
.rx-pair { margin: 0 0 8px; padding: 6px 10px; border-left: 4px solid #9e9e9e; }
.rx-error { background: #fdecea; color: #b71c1c; border-radius: 6px; padding: 8px 10px; margin: 4px 0; }
.rx-notice { background: #fff8e1; color: #5d4037; border-radius: 6px; padding: 6px 10px; margin: 4px 0; }
.rx-scroll { overflow-x: auto; max-width: 100%; }
.rx-table { border-collapse: collapse; font-size: .9em; }
.rx-table th, .rx-table td { white-space: nowrap; padding: 3px 12px; border-bottom: 1px solid var(--border-color-primary, #ddd); }
.rx-table td { text-align: right; font-variant-numeric: tabular-nums; }
.rx-table tbody th { text-align: left; font-weight: 500; }
#report-full table { display: block; overflow-x: auto; max-width: 100%; }
#report-full th, #report-full td { white-space: nowrap; }
"""
