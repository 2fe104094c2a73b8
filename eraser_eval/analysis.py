"""One text (or a pair of texts, for a pair model) in, one :class:`Analysis` out: everything one click
of the explorer shows.

Prediction (pruned and unpruned), per-layer keep masks and CP scores per window, word-level
rationales of every method at equal size k (k = words AdapLeR keeps to the last layer), agreement
with a human rationale, analytic FLOPs, measured timings and the cost (model passes, ms) of every
method. Integrated Gradients and occlusion (``slow_methods=True``) cost tens of passes: opt-in. Built on the same engine and rationale
methods as the ERASER runner (:mod:`eraser_eval.engine`, :mod:`eraser_eval.methods`): one unpruned
forward + backward gives probabilities, saliency and both attention scores; the AdapLeR method reads
the timed ``mode="drop"`` pass (handed to the engine as a precomputed pass), so nothing runs twice.

Passes of one model must not overlap (the model toggles its attention kernel while it runs): pass
the model's lock as ``lock``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from adapler.evaluation import plain_bert_copy
from adapler.flops import flops_per_example
from adapler.inference import time_call

from . import metrics as M
from .align import align_text, make_windows, scatter_window_scores
from .engine import Engine
from .methods import AdapLeRMethod, AttentionMethod, IntegratedGradientsMethod, OcclusionMethod, SaliencyMethod
from .report import jsonable
from .types import DocInput

__all__ = ["IG_STEPS", "METHOD_ORDER", "SLOW_METHODS", "Analysis", "HumanRationale", "InputError", "WindowResult", "analyze_text",
           "human_for_text"]

MAX_CHARS = 50_000  # longer text is cut (visible notice) before tokenising
MAX_WINDOWS = 4  # at most this many model windows per analysis; the rest is cut with a notice
# a second text (pair models) is kept whole in every window, so it may take at most this share of one
PAIR_FRACTION = 0.5
METHOD_ORDER = ("adapler", "saliency", "attention", "attention_rollout", "integrated_gradients", "occlusion")
SLOW_METHODS = ("integrated_gradients", "occlusion")  # only with analyze_text(..., slow_methods=True)
IG_STEPS = 20


class InputError(ValueError):
    """A problem with the text or the threshold scale; the message is meant for the user."""


@dataclass
class HumanRationale:
    """A human rationale over the whitespace tokens of a text (e.g. an ERASER test example)."""

    tokens: list[str]
    gold: list[bool]
    label: str
    source: str  # where it comes from, e.g. "hatexplain test, annotation 1179..."


@dataclass
class WindowResult:
    """The pruned forward of one window (batch 1), in the window's own positions."""

    start: int  # document pieces [start, end) sit at positions 1..end-start
    end: int
    pieces: list[str]  # with [CLS] / [SEP]
    piece_word: list[int]  # word index of each position, -1 for special tokens
    cp: np.ndarray  # (layers, N) CP score before each layer's decision
    keep: np.ndarray  # (layers, N) bool: processed by layer l
    thresholds: np.ndarray  # (layers,) delta_l = eta_l / n_l
    layer_lengths: np.ndarray  # (layers,)
    probs: np.ndarray  # (C,) pruned model
    token_type_ids: list[int] = field(default_factory=list)  # 1 on the second text of a pair and its [SEP]

    @property
    def drop_layer(self) -> np.ndarray:
        """(N,) 1-based layer before which each position was removed; 0 = never removed."""
        alive = self.keep.sum(0)
        n_layers = self.keep.shape[0]
        return np.where(alive < n_layers, alive + 1, 0)


@dataclass
class Analysis:
    text: str
    model_path: str
    labels: list[str]
    threshold_scale: float
    num_layers: int
    words: list[str]
    spans: list[tuple[int, int]]  # character span of every word in ``text``
    scored: np.ndarray  # (T,) bool: word has at least one piece
    windows: list[WindowResult]
    probs: np.ndarray  # pruned model, mean over windows
    probs_full: np.ndarray  # unpruned model, mean over windows
    methods: dict[str, dict]  # name -> {"scores": (T,), "selected": (T,) bool}
    k: int
    human: np.ndarray | None
    human_source: str | None
    metrics: list[dict] | None
    speed: dict
    notices: list[str]
    timings_ms: dict[str, float]
    costs: dict[str, dict] = field(default_factory=dict)  # method -> {"forward", "backward", "ms"}
    text_pair: str | None = None  # the second text of a pair model (context: in every window, not scored)

    @property
    def predicted(self) -> str:
        return self.labels[int(np.argmax(self.probs))]

    @property
    def predicted_full(self) -> str:
        return self.labels[int(np.argmax(self.probs_full))]

    def to_dict(self) -> dict:
        """Everything, as plain JSON data (the JSON download and the ``/analyze_json`` API)."""
        return jsonable({
            "text": self.text,
            "text_pair": self.text_pair,
            "model": self.model_path,
            "threshold_scale": self.threshold_scale,
            "prediction": {
                "label": self.predicted,
                "probabilities": dict(zip(self.labels, np.round(np.asarray(self.probs, np.float64), 6))),
                "unpruned_label": self.predicted_full,
                "unpruned_probabilities": dict(zip(self.labels, np.round(np.asarray(self.probs_full, np.float64), 6))),
            },
            "notices": self.notices,
            "rationale_size_k": self.k,
            "human_rationale_source": self.human_source,
            "words": self.word_rows(),
            "windows": [{
                "piece_range": [w.start, w.end],
                "pieces": w.pieces,
                "piece_word": w.piece_word,
                "token_type_ids": w.token_type_ids,
                "cp_scores": np.round(w.cp.astype(np.float64), 6),
                "keep_masks": w.keep,
                "drop_layer": w.drop_layer,
                "thresholds": np.round(w.thresholds.astype(np.float64), 6),
                "layer_lengths": w.layer_lengths,
                "probabilities": np.round(w.probs.astype(np.float64), 6),
            } for w in self.windows],
            "metrics_vs_human": self.metrics,
            "speed": self.speed,
            "cost": self.costs,
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        })

    def word_rows(self) -> list[dict]:
        """One row per word: scores and selection of every method (the CSV download)."""
        rows = []
        for t, word in enumerate(self.words):
            row: dict[str, Any] = {"index": t, "word": word, "char_start": self.spans[t][0],
                                   "char_end": self.spans[t][1], "has_pieces": bool(self.scored[t])}
            if self.human is not None:
                row["human"] = bool(self.human[t])
            for name in METHOD_ORDER:
                if name in self.methods:
                    m = self.methods[name]
                    row[f"{name}_score"] = round(float(m["scores"][t]), 6)
                    row[f"{name}_selected"] = bool(m["selected"][t])
            rows.append(row)
        return rows

    def to_csv(self) -> str:
        rows = self.word_rows()
        buf = io.StringIO()
        if rows:
            w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)
        else:
            buf.write("index,word\n")
        return buf.getvalue()


def _repeats(total_tokens: int) -> int:
    """Timed runs of the pruned and unpruned passes (the masked path gets one): enough for a stable
    median on short inputs, one run when a single pass already takes a sizeable share of the budget."""
    return 3 if total_tokens <= 32 else 2 if total_tokens <= 340 else 1


def human_for_text(text: str, example: HumanRationale | None) -> HumanRationale | None:
    """The example's human rationale applies only while the text is exactly the example's."""
    if example is None or not text:
        return None
    return example if text.split() == example.tokens else None


def _second_text(tokenizer, text_pair: str, max_length: int, max_chars: int,
                 notices: list[str]) -> tuple[str, list[int]]:
    """The second text of a pair (as analysed) and its word pieces: segment B of every window."""
    if not str(text_pair).strip():
        raise InputError("The second text is empty: type it, or analyse the first text alone.")
    text_pair = str(text_pair)
    if len(text_pair) > max_chars:
        notices.append(f"The second text has {len(text_pair):,} characters; only the first {max_chars:,} are used.")
        text_pair = text_pair[:max_chars]
    ids = list(tokenizer(text_pair, add_special_tokens=False, verbose=False)["input_ids"])
    if not ids:
        raise InputError("The second text produces no word pieces the model knows (only characters the "
                         "tokenizer removes).")
    limit = max(1, int(PAIR_FRACTION * max_length))
    if len(ids) > limit:  # it repeats in every window: the first text must keep room
        notices.append(f"The second text has {len(ids):,} word pieces; only its first {limit} (half a window of "
                       f"{max_length}) are used.")
        ids = ids[:limit]
    return text_pair, ids


def analyze_text(model, tokenizer, text: str, threshold_scale: float = 1.0, human: HumanRationale | None = None,
                 *, text_pair: str | None = None, engine: Engine | None = None, baseline=None, labels: list[str] | None = None,
                 model_path: str | None = None, lock=None, max_windows: int = MAX_WINDOWS,
                 max_chars: int = MAX_CHARS, slow_methods: bool = False) -> Analysis:
    """Prediction, survival heatmap data, rationales, metrics and speed for one text.

    ``model``: an AdapLeR classifier (``AdapLeRForSequenceClassification``); ``tokenizer``: its fast
    tokenizer. ``human``: a rationale over ``text.split()``, used only while the text is exactly its
    tokens. ``text_pair``: the second text of a pair model, encoded ``[CLS] text [SEP] text_pair [SEP]``
    with segment ids 1 on ``text_pair [SEP]``; it is context in every window (cut to
    ``PAIR_FRACTION`` of a window), and only the words of ``text`` are scored. ``engine`` (default: a
    new one, memory cache) and ``baseline`` (default:
    ``adapler.evaluation.plain_bert_copy(model)``, the timed unpruned model) are worth keeping
    between calls. ``labels``: class names (default: ``config.id2label``). ``lock``: held while the
    model runs (a ``threading.Lock`` per model in a server). ``slow_methods``: also Integrated
    Gradients (``IG_STEPS`` steps) and occlusion. Raises
    :class:`InputError` for an empty text (or an empty ``text_pair``) or a bad threshold scale.
    """
    engine = engine if engine is not None else Engine(model, tokenizer, batch_size=4)
    baseline = baseline if baseline is not None else plain_bert_copy(model).eval()
    if labels is None:
        id2label = getattr(model.config, "id2label", None) or {}
        labels = [str(id2label.get(i, f"class {i}")) for i in range(model.config.num_labels)]
    model_path = model_path if model_path is not None else str(getattr(model.config, "name_or_path", ""))
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    notices: list[str] = []
    if text is None or not str(text).strip():
        raise InputError("Type a sentence (or pick an example) to analyse.")
    text = str(text)
    try:
        scale = float(threshold_scale)
    except (TypeError, ValueError):
        raise InputError(f"The threshold scale must be a number, got {threshold_scale!r}.") from None
    if not np.isfinite(scale) or scale < 0:
        raise InputError(f"The threshold scale must be a finite number >= 0, got {threshold_scale!r}.")
    if len(text) > max_chars:
        notices.append(f"The text has {len(text):,} characters; only the first {max_chars:,} are analysed.")
        text = text[:max_chars]
    tok = tokenizer
    max_length = engine.max_length
    num_layers = int(model.config.num_hidden_layers)
    human = human_for_text(text, human)

    # ---- words and pieces (one alignment function for highlighting and scoring)
    t = time.perf_counter()
    query_ids = None
    if text_pair is not None:
        text_pair, query_ids = _second_text(tok, text_pair, max_length, max_chars, notices)
    room = max_length - 2 - (len(query_ids) + 1 if query_ids else 0)  # first-text pieces per window
    alignment, spans = align_text(tok, text)
    max_pieces = max_windows * room
    if alignment.num_pieces > max_pieces:
        n_words = int(np.searchsorted(alignment.word_start, max_pieces, side="right")) - 1
        notices.append(
            f"The text has {alignment.num_pieces:,} word pieces; the explorer analyses at most {max_windows} windows "
            f"of {room} pieces, so only the first {n_words:,} of {alignment.num_tokens:,} words are "
            "analysed (the rest is not shown).")
        alignment = alignment.subset(range(n_words))
        spans = spans[:n_words]
        text_used_end = spans[-1][1] if spans else 0
        text = text[:text_used_end]
        if human is not None:
            notices.append("The human rationale is not shown because the example was cut.")
            human = None
    if alignment.num_tokens == 0 or alignment.num_pieces == 0:
        notices.append("The text produces no word pieces the model knows (only characters the tokenizer removes); "
                       "the model sees just [CLS] [SEP].")
    lost = len(alignment.lost)
    if lost and alignment.num_pieces:
        notices.append(f"{lost} word(s) produce no word piece (characters the tokenizer removes); they score 0.")
    unknown = len(alignment.unknown)
    if unknown:
        notices.append(f"{unknown} word(s) contain pieces unknown to the tokenizer ([UNK]).")
    windows = make_windows(alignment, tok, max_length, query_ids)
    if len(windows) > 1:
        notices.append(
            f"The text has {alignment.num_pieces:,} word pieces, more than one window of {room}: it is "
            f"split into {len(windows)} consecutive windows (every analysed piece is seen once"
            f"{'; the second text is in every window' if query_ids else ''}); the prediction is the mean over "
            "windows. Pick a window above the heatmap.")
    timings["tokenize"] = (time.perf_counter() - t) * 1000

    doc = DocInput("input", "input", alignment,
                   np.asarray(human.gold, dtype=bool) if human is not None else np.zeros(alignment.num_tokens, bool),
                   human.label if human is not None else "", query_ids)
    total_tokens = sum(w.length for w in windows)
    repeats = _repeats(total_tokens)

    with lock if lock is not None else contextlib.nullcontext():  # the model passes, one caller at a time
        # ---- pruned pass per window (batch 1), timed; plus the unpruned baseline and masked, timed
        t = time.perf_counter()
        results: list[WindowResult] = []
        ms = {"drop": 0.0, "masked": 0.0, "baseline": 0.0}
        with torch.inference_mode():
            for w in windows:
                ids = torch.tensor([w.input_ids])
                tt = torch.tensor([w.token_type_ids])
                def run(m, ids=ids, tt=tt, **kw):
                    return lambda: m(input_ids=ids, token_type_ids=tt, **kw)

                out, t_drop = time_call(run(model, mode="drop", threshold_scale=scale, output_token_masks=True), repeats)
                _, t_mask = time_call(run(model, mode="masked", threshold_scale=scale), 1)
                _, t_base = time_call(run(baseline), repeats)
                ms["drop"] += 1000 * t_drop
                ms["masked"] += 1000 * t_mask
                ms["baseline"] += 1000 * t_base
                n = w.num_doc_pieces
                results.append(WindowResult(
                    start=w.start, end=w.end,
                    pieces=tok.convert_ids_to_tokens(w.input_ids),
                    piece_word=[-1] + [int(x) for x in alignment.piece_word[w.start:w.end]] + [-1] * (w.length - 1 - n),
                    cp=out.cp_scores[0].float().numpy(),
                    keep=out.keep_masks[0].bool().numpy(),
                    thresholds=out.thresholds[0].float().numpy(),
                    layer_lengths=out.layer_lengths[0].float().numpy(),
                    probs=torch.softmax(out.logits[0].float(), -1).numpy(),
                    token_type_ids=list(w.token_type_ids),
                ))
        timings["forward_timed"] = (time.perf_counter() - t) * 1000

        # ---- rationale methods: the same objects the ERASER runner uses, on the shared engine
        t = time.perf_counter()
        # one unpruned forward + backward gives probabilities, saliency (predicted class) and attention;
        # the methods below read it from the engine's cache
        full = engine.unpruned([doc], saliency=True, attention=True, rollout=True)[0]
        base = [{k: full[k] for k in ("probs", "attention", "rollout", "ms_forward") if k in full}]
        probs_full = np.asarray(full["probs"], dtype=np.float64)
        # the AdapLeR method reads the timed drop pass above (same windows, same scale): no second run
        context = {"targets": [int(full["target"])], "base_attention": base, "threshold_scale": scale,
                   "adapler_passes": [{
                       "probs": np.mean([r.probs for r in results], axis=0),
                       "keep": scatter_window_scores(windows, [r.keep for r in results], alignment.num_pieces),
                       "cp": scatter_window_scores(windows, [r.cp for r in results], alignment.num_pieces),
                       "layer_lengths": [r.layer_lengths for r in results],
                       "ms": ms["drop"],  # AdapLeR's rationale costs its pruned inference, timed above
                   }]}
        outputs = {}
        methods_run = [AdapLeRMethod(), SaliencyMethod(), AttentionMethod(False), AttentionMethod(True)]
        if slow_methods:
            methods_run += [IntegratedGradientsMethod(IG_STEPS), OcclusionMethod()]
        for method in methods_run:
            t_m = time.perf_counter()
            outputs[method.name] = method.explain([doc], engine, context)[0]
            timings[f"method_{method.name}"] = (time.perf_counter() - t_m) * 1000
        timings["methods"] = (time.perf_counter() - t) * 1000

    # ---- equal-size rationales: k = words AdapLeR keeps to the last layer
    t = time.perf_counter()
    scored = alignment.scored
    ad = outputs["adapler"]
    ad_sel = np.asarray(ad.hard, dtype=bool) & scored
    k = int(ad_sel.sum())
    methods: dict[str, dict] = {"adapler": {"scores": np.asarray(ad.scores, float), "selected": ad_sel,
                                            "layer_masks": ad.layer_masks}}
    for name in [n for n in METHOD_ORDER[1:] if n in outputs]:
        o = outputs[name]
        methods[name] = {"scores": np.asarray(o.scores, float),
                         "selected": M.top_k_mask(o.scores, k, o.tiebreak, eligible=scored)}

    # ---- agreement with the human rationale
    metrics = None
    if human is not None:
        gold = doc.gold
        gold_spans = {0: M.mask_to_spans(gold)}
        metrics = []
        for name in [n for n in METHOD_ORDER if n in methods]:
            sel, sc = methods[name]["selected"], methods[name]["scores"]
            tok_prf = M.token_prf(gold_spans, {0: M.mask_to_spans(sel)})
            iou = M.iou_f1(gold_spans, {0: M.mask_to_spans(sel)}, (0.5,))[0.5]
            soft = M.soft_token_scores([(gold, sc)])
            fpr = M.false_positive_rate([gold], [sel[None, :]], [scored])[0]
            metrics.append({
                "method": name, "selected": int(sel.sum()), "human": int(gold.sum()),
                "token_precision": tok_prf["macro"]["p"], "token_recall": tok_prf["macro"]["r"],
                "token_f1": tok_prf["macro"]["f1"], "iou_f1": iou["macro"]["f1"],
                "auprc": soft["auprc"], "fpr": fpr["macro"],
            })
    timings["metrics"] = (time.perf_counter() - t) * 1000

    # ---- speed: analytic FLOPs from the per-layer lengths, measured ms
    eta = model.effective_eta(scale).tolist()
    pred = int(np.argmax(np.mean([r.probs for r in results], axis=0)))
    fl = flops_per_example([w.length for w in windows], [r.layer_lengths.tolist() for r in results], model.config,
                           cp_scores=[r.cp for r in results], eta=eta, predictions=[pred] * len(results))
    fsum = {key: float(sum(v)) for key, v in fl.items()}
    speed = {
        "input_tokens": int(total_tokens),
        "tokens_processed_unpruned": int(total_tokens * num_layers),
        "tokens_processed_pruned": float(sum(r.layer_lengths.sum() for r in results)),
        "flops_unpruned": fsum["corrected_base"],
        "flops_pruned": fsum["corrected_adapler"],
        "flops_speedup": fsum["corrected_base"] / fsum["corrected_adapler"] if fsum["corrected_adapler"] else None,
        "parity_flops_unpruned": fsum.get("parity_base"),
        "parity_flops_pruned": fsum.get("parity_adapler"),
        "parity_flops_speedup": (fsum["parity_base"] / fsum["parity_adapler"]) if fsum.get("parity_adapler") else None,
        "ms_unpruned": ms["baseline"],
        "ms_pruned_drop": ms["drop"],
        "ms_pruned_masked": ms["masked"],
        "measured_speedup": ms["baseline"] / ms["drop"] if ms["drop"] else None,
        "timing": (f"batch 1, {len(windows)} window(s), median of {repeats} run(s) (masked: 1 run), "
                   f"{torch.get_num_threads()} CPU thread(s)"),
    }
    timings["total"] = (time.perf_counter() - t_all) * 1000

    return Analysis(
        text=text, model_path=model_path, labels=labels, threshold_scale=scale, num_layers=num_layers,
        words=list(alignment.tokens), spans=list(spans), scored=scored,
        windows=results, probs=np.mean([r.probs for r in results], axis=0), probs_full=probs_full,
        methods=methods, k=k, human=doc.gold if human is not None else None,
        human_source=human.source if human is not None else None,
        metrics=metrics, speed=speed, notices=notices, timings_ms=timings,
        costs={name: o.extra["cost"] for name, o in outputs.items() if "cost" in o.extra}, text_pair=text_pair,
    )
