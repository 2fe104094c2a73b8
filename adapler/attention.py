"""Attention-based token scores and the attention top-k pruning baseline (PoWER-BERT/LTP style).

Scores read the [CLS] row of attention probabilities of the unpruned model
(``model(..., mode="masked", threshold_scale=0, output_attentions=True)``).
"""

from __future__ import annotations

import math

import torch

from .flops import corrected_bert_flops, head_flops, layer_flops


def cls_attention(attentions, attention_mask) -> torch.Tensor:
    """(B, L): last layer's attention from [CLS] to each token, mean over heads; padding 0."""
    last = attentions[-1].float().mean(1)  # (B, L, L)
    return last[:, 0, :] * attention_mask.float()


def attention_rollout(attentions, attention_mask) -> torch.Tensor:
    """(B, L): attention rollout (Abnar & Zuidema 2020), [CLS] row; padding 0.

    Per layer: mean over heads, add the identity (residual), renormalise rows; multiply layers.
    """
    mask = attention_mask.float()
    rollout = None
    for layer in attentions:
        a = layer.float().mean(1)  # (B, L, L)
        a = a + torch.eye(a.shape[-1], device=a.device)
        a = a / a.sum(-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    return rollout[:, 0, :] * mask


def received_attention(attentions, keep) -> torch.Tensor:
    """(B, L): mean attention a token receives from live queries, over heads (LTP's importance)."""
    a = attentions.float().mean(1)  # (B, L, L)
    q = keep.float().unsqueeze(-1)
    return (a * q).sum(1) / q.sum(1).clamp_min(1.0)


# ---------------------------------------------------------------- attention top-k pruning baseline

def _topk_lengths(n: int, fractions) -> list[int]:
    """Tokens processed by each layer: ceil(fraction * n), at least 1 ([CLS]), never growing."""
    out, prev = [], n
    for f in fractions:
        prev = min(prev, max(1, math.ceil(f * n)))
        out.append(prev)
    return out


def _topk_flops(n: int, fractions, config) -> float:
    h, f, a = config.hidden_size, config.intermediate_size, config.num_attention_heads
    lens = _topk_lengths(n, fractions)
    return head_flops(h, config.num_labels, n) + sum(layer_flops(k, h, f, a) for k in lens)


@torch.no_grad()
def attention_topk_logits(model, batch: dict, fractions) -> tuple[torch.Tensor, torch.Tensor]:
    """Classify with attention top-k pruning: before layer l >= 1 keep the ceil(fraction_l * n)
    tokens that received the most attention in layer l-1 ([CLS] always kept). Uses the model's BERT
    weights only (no CPs). Returns logits (B, C) and layer lengths (B, layers)."""
    bert = model.bert
    ids, am = batch["input_ids"], batch["attention_mask"]
    B, L = ids.shape
    n_real = am.sum(-1)
    alive = am.bool().clone()
    lengths = torch.zeros(B, len(fractions))
    hidden = bert.embeddings(input_ids=ids, token_type_ids=batch.get("token_type_ids"))
    store: list = []
    with model.eager_attention(True):
        for l in range(len(bert.encoder.layer)):
            if l > 0:
                score = received_attention(store[-1], alive).masked_fill(~alive, -1.0)
                score[:, 0] = float("inf")
                for b in range(B):
                    k = _topk_lengths(int(n_real[b]), fractions)[l]
                    keep = torch.zeros(L, dtype=torch.bool)
                    keep[score[b].topk(min(k, int(alive[b].sum()))).indices] = True
                    alive[b] &= keep
            lengths[:, l] = alive.sum(-1)
            bias = torch.where(alive, 0.0, -10000.0)
            hidden = model.run_layer(l, hidden, bias, store)
    return model.classify(hidden), lengths


def attention_topk_at_flops(model, features, adapler_report: dict, batch_size: int = 32) -> dict:
    """Attention top-k pruning tuned to AdapLeR's corrected FLOPs speedup on the same features.

    Per-layer keep fractions follow AdapLeR's mean tokens per layer (relative to the mean input),
    scaled by one factor found by bisection so the corrected FLOPs speedup matches AdapLeR's.
    """
    from . import data as D
    from .training import example_accuracy

    cfg = model.config
    target = adapler_report["speedup_corrected"]
    lengths = [len(f["input_ids"]) for f in features]
    shape = [x / adapler_report["mean_input_tokens"] for x in adapler_report["mean_tokens_per_layer"]]
    base = sum(corrected_bert_flops(n, cfg) for n in lengths)

    def fractions(s):  # layer 0 sees no attention yet: it keeps everything
        return [1.0] + [min(1.0, s * x) for x in shape[1:]]

    lo, hi = 0.0, 1.0 / max(min(shape[1:] or [1.0]), 1e-6)
    for _ in range(40):
        mid = (lo + hi) / 2
        sp = base / sum(_topk_flops(n, fractions(mid), cfg) for n in lengths)
        lo, hi = (mid, hi) if sp > target else (lo, mid)
    fr = fractions(lo)
    achieved = base / sum(_topk_flops(n, fr, cfg) for n in lengths)
    logits = torch.zeros(len(features), cfg.num_labels)
    model.eval()
    for idx in D.length_grouped_batches(lengths, batch_size, seed=None):
        batch = D.collate([features[i] for i in idx])
        logits[idx] = attention_topk_logits(model, batch, fr)[0].float()
    report = example_accuracy(features, logits)
    report.update({"speedup_corrected": round(achieved, 4), "keep_fractions": [round(x, 4) for x in fr],
                   "note": "attention top-k (received attention, PoWER-BERT/LTP style), same weights, "
                           "no CPs; fractions tuned to AdapLeR's corrected FLOPs"})
    return report
