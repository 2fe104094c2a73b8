"""Analytic FLOPs per example from per-layer lengths, and speedup over a dataset.

Two counts:

* ``parity``: the reference implementation's formula (docs/method.md §7), constants fitted with the TF
  profiler on bert-base-uncased (per layer ``3156 n^2 + 14233554 n`` for AdapLeR layers incl. CP,
  ``37872/12 n^2 + 170216500/12 n`` for plain BERT layers). Its quirks are kept on purpose and
  labelled: lengths read from CP scores (``> 1e-6`` = alive), the last layer's length taken as
  ``#(p > eta_last)``, embedding cost on the post-CP_0 length, ``C = max(prediction) + 1``. The
  constants scale with the number of layers only, not hidden size: use it for comparison with the
  paper, not as a count for other sizes.
* ``corrected``: a count from the configuration (any BERT size): 2 FLOPs per multiply-add of every
  matmul, plus softmax, LayerNorm and GELU; embeddings on the full input; each CP on the length it
  scores (before its removal); every layer on the length it really processes.

Speedup over a dataset = sum of baseline FLOPs / sum of AdapLeR FLOPs (ratio of totals).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# ---------------------------------------------------------------- reference parity formula

PARITY_LAYER_QUAD = 3156
PARITY_LAYER_LIN_ADAPLER = 14233554  # BERT layer + CP
PARITY_BERT_QUAD_12 = 37872
PARITY_BERT_LIN_12 = 170216500
PARITY_CONST = 1183490
PARITY_CLASS = 1537
PARITY_EMB = 6152


def parity_bert_flops(n: int, num_classes: int, num_layers: int = 12) -> float:
    """Reference ``FLOPs_BERT(n, C)``; layer terms scaled by ``num_layers / 12``."""
    scale = num_layers / 12
    return (PARITY_BERT_QUAD_12 * scale * n * n + PARITY_BERT_LIN_12 * scale * n
            + PARITY_CONST - PARITY_CLASS + PARITY_CLASS * num_classes)


def parity_adapler_flops(lengths: Sequence[int], num_classes: int) -> float:
    """Reference ``FLOPs_AdapLeR(n, C)`` with ``lengths = [n_0 .. n_{L-1}]`` (quirky, see module doc)."""
    layers = sum(PARITY_LAYER_QUAD * n * n + PARITY_LAYER_LIN_ADAPLER * n for n in lengths)
    return PARITY_CONST + 47 + PARITY_CLASS * (num_classes - 1) + PARITY_EMB * lengths[0] + layers


def parity_lengths(cp_scores_row, eta_last: float) -> tuple[int, list[int]]:
    """The reference's lengths for one example from its CP scores (layers, L).

    Returns ``(n_bert, [c_1, ..., c_{L-1}, last])`` with ``c_l = #(p_l > 1e-6)`` (tokens alive
    before CP_l) and ``last = #(p_{L-1} > eta_{L-1})`` (quirk: compares with eta, not eta / n).
    """
    alive = [int((row > 1e-6).sum()) for row in cp_scores_row]
    last = int((cp_scores_row[-1] > eta_last).sum())
    return alive[0], alive[1:] + [last]


# ---------------------------------------------------------------- corrected analytic count

def layer_flops(n: float, hidden: int, ffn: int, heads: int) -> float:
    """One BERT encoder layer on ``n`` tokens."""
    proj = 2 * n * hidden * hidden * 4  # Q, K, V, output projections
    scores = 2 * n * n * hidden * 2  # QK^T and attention x V
    softmax = 5 * heads * n * n
    ffn_cost = 2 * n * hidden * ffn * 2 + 8 * n * ffn  # two matmuls + GELU
    norms = 2 * 8 * n * hidden + 2 * n * hidden  # two LayerNorms + residual adds
    return proj + scores + softmax + ffn_cost + norms


def cp_flops(n: float, hidden: int, cp_hidden: int) -> float:
    """One Contribution Predictor scoring ``n`` tokens, plus its softmax and threshold test."""
    return 2 * n * hidden * cp_hidden + 8 * n * cp_hidden + 2 * n * cp_hidden + 8 * n


def head_flops(hidden: int, num_classes: int, n_input: int) -> float:
    """Embedding sums + LayerNorm on the full input, pooler and classifier."""
    return 10 * n_input * hidden + 2 * hidden * hidden + 8 * hidden + 2 * hidden * num_classes


def corrected_bert_flops(n: int, config, num_classes: int | None = None) -> float:
    """Plain BERT (no CPs) on ``n`` tokens."""
    c = num_classes or config.num_labels
    per_layer = layer_flops(n, config.hidden_size, config.intermediate_size, config.num_attention_heads)
    return head_flops(config.hidden_size, c, n) + config.num_hidden_layers * per_layer


def corrected_adapler_flops(n_input: int, lengths: Sequence[float], config, num_classes=None) -> float:
    """AdapLeR: ``lengths[l]`` = tokens processed by layer l; CP_l runs on the length before it."""
    c = num_classes or config.num_labels
    h, f, a = config.hidden_size, config.intermediate_size, config.num_attention_heads
    cp_h = getattr(config, "cp_hidden_size", 32)
    before = [n_input, *lengths[:-1]]
    total = head_flops(h, c, n_input)
    for n_before, n in zip(before, lengths):
        total += cp_flops(n_before, h, cp_h) + layer_flops(n, h, f, a)
    return total


def topk_lengths(n: int, fractions) -> list[int]:
    """Tokens processed by each layer under top-k pruning: ceil(fraction * n), at least 1 ([CLS]),
    never growing (the attention top-k baseline, ``adapler.attention``)."""
    out, prev = [], n
    for f in fractions:
        prev = min(prev, max(1, math.ceil(f * n)))
        out.append(prev)
    return out


def topk_flops(n: int, fractions, config) -> float:
    """Corrected FLOPs of one input of ``n`` tokens under top-k pruning with per-layer ``fractions``."""
    h, f, a = config.hidden_size, config.intermediate_size, config.num_attention_heads
    return head_flops(h, config.num_labels, n) + sum(layer_flops(k, h, f, a) for k in topk_lengths(n, fractions))


# ---------------------------------------------------------------- per example and per dataset

def flops_per_example(input_lengths, layer_lengths, config, cp_scores=None, eta=None,
                      predictions=None) -> dict[str, list[float]]:
    """FLOPs of each example for the unpruned and the pruned model, both counts.

    Args:
        input_lengths: real (unpadded) length of each example.
        layer_lengths: per example, tokens processed by each layer (``AdapLeROutput.layer_lengths``).
        cp_scores: per example (layers, L) CP scores, for the parity lengths; parity is skipped if None.
        eta: learned eta (for the parity last-layer quirk).
        predictions: predicted classes, for the parity ``C = max(prediction) + 1``.
    Returns lists ``corrected_base``, ``corrected_adapler`` and, with cp_scores,
    ``parity_base``, ``parity_adapler``.
    """
    out = {"corrected_base": [], "corrected_adapler": []}
    for n, lens in zip(input_lengths, layer_lengths):
        lens = [float(x) for x in lens]
        out["corrected_base"].append(corrected_bert_flops(int(n), config))
        out["corrected_adapler"].append(corrected_adapler_flops(int(n), lens, config))
    if cp_scores is not None:
        c = int(max(predictions)) + 1 if predictions is not None else config.num_labels
        out["parity_base"], out["parity_adapler"] = [], []
        for row in cp_scores:
            n_bert, lens = parity_lengths(row, float(eta[-1]))
            out["parity_base"].append(parity_bert_flops(n_bert, c, len(lens)))
            out["parity_adapler"].append(parity_adapler_flops(lens, c))
    return out


def speedup(base: Sequence[float], pruned: Sequence[float]) -> float:
    """Ratio of totals over a dataset (not a mean of per-example ratios)."""
    return float(sum(base)) / float(sum(pruned))
