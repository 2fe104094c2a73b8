"""Accuracy, FLOPs speedup, tokens kept per layer and measured wall-clock of ``drop`` vs the baseline."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from . import data as D
from .attention import attention_topk_at_flops
from .flops import flops_per_example, speedup
from .inference import example_accuracy, feature_batches, load_classifier, load_features, predict_logits, run_hard, time_call
from .modeling import AdapLeRForSequenceClassification


def plain_bert_copy(model) -> BertForSequenceClassification:
    """The same BERT weights without CPs: the unpruned baseline for wall-clock comparisons."""
    cfg = BertConfig(**{k: v for k, v in model.config.to_dict().items()
                        if k not in ("model_type", "architectures")})
    bert = BertForSequenceClassification(cfg).eval()
    missing, _ = bert.load_state_dict(model.state_dict(), strict=False)
    assert not missing, f"baseline copy is missing weights: {missing}"
    return bert


@torch.no_grad()
def wall_clock(model, baseline, features, batch_size: int, max_examples: int = 256, repeats: int = 3,
               threshold_scale: float = 1.0) -> dict:
    """Measured seconds of ``drop`` vs the unpruned baseline on the same batches, side by side."""
    feats = features[:max_examples]
    batches = [{k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
               for _, b in feature_batches(feats, batch_size)]

    def timed(fn) -> float:  # median over repeats of one run over every batch, after a warm-up batch
        return time_call(lambda: [fn(b) for b in batches], repeats, warmup=lambda: fn(batches[0]))[1]

    t_drop = timed(lambda b: model(**b, mode="drop", threshold_scale=threshold_scale))
    t_base = timed(lambda b: baseline(**b))
    return {"batch_size": batch_size, "examples": len(feats), "adapler_ms_per_example": 1000 * t_drop / len(feats),
            "baseline_ms_per_example": 1000 * t_base / len(feats), "speedup": t_base / t_drop}


def evaluate_features(model, features, timing: bool = True, threshold_scale: float = 1.0,
                      baseline=None, batch_size: int = 32, timing_examples: int = 256) -> dict:
    """Everything ``python -m adapler evaluate`` reports, for already tokenised features."""
    logits, layer_lengths, cp_scores = run_hard(model, features, batch_size, threshold_scale=threshold_scale)
    report = example_accuracy(features, logits)
    preds = logits.argmax(-1).tolist()
    eta = model.effective_eta(threshold_scale).tolist()
    fl = flops_per_example([len(f["input_ids"]) for f in features], layer_lengths.tolist(), model.config,
                           cp_scores=cp_scores, eta=eta, predictions=preds)
    report.update({
        "speedup_corrected": round(speedup(fl["corrected_base"], fl["corrected_adapler"]), 4),
        "speedup_parity": round(speedup(fl["parity_base"], fl["parity_adapler"]), 4),
        "mean_input_tokens": round(statistics.fmean(len(f["input_ids"]) for f in features), 2),
        "mean_tokens_per_layer": [round(x, 2) for x in layer_lengths.mean(0).tolist()],
        "features": len(features),
    })
    if timing:
        base = baseline if baseline is not None else plain_bert_copy(model)
        report["wall_clock"] = [wall_clock(model, base, features, bs, timing_examples, threshold_scale=threshold_scale)
                                for bs in (1, 32)]
    return report


def evaluate_model_dir(model_dir, task: str, split: str, data_dir=None, limit: int | None = None) -> dict:
    """Accuracy and FLOPs speedup of a saved AdapLeR folder on the first ``limit`` examples of
    ``split`` (no timing): the check a shipped model records in ``slice_check.json``."""
    model = AdapLeRForSequenceClassification.from_pretrained(model_dir).eval()
    features = model_features(model, task, split, AutoTokenizer.from_pretrained(model_dir), data_dir, limit)
    return evaluate_features(model, features, timing=False)


def model_features(model, source: D.DatasetSpec | str, split: str, tokenizer, data_dir=None, limit=None) -> list[dict]:
    """Features of a split, labels numbered as the model's classes (an error when they differ)."""
    source = D.task_source(source, data_dir) if isinstance(source, str) else source
    return load_features(source, split, tokenizer, limit=limit, labels=D.model_labels(model.config, source))


def threshold_sweep(model, features, scales) -> list[dict]:
    """Accuracy/speedup Pareto points of one model at several threshold scales (the app's slider)."""
    points = []
    for scale in scales:
        r = evaluate_features(model, features, timing=False, threshold_scale=scale)
        points.append({"threshold_scale": scale, "accuracy": r["accuracy"], "macro_f1": r["macro_f1"],
                       "speedup_corrected": r["speedup_corrected"], "speedup_parity": r["speedup_parity"]})
    return points


def evaluate_command(model_path, source: D.DatasetSpec | str, split, data_dir=None, limit=None, baseline_path=None,
                     threshold_scale=1.0, timing_examples=256, attention_baseline=True, sweep=()) -> dict:
    """``python -m adapler evaluate``: one JSON report for a model on one split of a dataset (or task preset)."""
    source = D.task_source(source, data_dir) if isinstance(source, str) else source
    model = AdapLeRForSequenceClassification.from_pretrained(model_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    features = model_features(model, source, split, tokenizer, limit=limit)
    baseline = load_classifier(baseline_path).eval() if baseline_path else None
    report = {"model": str(model_path), "task": source.title, "split": split}
    report["adapler"] = evaluate_features(model, features, timing=timing_examples > 0,
                                          threshold_scale=threshold_scale, baseline=baseline,
                                          timing_examples=timing_examples)
    base = baseline if baseline is not None else plain_bert_copy(model)
    report["baseline"] = example_accuracy(features, predict_logits(base, features))
    report["baseline"]["source"] = baseline_path or "same weights, no pruning"
    if attention_baseline:
        report["attention_topk"] = attention_topk_at_flops(model, features, report["adapler"])
    if sweep:
        report["threshold_sweep"] = threshold_sweep(model, features, sweep)
    return report


def calibrate_thresholds(model, features, baseline_accuracy: float, max_drop: float = 0.01,
                         scales=(0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0), min_speedup: float | None = None) -> dict:
    """Pick the threshold scale with the highest FLOPs speedup whose accuracy on ``features`` is
    >= ``baseline_accuracy - max_drop`` (model selection of docs/method.md §4.5 extended to the scale),
    and bake it into ``model.eta``. When no scale qualifies: with ``min_speedup``, the most accurate
    scale reaching that corrected speedup; else scale 1 (the learned thresholds)."""
    points = threshold_sweep(model, features, scales)
    ok = [p for p in points if p["accuracy"] >= baseline_accuracy - max_drop]
    fast = [p for p in points if min_speedup and p["speedup_corrected"] >= min_speedup]
    if ok:
        chosen = max(ok, key=lambda p: p["speedup_corrected"])
    elif fast:
        chosen = max(fast, key=lambda p: (p["accuracy"], p["speedup_corrected"]))
    else:
        chosen = min(points, key=lambda p: abs(p["threshold_scale"] - 1.0))
    with torch.no_grad():
        model.eta.mul_(chosen["threshold_scale"])
    return {"sweep": points, "chosen": chosen, "constraint_met": bool(ok),
            "baseline_accuracy": baseline_accuracy, "max_drop": max_drop, "min_speedup": min_speedup}


def calibrate_command(args, source: D.DatasetSpec) -> dict:
    """``python -m adapler calibrate``: writes the calibrated model and ``calibration.json``."""
    model = AdapLeRForSequenceClassification.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    features = model_features(model, source, args.split, tokenizer, limit=args.limit)
    baseline = load_classifier(args.baseline).eval()
    base_acc = example_accuracy(features, predict_logits(baseline, features))["accuracy"]
    result = calibrate_thresholds(model, features, base_acc, args.max_drop,
                                  [float(x) for x in args.scales.split(",")], args.min_speedup)
    result.update({"split": args.split, "source_model": str(args.model)})
    out = Path(args.output_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "calibration.json").write_text(json.dumps(result, indent=2))
    return result
