"""Attention-based token scores and the attention top-k pruning baseline (PoWER-BERT/LTP style).

The one attention-score module. Scores read the [CLS] row of attention probabilities of the unpruned
model, either from the probabilities (``model(..., mode="masked", threshold_scale=0,
output_attentions=True)``: :func:`cls_attention`, :func:`attention_rollout`) or, without the eager
attention kernel, from the query/key projections captured in the forward pass
(:func:`capture_qk`, :func:`cls_attention_from_qk`, :func:`rollout_from_qk`; the ERASER engine).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from types import SimpleNamespace

import torch

from .flops import corrected_bert_flops, topk_flops, topk_lengths
from .inference import example_accuracy, forward_batches


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


def attention_layout(model) -> tuple[int, int, float]:
    """``(layers, heads, scaling)`` of a BERT-family model's self-attention."""
    layers = model.base_model.encoder.layer
    sa = layers[-1].attention.self
    return len(layers), int(sa.num_attention_heads), float(getattr(sa, "scaling", sa.attention_head_size ** -0.5))


@contextlib.contextmanager
def capture_qk(model, layers: Sequence[int]):
    """While active, the query/key projections of the given encoder layers are kept (detached) in
    ``.q[l]`` / ``.k[l]`` of the yielded object."""
    cap = SimpleNamespace(q={}, k={})
    handles = []

    def store(target, l):
        def hook(module, inputs, output):
            target[l] = output.detach()
        return hook

    for l in layers:
        sa = model.base_model.encoder.layer[l].attention.self
        handles.append(sa.query.register_forward_hook(store(cap.q, l)))
        handles.append(sa.key.register_forward_hook(store(cap.k, l)))
    try:
        yield cap
    finally:
        for h in handles:
            h.remove()


def cls_attention_from_qk(q, k, key_mask, num_heads: int, scaling: float):
    """[CLS] row of the attention probabilities, mean over heads, from one layer's projections.

    ``q``, ``k``: (B, L, heads * d) outputs of the layer's query/key linears; ``key_mask``: (B, L)
    bool, True on real tokens. Equals :func:`cls_attention` on the eager kernel's probabilities
    (``softmax(q k^T * scaling + mask)``; a masked key gets weight exactly 0 either way) without
    computing the other L - 1 rows. Returns (B, L), 0 on padding.
    """
    B, L, _ = k.shape
    q0 = q[:, 0].float().reshape(B, num_heads, -1)
    kk = k.float().reshape(B, L, num_heads, -1)
    s = torch.einsum("bhd,blhd->bhl", q0, kk) * scaling
    s = s.masked_fill(~key_mask[:, None, :], float("-inf"))
    return s.softmax(-1).mean(1) * key_mask


def rollout_from_qk(qs, ks, key_mask, num_heads: int, scaling: float):
    """Attention rollout, [CLS] row, from every layer's query/key projections (first layer first).

    The same quantity as :func:`attention_rollout` (per layer: mean over heads, add the identity,
    renormalise rows; product ``A_L ... A_1``), computed as the row vector ``e_0^T A_L ... A_1`` (a
    vector-matrix product per layer instead of an L x L x L one), one layer's probabilities in
    memory at a time. Returns (B, L), 0 on padding.
    """
    v = None
    for q, k in zip(reversed(list(qs)), reversed(list(ks))):
        B, L, _ = q.shape
        qh = q.float().reshape(B, L, num_heads, -1).transpose(1, 2)
        kh = k.float().reshape(B, L, num_heads, -1).transpose(1, 2)
        s = (qh @ kh.transpose(-1, -2)) * scaling
        s = s.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        a = s.softmax(-1).mean(1)  # (B, L, L)
        del s
        a = a + torch.eye(L, device=a.device)
        a = a / a.sum(-1, keepdim=True)
        v = a[:, 0, :] if v is None else torch.bmm(v[:, None, :], a)[:, 0, :]
    return v * key_mask


def received_attention(attentions, keep) -> torch.Tensor:
    """(B, L): mean attention a token receives from live queries, over heads (LTP's importance)."""
    a = attentions.float().mean(1)  # (B, L, L)
    q = keep.float().unsqueeze(-1)
    return (a * q).sum(1) / q.sum(1).clamp_min(1.0)


# ---------------------------------------------------------------- attention top-k pruning baseline

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
                    k = topk_lengths(int(n_real[b]), fractions)[l]
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
        sp = base / sum(topk_flops(n, fractions(mid), cfg) for n in lengths)
        lo, hi = (mid, hi) if sp > target else (lo, mid)
    fr = fractions(lo)
    achieved = base / sum(topk_flops(n, fr, cfg) for n in lengths)
    logits = torch.zeros(len(features), cfg.num_labels)
    for idx, (lg, _) in forward_batches(model, features, batch_size,
                                        forward=lambda batch: attention_topk_logits(model, batch, fr)):
        logits[idx] = lg.float().cpu()
    report = example_accuracy(features, logits)
    report.update({"speedup_corrected": round(achieved, 4), "keep_fractions": [round(x, 4) for x in fr],
                   "note": "attention top-k (received attention, PoWER-BERT/LTP style), same weights, "
                           "no CPs; fractions tuned to AdapLeR's corrected FLOPs"})
    return report
