"""KL loss, FLOPs formulas, saliency and attention scores (hand-checked values, tiny models)."""

import math

import pytest
import torch

from adapler.attention import attention_rollout, cls_attention
from adapler.flops import (
    corrected_adapler_flops,
    corrected_bert_flops,
    flops_per_example,
    parity_adapler_flops,
    parity_bert_flops,
    parity_lengths,
    speedup,
)
from adapler.losses import cp_kl_loss, sharpness_for_epoch, sharpness_for_step
from adapler.metrics import macro_f1
from adapler.saliency import gradient_x_input
from conftest import tiny_config


def test_kl_zero_when_cp_equals_renormalised_saliency():
    sal = torch.tensor([[0.5, 1.0, 2.0, 0.5, 0.0], [1.0, 1.0, 1.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    target = sal * mask / (sal * mask).sum(-1, keepdim=True)
    cp = target[:, None, :].repeat(1, 3, 1)  # every layer predicts the target exactly
    # tiny eta: nothing is removed, so every layer's target is the same distribution
    loss = cp_kl_loss(cp, sal, mask, torch.full((3,), 1e-4), sharpness=1e20)
    assert loss.abs().item() < 1e-6
    worse = cp_kl_loss(torch.softmax(torch.randn(2, 3, 5), -1) * mask[:, None], sal, mask,
                       torch.full((3,), 1e-4), sharpness=1e20)
    assert worse.item() > 0.01


def test_kl_layer_weights():
    # one layer wrong (uniform instead of target), the others exact: loss = weight * KL
    sal = torch.tensor([[1.0, 3.0]])
    mask = torch.ones(1, 2)
    t = torch.tensor([0.25, 0.75])
    kl = float((t * (t / 0.5).log()).sum())
    for wrong, weight in ((0, 3), (2, 1)):
        cp = t.repeat(1, 3, 1)
        cp[0, wrong] = torch.tensor([0.5, 0.5])
        loss = cp_kl_loss(cp, sal, mask, torch.full((3,), 1e-4), sharpness=1e20)
        assert loss.item() == pytest.approx(weight * kl, rel=1e-4)


def test_sharpness_schedule():
    assert [sharpness_for_epoch(k, 5) for k in range(3)] == [10, 100, 1000]
    assert [sharpness_for_epoch(k, 3) for k in range(3)] == [50, 2500, 125000]
    assert sharpness_for_epoch(2, 10) == 90
    assert sharpness_for_step(0, 100) == 10 and sharpness_for_step(99, 100) == pytest.approx(1e5)
    assert sharpness_for_step(25, 101) == pytest.approx(100)  # a quarter of the way: 10 * 1e4^0.25


def test_parity_formula_known_value():
    # docs/method.md §7: a model that removes nothing is 0.9966x at n = 64 (CP overhead)
    ratio = parity_bert_flops(64, 2) / parity_adapler_flops([64] * 12, 2)
    assert ratio == pytest.approx(0.9966, abs=1e-4)
    # hand arithmetic of BERT(64, 2) = 37872*64^2 + 170216500*64 + 1183490 - 1537 + 2*1537
    assert parity_bert_flops(64, 2) == 37872 * 4096 + 170216500 * 64 + 1183490 + 1537


def test_parity_lengths_quirks():
    cp = torch.tensor([[0.4, 0.3, 0.2, 0.1, 0.0],   # layer 0: 4 alive (p > 1e-6)
                       [0.5, 0.5, 0.0, 0.0, 0.0],   # layer 1: 2 alive
                       [0.7, 0.3, 0.0, 0.0, 0.0]])  # last: only p > eta_last = 0.5 counts -> 1
    n_bert, lens = parity_lengths(cp, eta_last=0.5)
    assert n_bert == 4 and lens == [2, 2, 1]


def test_corrected_counts():
    cfg = tiny_config(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=12)
    base = corrected_bert_flops(64, cfg)
    same = corrected_adapler_flops(64, [64] * 6, cfg)
    assert 0.98 < base / same < 1.0  # CPs cost a little
    half = corrected_adapler_flops(64, [64, 32, 32, 16, 16, 8], cfg)
    assert base / half > 2.0
    # a 6-layer MiniLM at n=64 is ~1.4 GFLOPs (2 * 22M params-ish * 64 tokens)
    assert 1.2e9 < base < 1.6e9
    fl = flops_per_example([64, 32], [[64] * 6, [16] * 6], cfg)
    assert speedup(fl["corrected_base"], fl["corrected_adapler"]) == pytest.approx(
        sum(fl["corrected_base"]) / sum(fl["corrected_adapler"]))


def test_saliency_masks_padding_and_is_batch_independent(tiny_model):
    ids = torch.randint(1000, 5000, (3, 10))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    sal = gradient_x_input(tiny_model, ids, mask, targets=torch.tensor([0, 1, 0]))
    assert sal.shape == (3, 10) and (sal >= 0).all()
    assert (sal[1, 6:] == 0).all() and (sal[1, :6] > 0).all()
    one = gradient_x_input(tiny_model, ids[1:2, :6], mask[1:2, :6], targets=torch.tensor([1]))
    assert torch.allclose(one[0], sal[1, :6], rtol=1e-4, atol=1e-6)
    # target = predicted by default, differs from the other class
    pred = tiny_model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
    assert torch.allclose(gradient_x_input(tiny_model, ids, mask), gradient_x_input(tiny_model, ids, mask, targets=pred))
    assert not tiny_model.training and all(p.grad is None for p in tiny_model.parameters())


def test_attention_scores_sum_and_mask(tiny_model):
    ids = torch.randint(1000, 5000, (2, 8))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with torch.no_grad():
        out = tiny_model(input_ids=ids, attention_mask=mask, mode="masked", threshold_scale=0,
                         output_attentions=True)
    cls = cls_attention(out.attentions, mask)
    roll = attention_rollout(out.attentions, mask)
    assert torch.allclose(cls.sum(-1), torch.ones(2), atol=1e-4)  # padding gets ~0 attention
    assert (cls[1, 5:] == 0).all() and (roll[1, 5:] == 0).all()
    assert torch.allclose(roll.sum(-1), torch.ones(2), atol=1e-4)
    assert not math.isnan(roll.sum().item())


def test_macro_f1_matches_sklearn():
    """One macro-F1 (adapler.metrics) for the training/evaluation reports and the ERASER scores."""
    # optional heavy dependency: the reference implementation compared with
    from sklearn.metrics import f1_score

    gold = [0, 1, 2, 2, 1, 0, 2]
    for pred in ([0, 1, 2, 2, 1, 0, 2], [0, 0, 0, 0, 0, 0, 0], [1, 2, 0, 2, 1, 1, 3]):
        assert abs(macro_f1(gold, pred) - f1_score(gold, pred, average="macro", zero_division=0)) < 1e-12
    assert macro_f1(["a", "b"], ["a", "a"], labels=["a", "b", "c"]) == (2 / 3) / 3
