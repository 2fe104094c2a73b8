"""Python API: ``evaluate(...)`` runs the methods on an ERASER split and scores them.

Flow (each model pass runs once, batched over all documents, cached on disk):

1. load + validate the split (:mod:`eraser_eval.data`), align every document to word pieces
   (:mod:`eraser_eval.align`);
2. ONE unpruned pass (forward, plus a backward when saliency is asked for) -> document class
   probabilities (mean over windows), gradient x input for the predicted class (the target of
   saliency and of every faithfulness score) and, when an attention method is asked for, [CLS]
   attention and rollout;
3. each method's rationale over document tokens (:mod:`eraser_eval.methods`); hard rationale = the
   method's own (AdapLeR at ``layer``; an imported file's spans) or top-k of its soft scores with
   k = the split's mean human rationale length;
4. faithfulness: the rationale (or the top 1/5/10/20/50% of tokens) is removed from / kept in the
   document's words; the input is the document's word pieces with the removed words' pieces
   deleted (:meth:`eraser_eval.align.Alignment.subset`, identical to re-tokenising the remaining
   words, since every word is tokenised on its own), cut into windows as usual, and the model
   (unpruned by default) is run again. All inputs of all methods and bins are batched together by
   length; every distinct window is run once (a window equal to one of the full document's, or to
   another input's, is reused);
5. ERASER result records are built, then scored from the records exactly as ERASER's scorer would
   (so an exported file re-scores to the same numbers), plus FPR per layer and accuracy.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from adapler import AdapLeRForSequenceClassification
from adapler.data import class_label_map

from . import metrics as M
from .align import align_batch
from .data import EraserDataset, dataset_spec, load_dataset
from .engine import Engine
from .methods import AdapLeRMethod, ImportMethod, RationaleMethod, get_method
from .report import jsonable, write_report
from .types import DocInput, MethodOutput

__all__ = ["EvalConfig", "EvaluationResult", "evaluate", "load_model"]

DEFAULT_METHODS = ("adapler", "saliency", "attention", "random")
ProgressCallback = Callable[[float, str], Any]


@dataclass
class EvaluationResult:
    """Everything ``evaluate`` computed.

    ``metrics``: method -> nested metric dict (ERASER names, see :func:`eraser_eval.metrics.score_records`,
    plus ``fpr`` and, for adapler, ``accuracy_pruned``); ``summary``: one row per method, flat columns
    (pandas DataFrame); ``fpr``: one row per (method, layer); ``fpr_difference``: one row per (baseline
    method, layer), AdapLeR's FPR minus the baseline's with a paired bootstrap interval over documents
    (:func:`eraser_eval.metrics.fpr_difference_bootstrap`); ``examples``: one row per (method,
    annotation); ``records``: method -> ERASER result lines; ``outputs``: method -> per-document
    :class:`MethodOutput`; ``docs``: the prepared documents.
    """

    dataset: str
    split: str
    config: dict
    metrics: dict[str, dict]
    summary: Any
    fpr: Any
    examples: Any
    records: dict[str, list[dict]]
    fpr_difference: Any = None
    outputs: dict[str, list[MethodOutput]] = field(repr=False, default_factory=dict)
    docs: list[DocInput] = field(repr=False, default_factory=list)
    alignment: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    work: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready content of ``metrics.json``."""
        return jsonable({
            "dataset": self.dataset,
            "split": self.split,
            "config": self.config,
            "methods": self.metrics,
            "fpr_difference": ([] if self.fpr_difference is None
                               else self.fpr_difference.to_dict(orient="records")),
            "alignment": self.alignment,
            "timings": self.timings,
            "work": self.work,
            "warnings": self.warnings[:50],
            "n_warnings": len(self.warnings),
        })


# --------------------------------------------------------------------------------------------------
# model loading


def load_model(model: Any, tokenizer: Any = None, device: str = "cpu"):
    """``(model, tokenizer)`` from a path (AdapLeR or plain BERT folder) or from objects.

    A path is loaded with ``AdapLeRForSequenceClassification.from_pretrained``; the tokenizer comes
    from ``tokenizer`` (object or path) or the model folder.
    """
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise FileNotFoundError(f"model folder {path} does not exist")
        loaded = AdapLeRForSequenceClassification.from_pretrained(str(path))
        if tokenizer is None:
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(path))
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}: no tokenizer in the model folder ({e}); pass --tokenizer") from None
        model = loaded
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
    if tokenizer is None:
        raise ValueError("a model object needs a tokenizer")
    return model.to(device).eval(), tokenizer


# --------------------------------------------------------------------------------------------------
# progress


class _Progress:
    """tqdm bars per stage plus an optional ``callback(fraction, description)`` for the app."""

    def __init__(self, stages: list[str], callback: ProgressCallback | None, show: bool):
        self.stages = stages
        self.callback = callback
        self.show = show
        self.bar = None
        self.current = None

    def stage_index(self, stage: str) -> int:
        for i, s in enumerate(self.stages):
            if stage.startswith(s):
                return i
        return len(self.stages) - 1

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.show:
            if stage != self.current:
                if self.bar is not None:
                    self.bar.close()
                self.bar = tqdm(total=total, desc=stage, unit="win", leave=False)
                self.current = stage
            self.bar.n = done
            self.bar.refresh()
            if done >= total:
                self.bar.close()
                self.bar, self.current = None, None
        if self.callback is not None:
            i = self.stage_index(stage)
            frac = (i + (done / total if total else 1.0)) / max(1, len(self.stages))
            self.callback(min(1.0, frac), f"{stage}: {done}/{total} windows")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.callback is not None:
            self.callback(1.0, "done")


# --------------------------------------------------------------------------------------------------
# helpers


def _label_probs(probs: np.ndarray, class_labels: list[str], labels: Sequence[str]) -> dict[str, float]:
    out = {lab: 0.0 for lab in labels}
    for c, p in enumerate(probs):
        out[class_labels[c]] += float(p)
    return {k: round(v, 8) for k, v in out.items()}


def _spans(mask: np.ndarray) -> list[dict]:
    return [{"start_token": s, "end_token": e} for s, e in M.mask_to_spans(mask)]


def _hard_for(out: MethodOutput, doc: DocInput, k: int) -> np.ndarray:
    if out.hard is not None:
        return np.asarray(out.hard, dtype=bool)
    if out.scores is None:
        return np.zeros(doc.num_tokens, dtype=bool)
    return M.top_k_mask(out.scores, k, out.tiebreak, eligible=doc.alignment.scored)


def _prepare(ds: EraserDataset, tokenizer) -> list[DocInput]:
    anns = ds.annotations
    aligns = align_batch(tokenizer, [ds.documents[a.docid].tokens for a in anns])
    queries: list[list[int] | None] = [None] * len(anns)
    if ds.has_query:
        texts = [a.query or "" for a in anns]
        enc = tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)
        queries = [list(ids) or None for ids in enc["input_ids"]]
    return [
        DocInput(a.annotation_id, a.docid, al, ds.gold_mask(a), a.classification, q)
        for a, al, q in zip(anns, aligns, queries)
    ]


def _alignment_stats(docs: list[DocInput], max_length: int) -> dict:
    tokens = sum(d.num_tokens for d in docs)
    pieces = sum(d.alignment.num_pieces for d in docs)
    lost = sum(len(d.alignment.lost) for d in docs)
    unk = sum(len(d.alignment.unknown) for d in docs)
    windows = 0
    for d in docs:
        size = max_length - 2 - (1 + len(d.query_ids) if d.query_ids else 0)
        windows += max(1, math.ceil(d.alignment.num_pieces / max(1, size)))
    return {
        "documents": len(docs),
        "tokens": tokens,
        "word_pieces": pieces,
        "windows": windows,
        "documents_longer_than_one_window": sum(
            1 for d in docs if d.alignment.num_pieces > max_length - 2 - (1 + len(d.query_ids) if d.query_ids else 0)
        ),
        "lost_tokens": lost,
        "documents_with_lost_tokens": sum(1 for d in docs if len(d.alignment.lost)),
        "unknown_tokens": unk,
        "documents_with_unknown_tokens": sum(1 for d in docs if len(d.alignment.unknown)),
        "max_length": max_length,
        "rule": "token score = max over its word pieces; token selected if any piece is selected; "
        "lost tokens (no pieces) score 0 and are excluded from FPR",
    }


def _flat_summary(method: str, m: dict, iou_thresholds: Sequence[float]) -> dict:
    row: dict[str, Any] = {"method": method, "n": m.get("n")}
    cls = m.get("classification")
    if cls:
        row["accuracy"] = cls["accuracy"]
        row["macro_f1"] = cls["macro_f1"]
    if "accuracy_pruned" in m:
        row["accuracy_pruned"] = m["accuracy_pruned"]
    row["token_f1_micro"] = m["token_prf"]["micro"]["f1"]
    row["token_f1_macro"] = m["token_prf"]["macro"]["f1"]
    for t in iou_thresholds:
        iou = m["iou"][float(t)]
        row[f"iou_f1_micro@{t:g}"] = iou["micro"]["f1"]
        row[f"iou_f1_macro@{t:g}"] = iou["macro"]["f1"]
    if "soft" in m:
        row["auprc"] = m["soft"]["auprc"]
        row["average_precision"] = m["soft"]["average_precision"]
        row["roc_auc"] = m["soft"]["roc_auc"]
    for key in ("comprehensiveness", "sufficiency"):
        if key in m:
            row[key] = m[key]
    if "aopc" in m:
        for key in ("comprehensiveness", "sufficiency"):
            if key in m["aopc"]:
                row[f"aopc_{key}"] = m["aopc"][key]
    fpr = m.get("fpr")
    if fpr:
        last = fpr[-1]
        row["fpr_macro_last_layer"] = last["macro"]
        row["fpr_micro_last_layer"] = last["micro"]
        row["fpr_macro_mean_over_layers"] = float(np.nanmean([r["macro"] for r in fpr]))
    row["rationale_length_mean"] = m.get("rationale_length_mean")
    cost = m.get("cost")
    if cost:
        row.update(cost)
    return row


def _mean_cost(outs: Sequence[MethodOutput]) -> dict | None:
    """Mean model passes (forward, backward) and measured ms per example; None for a method without
    a cost (an imported file). ms is None when some document's cost was not measured."""
    costs = [o.extra["cost"] for o in outs if "cost" in o.extra]
    if not costs:
        return None
    ms = [c["ms"] for c in costs]
    return {"forward_passes": float(np.mean([c["forward"] for c in costs])),
            "backward_passes": float(np.mean([c["backward"] for c in costs])),
            "ms_per_example": None if any(x is None for x in ms) else float(np.mean(ms))}


# --------------------------------------------------------------------------------------------------
# main entry point


@dataclass
class EvalConfig:
    """Everything one ERASER evaluation needs (``python -m eraser_eval`` builds one from its flags).

    Attributes:
        dataset, split: ``movies``/``multirc``/``hatexplain`` or an ERASER-layout folder; ``train``/``val``/``test``.
        label_map: model class name -> dataset label, for class names that differ from the dataset's.
        model: model folder or loaded model (AdapLeR or any HF classifier; ``adapler`` needs AdapLeR).
            May be None when only ``import`` is evaluated.
        tokenizer: tokenizer object or path (default: the model folder's).
        data_dir: data root (default: ``adapler.data.data_root``).
        methods: names from :data:`eraser_eval.methods.METHODS` (list or comma-separated string);
            ``import`` is added when ``import_results`` is given.
        limit, ids: evaluate the first N annotations / only these annotation ids.
        batch_size: full-length windows per forward batch.
        layer: AdapLeR hard-rationale layer, 1-based (negative counts from the end; None = last).
        max_length: window length in pieces incl. specials (default ``config.max_position_embeddings``).
        faithfulness: ``"full"`` (comprehensiveness, sufficiency and AOPC), ``"basic"`` (no AOPC)
            or ``"none"``.
        ig_steps: interpolation steps of ``integrated_gradients``.
        fpr: compute FPR per layer (needs an AdapLeR model).
        threshold_scale: multiplies AdapLeR's learned thresholds for the ``adapler`` method.
        faithfulness_threshold_scale: threshold scale of every prediction used for classification and
            faithfulness; 0 (default) = the unpruned model, 1 = the deployed pruning model.
        cache_dir: on-disk cache of model outputs (default ``OUT_DIR/cache`` when ``out_dir`` is set).
        out_dir: when set, reports and result files are written there (:func:`eraser_eval.report.write_report`).
        show_progress: tqdm bars per stage.
    """

    dataset: str = "movies"
    split: str = "test"
    label_map: dict[str, str] | None = None
    model: Any = None
    tokenizer: Any = None
    data_dir: str | os.PathLike | None = None
    methods: Sequence[str] | str = DEFAULT_METHODS
    limit: int | None = None
    ids: Sequence[str] | None = None
    import_results: str | os.PathLike | None = None
    batch_size: int = 8
    layer: int | None = None
    max_length: int | None = None
    faithfulness: str = "full"
    aopc_thresholds: Sequence[float] = M.AOPC_THRESHOLDS
    iou_thresholds: Sequence[float] = (0.5,)
    fpr: bool = True
    seed: int = 0
    ig_steps: int = 20
    threshold_scale: float = 1.0
    faithfulness_threshold_scale: float = 0.0
    cache_dir: str | os.PathLike | None = None
    out_dir: str | os.PathLike | None = None
    show_progress: bool = True
    device: str = "cpu"


def _fpr_difference(fp_by_doc: dict[str, dict[int, np.ndarray]], neg_by_doc: dict[int, int], seed: int):
    """AdapLeR's FPR minus each other method's, per layer, on the documents both cover (paired
    bootstrap over documents, 95% percentile interval); None without AdapLeR."""
    if "adapler" not in fp_by_doc:
        return None
    rows = []
    for name, fps in fp_by_doc.items():
        if name == "adapler":
            continue
        common = [i for i in fp_by_doc["adapler"] if i in fps]
        if not common:
            continue
        diff = M.fpr_difference_bootstrap(np.stack([fp_by_doc["adapler"][i] for i in common]),
                                          np.stack([fps[i] for i in common]),
                                          np.array([neg_by_doc[i] for i in common]), seed=seed)
        rows += [{"baseline": name, **r} for r in diff]
    return pd.DataFrame(rows, columns=["baseline", "layer", "macro_diff", "macro_lo", "macro_hi", "micro_diff",
                                       "micro_lo", "micro_hi", "n_examples"])


def evaluate(config: EvalConfig | None = None, /, *, progress: ProgressCallback | None = None,
             **options) -> EvaluationResult:
    """Evaluate rationale methods on an ERASER split, as configured by ``config`` (see
    :class:`EvalConfig`); keyword ``options`` build the configuration (or override fields of
    ``config``). ``progress``: ``callback(fraction, description)`` (e.g. a ``gradio.Progress``).
    """
    if config is None:
        config = EvalConfig(**options)
    elif options:
        config = replace(config, **options)
    # replaced below by the loaded objects, the method list and the default cache folder
    model, tokenizer, methods, cache_dir = config.model, config.tokenizer, config.methods, config.cache_dir
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = list(dict.fromkeys(methods))
    if config.import_results and "import" not in methods:
        methods.append("import")
    if not methods:
        raise ValueError("no methods to evaluate")
    if config.faithfulness not in ("full", "basic", "none"):
        raise ValueError("faithfulness must be 'full', 'basic' or 'none'")
    spec = dataset_spec(config.dataset, config.label_map)

    t = time.perf_counter()
    ds = load_dataset(config.dataset, config.split, config.data_dir, limit=config.limit, ids=config.ids)
    timings["load_data_s"] = time.perf_counter() - t
    method_objs: list[RationaleMethod] = [
        get_method(m, layer=config.layer, seed=config.seed, ig_steps=config.ig_steps,
                   import_results=config.import_results) for m in methods
    ]
    need_model = any(m.needs_model for m in method_objs) or (config.faithfulness != "none" and any(
        not isinstance(m, ImportMethod) for m in method_objs))
    if model is None and need_model:
        raise ValueError("a model is needed for methods " + ", ".join(m.name for m in method_objs if m.needs_model)
                         + " and for faithfulness")

    engine = None
    class_labels: list[str] = []
    t = time.perf_counter()
    if model is not None:
        model, tokenizer = load_model(model, tokenizer, config.device)
        class_labels = class_label_map(model.config, spec)
    elif tokenizer is not None and isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
    if tokenizer is None:
        raise ValueError("a tokenizer (or a model folder with one) is needed to align documents")
    timings["load_model_s"] = time.perf_counter() - t

    stages = ["forward (unpruned)", "forward (AdapLeR", "saliency", "integrated gradients", "occlusion", "faithfulness"]
    prog = _Progress(stages, progress, config.show_progress)
    if model is not None:
        if cache_dir is None and config.out_dir is not None:
            cache_dir = Path(config.out_dir) / "cache"
        engine = Engine(model, tokenizer, config.max_length, config.batch_size, config.device, cache_dir,
                        config.threshold_scale, config.faithfulness_threshold_scale, progress=prog)
        max_len = engine.max_length
    else:
        max_len = int(config.max_length or 512)

    t = time.perf_counter()
    docs = _prepare(ds, tokenizer)
    timings["align_s"] = time.perf_counter() - t
    align_stats = _alignment_stats(docs, max_len)
    warnings = list(ds.warnings)
    if align_stats["lost_tokens"]:
        warnings.append(f"{align_stats['lost_tokens']} document tokens produce no word piece (lost; score 0)")
    k_hard = max(1, round(ds.mean_rationale_length))

    # ---- predictions on the full documents, and everything else the unpruned model gives: one pass
    full_probs: list[np.ndarray] | None = None
    targets: list[int] | None = None
    unpruned = None
    t = time.perf_counter()
    if engine is not None:
        need = {x for m in method_objs for x in m.unpruned_outputs}
        flags = {"saliency": "saliency" in need, "attention": "attention" in need, "rollout": "rollout" in need}
        if engine.faithfulness_threshold_scale == 0.0:
            # probabilities, saliency for the predicted class and attention scores from one forward (+ backward)
            unpruned = engine.unpruned(docs, **flags)
            full_probs = [u["probs"] for u in unpruned]
            targets = [int(np.argmax(p)) for p in full_probs]
        else:
            if (engine.is_adapler and engine.faithfulness_threshold_scale == engine.threshold_scale
                    and (config.fpr or any(isinstance(m, AdapLeRMethod) for m in method_objs))):
                engine.adapler(docs)  # the same pruned windows: predict() below reuses them
            full_probs = engine.predict([(d.alignment, d.query_ids) for d in docs], stage="faithfulness (full)")
            targets = [int(np.argmax(p)) for p in full_probs]
            if need:
                unpruned = engine.unpruned(docs, targets=targets, **flags)
    timings["forward_full_s"] = time.perf_counter() - t
    context = {"targets": targets, "base_attention": unpruned}  # attention methods read their key from it

    # ---- rationales
    outputs: dict[str, list[MethodOutput]] = {}
    for m in method_objs:
        t = time.perf_counter()
        outputs[m.name] = m.explain(docs, engine, context)
        timings[f"explain_{m.name}_s"] = time.perf_counter() - t
    adapler_out = outputs.get("adapler")
    if config.fpr and adapler_out is None and engine is not None and engine.is_adapler:
        t = time.perf_counter()
        adapler_out = AdapLeRMethod(layer=config.layer).explain(docs, engine, context)
        timings["explain_adapler_for_fpr_s"] = time.perf_counter() - t

    # ---- which documents each method is scored on (an imported file may lack some annotations)
    covered: dict[str, list[int]] = {}
    for name, outs in outputs.items():
        covered[name] = [i for i, o in enumerate(outs) if not o.extra.get("missing")]
        if len(covered[name]) < len(docs):
            warnings.append(f"{name}: no result for {len(docs) - len(covered[name])} annotation(s); scored on the rest")

    # ---- faithfulness inputs
    hard: dict[str, list[np.ndarray]] = {
        name: [_hard_for(o, d, k_hard) for o, d in zip(outs, docs)] for name, outs in outputs.items()
    }
    faith_methods = [m.name for m in method_objs if not isinstance(m, ImportMethod)] if config.faithfulness != "none" else []
    requests: list[tuple] = []  # (method, doc index, kind, threshold, keep indices)
    for name in faith_methods:
        for i in covered[name]:
            d, o, h = docs[i], outputs[name][i], hard[name][i]
            requests.append((name, i, "comp", None, np.flatnonzero(~h)))
            requests.append((name, i, "suff", None, np.flatnonzero(h)))
            if config.faithfulness == "full" and o.scores is not None:
                n_units = int(d.alignment.scored.sum())
                for thr in config.aopc_thresholds:
                    top = M.top_k_mask(o.scores, M.aopc_k(n_units, thr), o.tiebreak, eligible=d.alignment.scored)
                    requests.append((name, i, "comp", thr, np.flatnonzero(~top)))
                    requests.append((name, i, "suff", thr, np.flatnonzero(top)))
    faith_probs: dict[tuple, np.ndarray] = {}
    t = time.perf_counter()
    if requests and engine is not None:
        probs = engine.predict([(docs[i].alignment.subset(keep), docs[i].query_ids) for _, i, _, _, keep in requests])
        for (name, i, kind, thr, _), p in zip(requests, probs):
            faith_probs[(name, i, kind, thr)] = p
    timings["faithfulness_s"] = time.perf_counter() - t

    # ---- ERASER records
    labels = list(spec.eraser.labels)
    records: dict[str, list[dict]] = {}
    for name, outs in outputs.items():
        recs = []
        for i in covered[name]:
            d, o = docs[i], outs[i]
            if o.record is not None:  # imported: keep the user's line as it is
                recs.append(o.record)
                continue
            rat: dict[str, Any] = {"docid": d.docid, "hard_rationale_predictions": _spans(hard[name][i])}
            if o.scores is not None:
                rat["soft_rationale_predictions"] = [float(x) for x in o.scores]
            rec: dict[str, Any] = {"annotation_id": d.annotation_id, "rationales": [rat]}
            if full_probs is not None:
                rec["classification"] = class_labels[targets[i]]
                rec["classification_scores"] = _label_probs(full_probs[i], class_labels, labels)
                if (name, i, "comp", None) in faith_probs:
                    rec["comprehensiveness_classification_scores"] = _label_probs(
                        faith_probs[(name, i, "comp", None)], class_labels, labels)
                    rec["sufficiency_classification_scores"] = _label_probs(
                        faith_probs[(name, i, "suff", None)], class_labels, labels)
                if config.faithfulness == "full" and (name, i, "comp", config.aopc_thresholds[0]) in faith_probs:
                    rec["thresholded_scores"] = [
                        {
                            "threshold": float(thr),
                            "comprehensiveness_classification_scores": _label_probs(
                                faith_probs[(name, i, "comp", thr)], class_labels, labels),
                            "sufficiency_classification_scores": _label_probs(
                                faith_probs[(name, i, "suff", thr)], class_labels, labels),
                        }
                        for thr in config.aopc_thresholds
                    ]
            recs.append(rec)
        records[name] = recs

    # ---- scores
    gold_all = ds.gold_table()
    all_metrics: dict[str, dict] = {}
    fpr_rows: list[dict] = []
    fp_by_doc: dict[str, dict[int, np.ndarray]] = {}  # method -> doc index -> (layers,) false positives
    neg_by_doc: dict[int, int] = {}  # doc index -> non-rationale units (the same for every method)
    example_rows: list[dict] = []
    for name, recs in records.items():
        idx = covered[name]
        gold = {docs[i].annotation_id: gold_all[docs[i].annotation_id] for i in idx}
        m = M.score_records(recs, gold, config.iou_thresholds, labels=labels)
        m["rationale_length_mean"] = float(np.mean([hard[name][i].sum() for i in idx])) if idx else 0.0
        cost = _mean_cost([outputs[name][i] for i in idx])
        if cost is not None:
            m["cost"] = cost
        if name == "adapler":
            pruned = [outputs[name][i].extra["probs_pruned"] for i in idx]
            m["accuracy_pruned"] = float(np.mean(
                [class_labels[int(np.argmax(p))] == docs[i].label for p, i in zip(pruned, idx)])) if idx else 0.0
        if config.fpr and adapler_out is not None:
            sel, gold_masks, units = [], [], []
            for i in idx:
                d, o = docs[i], outputs[name][i]
                am = adapler_out[i].layer_masks
                if name == "adapler":
                    s = o.layer_masks
                elif o.scores is not None:
                    ks = (am & d.alignment.scored).sum(axis=1)
                    s = np.stack([M.top_k_mask(o.scores, int(k), o.tiebreak, eligible=d.alignment.scored) for k in ks])
                else:
                    s = None
                if s is None:
                    break
                sel.append(s)
                gold_masks.append(d.gold)
                units.append(d.alignment.scored)
            else:
                rows = M.false_positive_rate(gold_masks, sel, units)
                fps, negs, _ = M.fpr_counts(gold_masks, sel, units)
                fp_by_doc[name] = dict(zip(idx, fps))
                neg_by_doc.update(zip(idx, negs.tolist()))
                m["fpr"] = rows
                fpr_rows += [{"method": name, **r} for r in rows]
        all_metrics[name] = m
        for i, rec in zip(idx, recs):
            d = docs[i]
            h = hard[name][i]
            tok = M.token_prf({0: M.mask_to_spans(d.gold)}, {0: M.mask_to_spans(h)})
            row = {"method": name, "annotation_id": d.annotation_id, "docid": d.docid, "gold_label": d.label,
                   "n_tokens": d.num_tokens, "n_gold": int(d.gold.sum()), "n_selected": int(h.sum()),
                   "token_f1": tok["macro"]["f1"] if tok["n_instances"] else float("nan")}
            if "classification" in rec:
                c = rec["classification"]
                row["predicted"] = c
                row["correct"] = c == d.label
                row["p_predicted"] = rec.get("classification_scores", {}).get(c)
                full = rec.get("classification_scores", {}).get(c)
                for kind in ("comprehensiveness", "sufficiency"):
                    sc = rec.get(f"{kind}_classification_scores")
                    row[kind] = full - sc[c] if sc and full is not None else float("nan")
            example_rows.append(row)

    summary = pd.DataFrame([_flat_summary(n, m, config.iou_thresholds) for n, m in all_metrics.items()])
    fpr_df = pd.DataFrame(fpr_rows, columns=["method", "layer", "macro", "micro", "n_examples", "n_skipped",
                                             "false_positives", "negatives", "mean_selected"])
    fpr_difference = _fpr_difference(fp_by_doc, neg_by_doc, config.seed)
    examples = pd.DataFrame(example_rows)
    timings["total_s"] = time.perf_counter() - t_start
    if engine is not None:
        timings["windows_run"] = engine.forward_windows
        timings["tokens_run"] = int(sum(s["tokens"] for s in engine.stats.values()))
        timings["padded_tokens_run"] = int(sum(s["padded_tokens"] for s in engine.stats.values()))
        timings["faithfulness_inputs"] = len(requests)
    prog.close()

    settings = {
        "dataset": config.dataset,
        "split": config.split,
        "data_path": str(ds.path),
        "n_annotations": len(docs),
        "n_annotations_in_split": ds.total_annotations,
        "limit": config.limit,
        "model": str(model.config.name_or_path) if model is not None and getattr(model.config, "name_or_path", "") else (
            type(model).__name__ if model is not None else None),
        "model_fingerprint": engine.fingerprint if engine is not None else None,
        "is_adapler": bool(engine.is_adapler) if engine is not None else False,
        "num_layers": engine.num_layers if engine is not None else None,
        "class_labels": class_labels,
        "methods": methods,
        "import_results": str(config.import_results) if config.import_results else None,
        "max_length": max_len,
        "batch_size": config.batch_size,
        "layer": config.layer if config.layer is not None else "last",
        "hard_rationale_k": k_hard,
        "mean_human_rationale_length": ds.mean_rationale_length,
        "faithfulness": config.faithfulness,
        "aopc_thresholds": list(config.aopc_thresholds),
        "iou_thresholds": list(config.iou_thresholds),
        "threshold_scale": config.threshold_scale,
        "faithfulness_threshold_scale": config.faithfulness_threshold_scale,
        "seed": config.seed,
        "ig_steps": config.ig_steps,
    }
    result = EvaluationResult(
        dataset=config.dataset, split=config.split, config=settings, metrics=all_metrics, summary=summary, fpr=fpr_df,
        fpr_difference=fpr_difference,
        examples=examples, records=records, outputs=outputs, docs=docs, alignment=align_stats,
        timings=timings, warnings=warnings,
        work={k: dict(v) for k, v in engine.stats.items()} if engine is not None else {},
    )
    if config.out_dir is not None:
        write_report(result, config.out_dir)
    return result
