"""Thin orchestration for the explorer: one text in, one :class:`Analysis` out.

Every model, rationale and metric computation is a call into the libraries:

* ``adapler``: the model (``mode="drop"`` pass for the survival heatmap), ``flops_per_example``,
  ``plain_bert_copy`` (the unpruned baseline timed in the speed panel);
* ``eraser_eval``: word alignment (``align_text``, ``make_windows``), the rationale methods and the
  engine that runs their model passes (the same objects the ERASER runner uses), the metric
  functions, data loaders and the live ``evaluate``.

This module only sequences those calls, keeps loaded models, guards them with a lock (the model
toggles its attention kernel while it runs, so passes of one model never overlap) and turns the
results into plain data for the UI and the downloads.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("app")

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS = REPO_ROOT / "assets"
MODELS_DIR = ASSETS / "models"
REPORTS_DIR = ASSETS / "reports"
EXAMPLES_FILE = ASSETS / "examples.json"

# (task folder under assets/models, label in the picker)
SHIPPED_MODELS: tuple[tuple[str, str], ...] = (
    ("sst2", "SST-2 (sentiment)"),
    ("hatexplain", "HateXplain (toxicity)"),
    ("movies", "Movie Reviews (sentiment)"),
)
DATASET_TITLES = {"hatexplain": "HateXplain", "movies": "Movie Reviews", "multirc": "MultiRC"}

MAX_CHARS = 50_000  # longer text is cut (visible notice) before tokenising
MAX_WINDOWS = 4  # at most this many model windows per analysis; the rest is cut with a notice
METHOD_ORDER = ("adapler", "saliency", "attention", "attention_rollout")
METHOD_TITLES = {
    "human": "Human rationale",
    "adapler": "AdapLeR (tokens kept to the last layer)",
    "saliency": "Gradient x input (saliency)",
    "attention": "[CLS] attention (last layer)",
    "attention_rollout": "Attention rollout",
}


class UserError(ValueError):
    """A problem with the user's input or choice; the message is shown as it is."""


# --------------------------------------------------------------------------------------------------
# models


def shipped_models(models_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Picker label -> folder of every shipped model present (a folder with a config.json)."""
    root = Path(models_dir) if models_dir else MODELS_DIR
    out = {}
    for task, label in SHIPPED_MODELS:
        p = root / task
        if (p / "config.json").is_file():
            out[label] = p
    return out


def task_of(path: str | os.PathLike | None) -> str | None:
    """Shipped task name of a model folder (``assets/models/<task>``), else None."""
    if path is None:
        return None
    name = Path(path).name
    return name if name in {t for t, _ in SHIPPED_MODELS} else None


@dataclass
class ModelBundle:
    """A loaded model with everything the analysis needs, and the lock that serialises its passes."""

    path: Path
    model: Any
    tokenizer: Any
    engine: Any  # eraser_eval.Engine
    baseline: Any  # plain BERT with the same weights (adapler.evaluation.plain_bert_copy)
    labels: list[str]
    trained_adapler: bool  # False: a plain BERT folder, CPs are untrained
    max_length: int
    load_seconds: float
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def task(self) -> str | None:
        return task_of(self.path)

    def describe(self) -> str:
        c = self.model.config
        kind = "AdapLeR" if self.trained_adapler else "plain BERT (untrained Contribution Predictors)"
        return (f"{kind} · {c.num_hidden_layers} layers · hidden {c.hidden_size} · "
                f"classes: {', '.join(self.labels)} · window {self.max_length} pieces")


_BUNDLES: dict[str, ModelBundle] = {}
_BUNDLES_LOCK = threading.Lock()


def load_bundle(path: str | os.PathLike) -> ModelBundle:
    """Load (once per process) the model folder ``path``; raises :class:`UserError` with a reason."""
    path = Path(path).expanduser()
    key = str(path.resolve())
    with _BUNDLES_LOCK:
        if key in _BUNDLES:
            return _BUNDLES[key]
        if not (path / "config.json").is_file():
            raise UserError(f"No model at {path}: the folder needs a config.json (an AdapLeR or BERT classifier).")
        t0 = time.perf_counter()
        from adapler.evaluation import plain_bert_copy
        from eraser_eval import Engine
        from eraser_eval.runner import load_model

        try:
            model, tokenizer = load_model(str(path))
        except Exception as e:  # a broken folder: say which and why, no traceback
            raise UserError(f"Could not load the model at {path}: {e}") from None
        if not getattr(tokenizer, "is_fast", False):
            raise UserError(f"The tokenizer at {path} is not a fast tokenizer; word alignment needs one.")
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
        id2label = getattr(model.config, "id2label", None) or {}
        labels = [str(id2label.get(i, id2label.get(str(i), f"class {i}"))) for i in range(model.config.num_labels)]
        engine = Engine(model, tokenizer, batch_size=4, cache_dir=None)
        baseline = plain_bert_copy(model).eval()
        bundle = ModelBundle(path, model, tokenizer, engine, baseline, labels,
                             raw.get("model_type") == "adapler", engine.max_length, 0.0)
        try:  # every code path once (drop, masked, eager attention, backward): first answers are fast
            words = "A short warm-up sentence for the explorer.".split()
            analyze(bundle, " ".join(words), 1.0, HumanExample("warm-up", "warm-up", "warm-up", " ".join(words),
                                                               words, [i % 2 == 0 for i in range(len(words))], ""))
        except Exception:  # a warm-up failure surfaces again, readably, on the first real request
            log.exception("warm-up analysis failed for %s", path)
        bundle.load_seconds = time.perf_counter() - t0
        _BUNDLES[key] = bundle
        log.info("loaded %s in %.1f s", path, bundle.load_seconds)
        return bundle


# --------------------------------------------------------------------------------------------------
# examples


def load_examples(path: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """Sentences written for the app, per task (``assets/examples.json``)."""
    p = Path(path) if path else EXAMPLES_FILE
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: [str(s) for s in v] for k, v in data.items() if not k.startswith("_") and isinstance(v, list)}


@dataclass
class HumanExample:
    """A dataset example with a human rationale over its whitespace tokens."""

    key: str  # "dataset:annotation_id"
    dataset: str
    annotation_id: str
    text: str  # tokens joined by spaces, sentences by newlines
    tokens: list[str]
    gold: list[bool]
    label: str

    @property
    def title(self) -> str:
        head = " ".join(self.tokens[:9])
        return f"{DATASET_TITLES.get(self.dataset, self.dataset)} · {self.label} · {head}{' …' if len(self.tokens) > 9 else ''}"


def load_human_examples(data_dir: str | os.PathLike | None, per_dataset: int = 6) -> list[HumanExample]:
    """Test-split examples with human rationales from the local data folder (hidden if absent).

    Picks, per dataset, examples with a non-empty rationale (and for HateXplain one without),
    short enough to read. Never raises: missing or malformed data just gives no examples.
    """
    from eraser_eval.data import EraserDataError, load_dataset, resolve_data_root

    try:
        root = resolve_data_root(data_dir)
    except EraserDataError:
        return []
    out: list[HumanExample] = []
    for dataset, limit, max_tokens in (("hatexplain", 120, 60), ("movies", 30, 900)):
        try:
            ds = load_dataset(dataset, "test", root, limit=limit)
        except Exception as e:  # no such folder, malformed files: hide this dataset
            log.info("no %s examples: %s", dataset, e)
            continue
        picked, empty_taken = [], False
        for ann in ds.annotations:
            doc = ds.documents[ann.docid]
            if len(doc) > max_tokens:
                continue
            gold = ds.gold_mask(ann)
            if not gold.any():
                if dataset != "hatexplain" or empty_taken:
                    continue
                empty_taken = True
            text = "\n".join(" ".join(s) for s in doc.sentences)
            picked.append(HumanExample(f"{dataset}:{ann.annotation_id}", dataset, ann.annotation_id, text,
                                       doc.tokens, [bool(x) for x in gold], ann.classification))
            if len(picked) >= per_dataset:
                break
        out += picked
    return out


# --------------------------------------------------------------------------------------------------
# analysis


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

    @property
    def predicted(self) -> str:
        return self.labels[int(np.argmax(self.probs))]

    @property
    def predicted_full(self) -> str:
        return self.labels[int(np.argmax(self.probs_full))]

    def to_dict(self) -> dict:
        """Everything, as plain JSON data (the JSON download and the ``/analyze_json`` API)."""
        from eraser_eval.report import jsonable

        return jsonable({
            "text": self.text,
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
                "cp_scores": np.round(w.cp.astype(np.float64), 6),
                "keep_masks": w.keep,
                "drop_layer": w.drop_layer,
                "thresholds": np.round(w.thresholds.astype(np.float64), 6),
                "layer_lengths": w.layer_lengths,
                "probabilities": np.round(w.probs.astype(np.float64), 6),
            } for w in self.windows],
            "metrics_vs_human": self.metrics,
            "speed": self.speed,
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


class _OwnAdapLeRPass:
    """The shared :class:`eraser_eval.Engine`, except that its AdapLeR pass is one already run.

    ``Engine.adapler(docs)`` returns ``{"probs", "keep": (L, P), "cp": (L, P), "layer_lengths"}`` per
    document; the analysis has exactly that from its timed ``mode="drop"`` pass (scattered to document
    pieces with ``eraser_eval.align.scatter_window_scores``), so the model is not run a second time.
    """

    def __init__(self, engine, passes: list[dict]):
        self._engine = engine
        self._passes = passes

    def adapler(self, docs):
        if len(docs) != len(self._passes):
            raise ValueError("precomputed AdapLeR pass for a different set of documents")
        return self._passes

    def __getattr__(self, name):
        return getattr(self._engine, name)


def _timed(fn, repeats: int):
    """(last output, median ms) of ``repeats`` calls."""
    times, out = [], None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return out, statistics.median(times)


def _repeats(total_tokens: int) -> int:
    """Timed runs of the pruned and unpruned passes (the masked path gets one): enough for a stable
    median on short inputs, one run when a single pass already takes a sizeable share of the budget."""
    return 3 if total_tokens <= 32 else 2 if total_tokens <= 340 else 1


def human_for_text(text: str, example: HumanExample | None) -> HumanExample | None:
    """The example's human rationale applies only while the text is exactly the example's."""
    if example is None or not text:
        return None
    return example if text.split() == example.tokens else None


def analyze(bundle: ModelBundle, text: str, threshold_scale: float = 1.0,
            human: HumanExample | None = None) -> Analysis:
    """Prediction, survival heatmap data, rationales, metrics and speed for one text."""
    import torch

    from adapler.flops import flops_per_example
    from eraser_eval import DocInput
    from eraser_eval import metrics as M
    from eraser_eval.align import align_text, make_windows, scatter_window_scores
    from eraser_eval.methods import AdapLeRMethod, AttentionMethod, SaliencyMethod

    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    notices: list[str] = []
    if text is None or not str(text).strip():
        raise UserError("Type a sentence (or pick an example) to analyse.")
    text = str(text)
    try:
        scale = float(threshold_scale)
    except (TypeError, ValueError):
        raise UserError(f"The threshold scale must be a number, got {threshold_scale!r}.") from None
    if not np.isfinite(scale) or scale < 0:
        raise UserError(f"The threshold scale must be a finite number >= 0, got {threshold_scale!r}.")
    if len(text) > MAX_CHARS:
        notices.append(f"The text has {len(text):,} characters; only the first {MAX_CHARS:,} are analysed.")
        text = text[:MAX_CHARS]
    tok = bundle.tokenizer
    human = human_for_text(text, human)

    # ---- words and pieces (one alignment function for highlighting and scoring)
    t = time.perf_counter()
    alignment, spans = align_text(tok, text)
    max_pieces = MAX_WINDOWS * (bundle.max_length - 2)
    if alignment.num_pieces > max_pieces:
        n_words = int(np.searchsorted(alignment.word_start, max_pieces, side="right")) - 1
        notices.append(
            f"The text has {alignment.num_pieces:,} word pieces; the explorer analyses at most {MAX_WINDOWS} windows "
            f"of {bundle.max_length - 2} pieces, so only the first {n_words:,} of {alignment.num_tokens:,} words are "
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
    windows = make_windows(alignment, tok, bundle.max_length)
    if len(windows) > 1:
        notices.append(
            f"The text has {alignment.num_pieces:,} word pieces, more than one window of {bundle.max_length - 2}: it is "
            f"split into {len(windows)} consecutive windows (every analysed piece is seen once); the prediction is the mean over "
            "windows. Pick a window above the heatmap.")
    timings["tokenize"] = (time.perf_counter() - t) * 1000

    doc = DocInput("input", "input", alignment,
                   np.asarray(human.gold, dtype=bool) if human is not None else np.zeros(alignment.num_tokens, bool),
                   human.label if human is not None else "")
    total_tokens = sum(w.length for w in windows)
    repeats = _repeats(total_tokens)
    model, baseline, engine = bundle.model, bundle.baseline, bundle.engine

    with bundle.lock:
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

                out, t_drop = _timed(run(model, mode="drop", threshold_scale=scale), repeats)
                _, t_mask = _timed(run(model, mode="masked", threshold_scale=scale), 1)
                _, t_base = _timed(run(baseline), repeats)
                ms["drop"] += t_drop
                ms["masked"] += t_mask
                ms["baseline"] += t_base
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
                ))
        timings["forward_timed"] = (time.perf_counter() - t) * 1000

        # ---- rationale methods: the same objects the ERASER runner uses, on the shared engine
        t = time.perf_counter()
        engine.threshold_scale = scale
        # one unpruned forward + backward gives probabilities, saliency (predicted class) and attention;
        # the methods below read it from the engine's cache
        full = engine.unpruned([doc], saliency=True, attention=True, rollout=True)[0]
        base = [{k: full[k] for k in ("probs", "attention", "rollout")}]
        probs_full = np.asarray(full["probs"], dtype=np.float64)
        context = {"targets": [int(full["target"])], "base_attention": base}
        # the AdapLeR method reads the timed drop pass above (same windows, same scale): no second run
        own = _OwnAdapLeRPass(engine, [{
            "probs": np.mean([r.probs for r in results], axis=0),
            "keep": scatter_window_scores(windows, [r.keep for r in results], alignment.num_pieces),
            "cp": scatter_window_scores(windows, [r.cp for r in results], alignment.num_pieces),
            "layer_lengths": [r.layer_lengths for r in results],
        }])
        outputs = {}
        for method in (AdapLeRMethod(), SaliencyMethod(), AttentionMethod(False), AttentionMethod(True)):
            t_m = time.perf_counter()
            outputs[method.name] = method.explain([doc], own, context)[0]
            timings[f"method_{method.name}"] = (time.perf_counter() - t_m) * 1000
        cache = getattr(engine, "cache", None)
        if cache is not None and sum(len(v) for v in getattr(cache, "mem", {}).values()) > 512:
            cache.mem.clear()  # keep memory bounded in a long-running server
        timings["methods"] = (time.perf_counter() - t) * 1000

    # ---- equal-size rationales: k = words AdapLeR keeps to the last layer
    t = time.perf_counter()
    scored = alignment.scored
    ad = outputs["adapler"]
    ad_sel = np.asarray(ad.hard, dtype=bool) & scored
    k = int(ad_sel.sum())
    methods: dict[str, dict] = {"adapler": {"scores": np.asarray(ad.scores, float), "selected": ad_sel,
                                            "layer_masks": ad.layer_masks}}
    for name in METHOD_ORDER[1:]:
        o = outputs[name]
        methods[name] = {"scores": np.asarray(o.scores, float),
                         "selected": M.top_k_mask(o.scores, k, o.tiebreak, eligible=scored)}

    # ---- agreement with the human rationale
    metrics = None
    if human is not None:
        gold = doc.gold
        gold_spans = {0: M.mask_to_spans(gold)}
        metrics = []
        for name in METHOD_ORDER:
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
        "tokens_processed_unpruned": int(total_tokens * bundle.num_layers),
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
    if not bundle.trained_adapler:
        notices.append("This model folder is a plain BERT classifier: its Contribution Predictors and thresholds are "
                       "untrained, so the pruning shown is not meaningful.")

    return Analysis(
        text=text, model_path=str(bundle.path), labels=bundle.labels, threshold_scale=scale,
        num_layers=bundle.num_layers, words=list(alignment.tokens), spans=list(spans), scored=scored,
        windows=results, probs=np.mean([r.probs for r in results], axis=0), probs_full=probs_full,
        methods=methods, k=k, human=doc.gold if human is not None else None,
        human_source=f"{human.dataset} test, annotation {human.annotation_id}" if human is not None else None,
        metrics=metrics, speed=speed, notices=notices, timings_ms=timings,
    )


def write_downloads(analysis: Analysis, folder: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``analysis.json`` and ``analysis_words.csv`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pj, pc = folder / "adapler_analysis.json", folder / "adapler_analysis_words.csv"
    pj.write_text(json.dumps(analysis.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
    pc.write_text(analysis.to_csv(), encoding="utf-8")
    return pj, pc


# --------------------------------------------------------------------------------------------------
# ERASER reports


def report_tasks(reports_dir: str | os.PathLike | None = None) -> list[str]:
    root = Path(reports_dir) if reports_dir else REPORTS_DIR
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.iterdir()))


def read_report(task: str, reports_dir: str | os.PathLike | None = None) -> dict:
    """The shipped report files of one task: markdown, summary table, FPR table, images, HTML."""
    import pandas as pd

    root = Path(reports_dir) if reports_dir else REPORTS_DIR
    folder = (root / task).resolve()
    if root.resolve() not in folder.parents or not folder.is_dir():
        raise UserError(f"No shipped report for {task!r}.")
    out: dict[str, Any] = {"folder": folder, "markdown": None, "summary": None, "fpr": None,
                           "images": [], "files": []}
    if (folder / "report.md").is_file():
        out["markdown"] = (folder / "report.md").read_text(encoding="utf-8")
    if (folder / "metrics.csv").is_file():
        out["summary"] = pd.read_csv(folder / "metrics.csv")
    elif (folder / "metrics.json").is_file():
        data = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        out["metrics_json"] = data
    if (folder / "fpr.csv").is_file():
        out["fpr"] = pd.read_csv(folder / "fpr.csv")
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in (".png", ".svg", ".jpg", ".jpeg", ".webp"):
            out["images"].append(p)
        elif p.is_file() and p.name in ("metrics.json", "metrics.csv", "fpr.csv", "report.md", "report.html"):
            out["files"].append(p)
    return out


def live_evaluation(bundle: ModelBundle, dataset: str, n: int, data_dir: str | os.PathLike | None,
                    progress=None):
    """``eraser_eval.evaluate`` on the first ``n`` test annotations (no files written)."""
    from eraser_eval import evaluate

    with bundle.lock:
        return evaluate(dataset, "test", model=bundle.model, tokenizer=bundle.tokenizer, data_dir=data_dir,
                        methods=["adapler", "saliency", "attention", "random"], limit=int(n), batch_size=8,
                        faithfulness="basic", progress=progress, show_progress=False)
