"""Inference over tokenised features: the one batched forward loop, logits, per-example accuracy
and macro-F1, feature loading, and the one wall-clock timer.

Training (validation each epoch), evaluation, the attention top-k baseline and the saliency files
all run the model through :func:`forward_batches`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, BertForSequenceClassification
from transformers.utils import logging as hf_logging

from . import data as D
from .metrics import macro_f1

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def feature_batches(features: list[dict], batch_size: int = 64, batches: list[list[int]] | None = None,
                    pad_id: int = 0) -> Iterator[tuple[list[int], dict]]:
    """``(indices, batch)`` per batch, collated (:func:`adapler.data.collate`, per-batch padding).

    The batches are length-grouped (``batch_size`` features, fixed order) unless ``batches`` gives
    the plan (e.g. the ERASER engine's token-budget packing). A batch holds ``labels`` (and
    ``saliency``, ``token_type_ids``) when the features do.
    """
    if batches is None:
        batches = D.length_grouped_batches([len(f["input_ids"]) for f in features], batch_size, seed=None)
    for idx in batches:
        yield idx, D.collate([features[i] for i in idx], pad_id)


def forward_batches(model, features: list[dict], batch_size: int = 64, forward: Callable | None = None,
                    bf16: bool = False, **model_kwargs) -> Iterator[tuple[list[int], object]]:
    """``(indices, output)`` per length-grouped batch, in eval mode.

    ``output`` is ``model(input_ids=, attention_mask=, token_type_ids=, **model_kwargs)`` under no-grad
    (bf16 autocast when ``bf16``), or ``forward(batch)`` when given (the whole batch, labels included;
    e.g. a backward pass for saliency).
    """
    model.eval()
    device = next(model.parameters()).device
    for idx, batch in feature_batches(features, batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        if forward is not None:
            yield idx, forward(batch)
            continue
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            yield idx, model(**{k: batch[k] for k in MODEL_INPUTS}, **model_kwargs)


def predict_logits(model, features, batch_size=64, bf16=False, **model_kwargs) -> torch.Tensor:
    """Logits per feature (in order), length-grouped for speed."""
    out = torch.zeros(len(features), model.config.num_labels)
    for idx, res in forward_batches(model, features, batch_size, bf16=bf16, **model_kwargs):
        out[idx] = res.logits.float().cpu()
    return out


def run_hard(model, features, batch_size=32, mode="masked", threshold_scale=1.0, thresholds=None):
    """Hard-decision AdapLeR inference; per feature: logits, layer lengths, CP scores (trimmed)."""
    logits = torch.zeros(len(features), model.config.num_labels)
    layer_lengths = torch.zeros(len(features), model.config.num_hidden_layers)
    cp_scores: list = [None] * len(features)
    for idx, out in forward_batches(model, features, batch_size, mode=mode, threshold_scale=threshold_scale,
                                    thresholds=thresholds, output_token_masks=True):
        logits[idx] = out.logits.float().cpu()
        layer_lengths[idx] = out.layer_lengths.float().cpu()
        for row, i in enumerate(idx):
            cp_scores[i] = out.cp_scores[row, :, : len(features[i]["input_ids"])].cpu()
    return logits, layer_lengths, cp_scores


def example_accuracy(features, logits: torch.Tensor) -> dict:
    """Accuracy and macro-F1 per example: windows of one document average their probabilities."""
    probs: dict[str, list] = {}
    gold: dict[str, int] = {}
    for f, row in zip(features, logits.softmax(-1)):
        probs.setdefault(f["id"], []).append(row)
        gold[f["id"]] = f["label"]
    ids = list(probs)
    pred = [int(torch.stack(probs[i]).mean(0).argmax()) for i in ids]
    true = [gold[i] for i in ids]
    acc = sum(p == t for p, t in zip(pred, true)) / max(len(ids), 1)
    return {"accuracy": round(acc, 5), "macro_f1": round(float(macro_f1(true, pred)), 5), "examples": len(ids)}


def load_features(source: D.DatasetSpec | str, split: str, tokenizer, data_dir=None, limit=None,
                  labels=None) -> list[dict]:
    """Tokenised features of one split of a dataset or task preset (:func:`adapler.data.load_examples`),
    at the dataset's max length and long-input policy (windows, see ``adapler.windows``)."""
    if isinstance(source, str):
        source = D.task_source(source, data_dir)
    examples = D.load_examples(source, split, limit=limit, labels=labels)
    return D.encode(examples, tokenizer, source.max_length, windows=source.windows)


def time_call(fn: Callable, repeats: int = 1, warmup: Callable | None = None):
    """``(last output, median seconds)`` of ``repeats`` calls of ``fn`` (after one ``warmup()`` call
    when given): the one wall-clock timer of evaluation and the explorer."""
    if warmup is not None:
        warmup()
    times, out = [], None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def load_classifier(path: str, **kwargs):
    """A plain BERT-family sequence classifier from ``path``. An AdapLeR folder gives its encoder and
    classifier without the CPs: to fine-tune further, or as an unpruned baseline (a run continued from an
    AdapLeR model is compared with that model at full length, not with its pruned self)."""
    if AutoConfig.from_pretrained(path).model_type == "adapler":
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the CPs and thresholds are left out on purpose: no load report
        try:
            return BertForSequenceClassification.from_pretrained(path, dtype=torch.float32, **kwargs)
        finally:
            hf_logging.set_verbosity(level)
    return AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
